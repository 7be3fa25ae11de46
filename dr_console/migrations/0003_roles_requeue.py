"""Operators requeue the application's failed RQ jobs: run the roles migration again now that the permission
exists (dr_console/roles.py)."""

from __future__ import annotations

from django.db import migrations

from dr_console.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [
        ("dr_console", "0002_roles_pin_retention"),
        ("queues", "0001_initial"),
    ]
    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
