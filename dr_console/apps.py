from __future__ import annotations

from django.apps import AppConfig


class DrConsoleConfig(AppConfig):
    name = "dr_console"
    verbose_name = "DR Console"
