"""/readyz and /metrics, outside the `overview` namespace: monitoring and load balancers know them by path, and
the URL names stay the plain "readyz" and "metrics" next to dr_console's "healthz"."""

from __future__ import annotations

from django.urls import path

from overview import views

urlpatterns = [
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
]
