from __future__ import annotations

from django.urls import path

from reprocess import views

app_name = "reprocess"
urlpatterns = [
    path("", views.batch_list, name="batch_list"),
    path("new/", views.batch_create, name="batch_create"),
    path("<int:pk>/", views.batch_detail, name="batch_detail"),
    path("<int:pk>/progress/", views.batch_progress, name="batch_progress"),
    path("<int:pk>/send/", views.batch_send, name="batch_send"),
    path("<int:pk>/cancel/", views.batch_cancel, name="batch_cancel"),
    path("<int:pk>/discard/", views.batch_discard, name="batch_discard"),
]
