from __future__ import annotations

from django.apps import AppConfig


class DrillsConfig(AppConfig):
    name = "drills"
    verbose_name = "Restore drills and objectives"
