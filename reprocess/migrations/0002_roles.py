"""Operators may build and send reprocess batches; everyone with a role sees them (dr_console/roles.py)."""

from __future__ import annotations

from django.db import migrations

from dr_console.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [("reprocess", "0001_initial"), ("dr_console", "0001_roles")]
    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
