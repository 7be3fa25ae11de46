"""Operators may now pin backups and change retention policies: give the groups the new permissions."""

from __future__ import annotations

from importlib import import_module

from django.db import migrations

# The same idempotent step as 0001: create the permissions now, then the groups' permissions from roles.py.
create_roles = import_module("dr_console.migrations.0001_roles").create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("dr_console", "0001_roles"),
        ("backups", "0005_schedules_retention"),
    ]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
