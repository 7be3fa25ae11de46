"""The two-role set-up on real PostgreSQL: a role given `manage.py audit grant-runtime-role` runs the console (it
records and reads audit events, and writes the other tables) but cannot change or erase the audit log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from psycopg import errors

from audit.grants import RuntimeRoleGrants
from audit.models import AuditEvent
from audit.services import audit_record
from tests.support.cli import ROOT
from tests.support.postgres import PG_ADMIN_URL, admin_connection, database_url

pytestmark = pytest.mark.django_db(transaction=True)  # the role's own connections see only what was committed


@pytest.fixture
def runtime_role() -> Iterator[str]:
    """A login role of its own (roles are the whole server's: a unique name), granted by the command."""
    role = f"drc_runtime_{uuid.uuid4().hex[:8]}"
    with admin_connection() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        call_command("audit", "grant-runtime-role", role, "--apply", stdout=StringIO())
        yield role
    finally:
        with psycopg.connect(_url(connection.settings_dict["USER"]), autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')  # its grants and default privileges in the test database
        with admin_connection() as conn:
            conn.execute(f'DROP ROLE "{role}"')


def _url(user: str) -> str:
    url = database_url(connection.settings_dict["NAME"], PG_ADMIN_URL)
    return url.replace("://postgres@", f"://{user}@", 1)


def _as_console(role: str, *args: str) -> subprocess.CompletedProcess[str]:
    """manage.py as the web console and the workers run: connected as the runtime role."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": _url(role)}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_runtime_role_records_and_reads_the_audit_log(runtime_role: str) -> None:
    audit_record(action=AuditEvent.Action.CONFIG_LOADED, actor_label="owner")
    code = (
        "from audit.services import audit_record; from inventory.models import Environment; "
        "Environment.objects.create(name='staging'); "
        "print(audit_record(action='config.changed', actor_label='runtime').pk)"
    )

    recorded = _as_console(runtime_role, "shell", "-c", code)
    verified = _as_console(runtime_role, "audit", "verify", "--json")

    assert recorded.returncode == 0, recorded.stderr
    event = AuditEvent.objects.get(pk=int(recorded.stdout.split()[-1]))
    assert event.actor_label == "runtime"
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["checked"] == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET actor_label = 'mallory'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
        "DROP TABLE audit_auditevent",
        "ALTER TABLE audit_auditevent DISABLE TRIGGER ALL",
        "ALTER TABLE audit_auditevent DROP CONSTRAINT auditevent_one_successor",
        "CREATE TRIGGER t BEFORE INSERT ON audit_auditevent EXECUTE FUNCTION audit_auditevent_append_only()",
        "SET session_replication_role = replica",
    ],
)
def test_the_runtime_role_cannot_change_or_erase_the_audit_log(runtime_role: str, statement: str) -> None:
    audit_record(action=AuditEvent.Action.CONFIG_LOADED, actor_label="owner")

    with psycopg.connect(_url(runtime_role), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement)
        # ... while the rest of the console's tables are its to write
        conn.execute("UPDATE backups_environment SET description = description")
        conn.execute("DELETE FROM django_session WHERE expire_date < now()")

    assert AuditEvent.objects.get().actor_label == "owner"


def test_grants_are_refused_for_a_role_no_grant_restricts() -> None:
    with pytest.raises(CommandError, match="is a superuser: no grant restricts it"):
        call_command("audit", "grant-runtime-role", connection.settings_dict["USER"], stdout=StringIO())
    with pytest.raises(CommandError, match="no role named 'drc_nobody'"):
        call_command("audit", "grant-runtime-role", "drc_nobody", stdout=StringIO())


def test_without_apply_the_statements_are_printed_for_a_dba(runtime_role: str) -> None:
    out = StringIO()
    call_command("audit", "grant-runtime-role", runtime_role, "--json", stdout=out)

    document: dict[str, Any] = json.loads(out.getvalue())
    assert (document["role"], document["applied"]) == (runtime_role, False)
    assert f'GRANT SELECT, INSERT ON TABLE "public"."audit_auditevent" TO "{runtime_role}";' in document["statements"]


def test_docs_show_the_statements_the_command_prints() -> None:
    grants = RuntimeRoleGrants(role="drconsole_app", owner="drconsole", database="drconsole", schema="public")
    docs = (Path(ROOT) / "docs" / "security.md").read_text()

    missing = [statement for statement in grants.statements if statement not in docs]
    assert not missing
