from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = _("Inventory")

    def ready(self) -> None:
        from dr_console.secrets import secret_names_source
        from inventory.models import configured_variable_names

        secret_names_source(configured_variable_names)
