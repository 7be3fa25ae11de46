from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RestoresConfig(AppConfig):
    name = "restores"
    verbose_name = _("Restores")
