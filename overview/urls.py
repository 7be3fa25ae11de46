from __future__ import annotations

from django.urls import path

from overview import views

app_name = "overview"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("datastores/<int:pk>/row/", views.datastore_row, name="datastore_row"),
    path("datastores/<int:pk>/chart/", views.datastore_chart, name="datastore_chart"),
    path("datastores/<int:pk>/health/", views.datastore_health_check, name="datastore_health_check"),
    path("datastores/<int:pk>/backup/", views.datastore_backup, name="datastore_backup"),
    path("datastores/<str:name>/", views.datastore_detail, name="datastore_detail"),
    path("datastores/<str:name>/retention/preview/", views.datastore_retention_preview, name="retention_preview"),
    path("datastores/<str:name>/retention/", views.datastore_retention_update, name="retention_update"),
]
