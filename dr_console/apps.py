from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DrConsoleConfig(AppConfig):
    name = "dr_console"
    verbose_name = _("DR Console")
