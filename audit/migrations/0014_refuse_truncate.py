"""PostgreSQL refuses TRUNCATE of the audit table too (0002's row triggers do not fire for it). Nothing to do on
SQLite: it has no TRUNCATE, and a DELETE without WHERE fires 0002's delete trigger (SQLite skips its truncate
optimization on a table with triggers)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

from audit.triggers import POSTGRES_ALLOW_TRUNCATE, POSTGRES_REFUSE_TRUNCATE


def install(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_REFUSE_TRUNCATE)


def uninstall(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_ALLOW_TRUNCATE)


class Migration(migrations.Migration):
    dependencies = [("audit", "0013_query_refused_action")]
    operations = [migrations.RunPython(install, uninstall)]
