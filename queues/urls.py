from __future__ import annotations

from django.urls import path

from queues import views

app_name = "queues"
urlpatterns = [
    path("", views.environment_list, name="environment_list"),
    path("<str:environment>/", views.environment_queues, name="environment_queues"),
    path("<str:environment>/overview/", views.queue_overview, name="overview"),
    path("<str:environment>/<str:queue>/failed/requeue/", views.failed_requeue_all, name="failed_requeue_all"),
    path("<str:environment>/<str:queue>/failed/<str:job_id>/requeue/", views.failed_requeue, name="failed_requeue"),
    path("<str:environment>/<str:queue>/<str:job_list>/", views.job_list, name="job_list"),
]
