from __future__ import annotations

from django.urls import path

from backups import views

app_name = "backups"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("datastores/<int:pk>/row/", views.datastore_row, name="datastore_row"),
    path("datastores/<int:pk>/backup/", views.datastore_backup, name="datastore_backup"),
    path("datastores/<str:name>/", views.datastore_detail, name="datastore_detail"),
    path("datastores/<str:name>/retention/preview/", views.datastore_retention_preview, name="retention_preview"),
    path("datastores/<str:name>/retention/", views.datastore_retention_update, name="retention_update"),
    path("backups/", views.artifact_list, name="artifact_list"),
    path("backups/<int:pk>/", views.artifact_detail, name="artifact_detail"),
    path("backups/<int:pk>/row/", views.artifact_row, name="artifact_row"),
    path("backups/<int:pk>/status/", views.artifact_status, name="artifact_status"),
    path("backups/<int:pk>/verify/", views.artifact_verify, name="artifact_verify"),
    path("backups/<int:pk>/pin/", views.artifact_pin, name="artifact_pin"),
    path("backups/<int:pk>/unpin/", views.artifact_unpin, name="artifact_unpin"),
]
