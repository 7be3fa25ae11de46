from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DrillsConfig(AppConfig):
    name = "drills"
    verbose_name = _("Restore drills and objectives")

    def ready(self) -> None:
        from drills import scheduling
        from drills.selectors import datastore_active_drills
        from inventory.signals import datastore_active_jobs, datastore_configured, datastore_removed

        # Keep beat's drill schedule in step with the inventory (which imports nothing above it).
        datastore_configured.connect(scheduling.on_datastore_configured, dispatch_uid="drills-schedule")
        datastore_removed.connect(scheduling.on_datastore_removed, dispatch_uid="drills-schedule")
        datastore_active_jobs.connect(datastore_active_drills, dispatch_uid="drills-active")
