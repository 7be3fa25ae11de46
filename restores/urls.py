from __future__ import annotations

from django.urls import path

from restores import views

app_name = "restores"
urlpatterns = [
    path("", views.run_list, name="run_list"),
    path("new/", views.run_create, name="run_create"),
    path("approvals/", views.approval_list, name="approval_list"),
    path("<int:pk>/", views.run_detail, name="run_detail"),
    path("<int:pk>/status/", views.run_status, name="run_status"),
    path("<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("<int:pk>/approve/", views.run_approve, name="run_approve"),
    path("<int:pk>/reject/", views.run_reject, name="run_reject"),
]
