"""Environments and datastores moved to the inventory app, and verifications became job rows: run the roles
migration again (dr_console/roles.py) so every role holds the permissions under their new names."""

from __future__ import annotations

from django.db import migrations

from dr_console.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [
        ("dr_console", "0003_roles_requeue"),
        ("inventory", "0002_targetlock_holder_by_model_and_id"),
        ("backups", "0009_backupverification_backupverificationevent_and_more"),
    ]
    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
