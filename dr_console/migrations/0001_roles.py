"""Create the viewer, operator and approver groups with their permissions (dr_console/roles.py)."""

from __future__ import annotations

from django.db import migrations

from dr_console.roles import roles_migrate


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("backups", "0001_initial"),
        ("restores", "0001_initial"),
        ("audit", "0002_append_only_triggers"),
    ]
    operations = [migrations.RunPython(roles_migrate, migrations.RunPython.noop)]
