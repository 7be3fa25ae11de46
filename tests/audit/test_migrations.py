"""The hash chain's migrations: events already in the log are chained in id order, on PostgreSQL and on SQLite
(`make run`), and SQLite keeps its append-only triggers through the table rebuilds Django does there."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.selectors import audit_chain_verify
from tests.support.cli import ROOT

BEFORE_CHAIN = [("audit", "0014_refuse_truncate")]
OLD_EVENT = (
    "INSERT INTO audit_auditevent (created_at, actor_label, action, object_type, object_id, object_repr, client_ip, "
    "via, os_user, os_host, details, labels) VALUES "
    "({now}, 'olga', 'backup.requested', 'inventory.datastore', '7', 'prod-db', '2001:db8::1', 'web', '', '', "
    "'{details}', '{{}}')"
)


@pytest.mark.django_db(transaction=True)
def test_events_already_in_the_log_are_chained_in_id_order_on_postgresql() -> None:
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("audit")
    executor.migrate(BEFORE_CHAIN)
    try:
        with connection.cursor() as cursor:
            for n in range(3):
                cursor.execute(OLD_EVENT.format(now="now()", details=json.dumps({"n": n, "size": 2.0})))
    finally:
        MigrationExecutor(connection).migrate(latest)

    report = audit_chain_verify()
    assert (report.broken, report.checked) == (None, 3)


def _manage(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": f"sqlite:///{database}"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_sqlite_chains_the_old_events_and_keeps_its_append_only_triggers(tmp_path: Path) -> None:
    database = tmp_path / "console.sqlite3"
    assert _manage(database, "migrate", "--noinput", "audit", BEFORE_CHAIN[0][1]).returncode == 0
    with sqlite3.connect(database) as conn:
        for n in range(3):
            conn.execute(OLD_EVENT.format(now="'2026-01-02 03:04:05.123456'", details=json.dumps({"n": n})))
    migrated = _manage(database, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr

    verified = _manage(database, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["checked"] == 3
    with sqlite3.connect(database) as conn:
        triggers = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert triggers == {"audit_auditevent_no_update", "audit_auditevent_no_delete"}
        for statement in ("UPDATE audit_auditevent SET actor_label = 'mallory'", "DELETE FROM audit_auditevent"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
