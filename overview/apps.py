from __future__ import annotations

from django.apps import AppConfig


class OverviewConfig(AppConfig):
    """The top layer: pages and checks that compose the job apps (docs/architecture.md). No models."""

    name = "overview"
