from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RestoresConfig(AppConfig):
    name = "restores"
    verbose_name = _("Restores")

    def ready(self) -> None:
        from backups.signals import artifacts_in_use
        from inventory.signals import datastore_active_jobs
        from restores.selectors import datastore_active_restores, restore_run_artifacts_in_use

        # Retention (backups, which imports nothing above it) keeps the backups a restore is reading.
        artifacts_in_use.connect(restore_run_artifacts_in_use, dispatch_uid="restores-artifacts-in-use")
        # A datastore's URL variable or environment does not move under a requested, approved or running restore.
        datastore_active_jobs.connect(datastore_active_restores, dispatch_uid="restores-active")
