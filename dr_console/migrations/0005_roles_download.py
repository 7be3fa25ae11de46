"""Operators download backups: run the roles migration again now that the permission exists
(dr_console/roles.py)."""

from __future__ import annotations

from django.db import migrations

from dr_console.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [
        ("dr_console", "0004_roles_inventory"),
        ("backups", "0014_downloads"),
    ]
    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
