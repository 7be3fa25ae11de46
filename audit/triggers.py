"""The database's own guards on the audit table, as the migrations install them (0002, 0013, 0015).

SQLite drops a table's triggers whenever Django rebuilds the table, which it does for most field and constraint
changes: any migration that alters audit_auditevent on SQLite must end with `sqlite_append_only_install`
(tests/audit/test_migrations.py checks a fresh SQLite database has them)."""

from __future__ import annotations

from typing import Any

# A statement-level trigger: the row triggers of 0002 do not fire for TRUNCATE. It reuses 0002's function, which
# refuses whatever fires it. (Django's test flush truncates every table: tests/conftest.py lets it through.)
POSTGRES_REFUSE_TRUNCATE = """
CREATE TRIGGER audit_auditevent_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_auditevent_append_only();
"""
POSTGRES_ALLOW_TRUNCATE = "DROP TRIGGER IF EXISTS audit_auditevent_no_truncate ON audit_auditevent;"

SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER IF NOT EXISTS audit_auditevent_no_update BEFORE UPDATE ON audit_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
    "CREATE TRIGGER IF NOT EXISTS audit_auditevent_no_delete BEFORE DELETE ON audit_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
]


def sqlite_append_only_install(apps: Any, schema_editor: Any) -> None:
    """(Re)install the SQLite triggers a table rebuild dropped; nothing on other databases."""
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_APPEND_ONLY:
            schema_editor.execute(statement)
