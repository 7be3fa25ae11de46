"""Viewers read drills and objective breaches, operators start drills: give the groups the new permissions."""

from __future__ import annotations

from django.db import migrations

from dr_console.roles import roles_migrate



class Migration(migrations.Migration):
    dependencies = [
        ("dr_console", "0001_roles"),
        ("drills", "0001_initial"),
    ]
    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
