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
    path("backups/<int:pk>/download/", views.artifact_download, name="artifact_download"),
    path("backups/<int:pk>/download-requests/", views.download_request_new, name="download_request_new"),
    path(
        "backups/download-requests/<int:pk>/approve/",
        views.download_request_approve_view,
        name="download_request_approve",
    ),
    path(
        "backups/download-requests/<int:pk>/reject/", views.download_request_reject_view, name="download_request_reject"
    ),
    path("backups/download-requests/<int:pk>/download/", views.download_request_fetch, name="download_request_fetch"),
]
