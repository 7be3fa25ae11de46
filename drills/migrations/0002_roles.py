"""Viewers read drills and objective breaches, operators start drills: give the groups the new permissions."""

from __future__ import annotations

from importlib import import_module

from django.db import migrations

# The same idempotent step as dr_console's 0001: create the permissions now, then the groups' from roles.py.
create_roles = import_module("dr_console.migrations.0001_roles").create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("dr_console", "0001_roles"),
        ("drills", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
