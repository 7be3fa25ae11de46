"""What backups asks the apps above it, without importing them (docs/architecture.md): the apps that read stored
backups (restores) connect here in their AppConfig.ready()."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by retention before it lists or expires a datastore's backups: receivers get `datastore` and `artifact_ids`
# (None: all of that datastore's backups) and return {artifact id: what uses it now, e.g. "restore #5"}. Retention
# keeps every backup named in an answer. A receiver that raises stops the retention run: better no expiry than
# expiring a backup a job is reading.
artifacts_in_use = Signal()
