from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = _("Backups")

    def ready(self) -> None:
        from backups import health, scheduling
        from backups.selectors import datastore_active_backups
        from inventory.signals import datastore_active_jobs, datastore_configured, datastore_removed

        # Keep beat's backup schedule in step with the inventory (which imports nothing above it).
        datastore_configured.connect(scheduling.on_datastore_configured, dispatch_uid="backups-schedule")
        datastore_removed.connect(scheduling.on_datastore_removed, dispatch_uid="backups-schedule")
        # A datastore just configured is checked at once: an unset URL variable shows within seconds.
        datastore_configured.connect(health.on_datastore_configured, dispatch_uid="backups-health")
        # A datastore's URL variable or environment does not move under its running backups.
        datastore_active_jobs.connect(datastore_active_backups, dispatch_uid="backups-active")
