from __future__ import annotations

from django.urls import path

from drills import views

app_name = "drills"
urlpatterns = [
    path("datastores/<str:name>/drill/", views.drill_start, name="drill_start"),
    path("drills/<int:pk>/cancel/", views.drill_cancel, name="drill_cancel"),
]
