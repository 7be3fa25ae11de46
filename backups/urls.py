from __future__ import annotations

from django.urls import path

from backups import views

app_name = "backups"
urlpatterns = [
    path("backups/", views.artifact_list, name="artifact_list"),
    path("backups/datastore-options/", views.datastore_options, name="datastore_options"),
    path("backups/<int:pk>/", views.artifact_detail, name="artifact_detail"),
    path("backups/<int:pk>/row/", views.artifact_row, name="artifact_row"),
    path("backups/<int:pk>/status/", views.artifact_status, name="artifact_status"),
    path("backups/<int:pk>/verify/", views.artifact_verify, name="artifact_verify"),
    path("backups/<int:pk>/cancel/", views.artifact_cancel, name="artifact_cancel"),
    path("backups/<int:pk>/copy/", views.artifact_copy, name="artifact_copy"),
    path("backups/<int:pk>/pin/", views.artifact_pin, name="artifact_pin"),
    path("backups/<int:pk>/unpin/", views.artifact_unpin, name="artifact_unpin"),
]
