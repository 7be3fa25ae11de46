"""Operators may now pin backups and change retention policies: give the groups the new permissions."""

from __future__ import annotations

from django.db import migrations

from dr_console.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [
        ("dr_console", "0001_roles"),
        ("backups", "0005_schedules_retention"),
    ]
    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
