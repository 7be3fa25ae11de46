"""What the inventory tells the apps above it, without importing them: the apps that keep something in step with a
datastore's configuration (beat's backup and drill schedules) connect here in their AppConfig.ready()."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside the saving transaction, after a datastore was created or changed by the admin or loadconfig:
# receivers get `datastore`.
datastore_configured = Signal()
# Sent inside the deleting transaction, after a datastore was deleted: receivers get `datastore_id`.
datastore_removed = Signal()
# Sent before a datastore's URL variable, kind or environment changes: receivers get `datastore_id` and return the
# labels of its active runs ("restore #5 (awaiting approval)"); any label refuses the change.
datastore_active_jobs = Signal()
