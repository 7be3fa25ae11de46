"""Someone who owns the console's database erases or rewrites the audit log directly in PostgreSQL, as a superuser,
past the triggers; `manage.py audit verify` names the first broken link each time. TRUNCATE is refused outright."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from audit import chain
from audit.models import AuditEvent
from audit.services import audit_record
from tests.support.cli import manage

pytestmark = pytest.mark.django_db(transaction=True)  # the raw connection below sees only what was committed


@pytest.fixture
def superuser() -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own to the test database as a superuser, with the triggers off (what an attacker who
    owns the server can do)."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as conn:
        conn.execute("SET session_replication_role = replica")
        yield conn


@pytest.fixture
def log() -> list[AuditEvent]:
    """Five events as the console writes them, and an id left unused between the second and the third (a
    transaction that rolled back), where a forged event can be slipped in."""
    events = [
        audit_record(action=AuditEvent.Action.BACKUP_REQUESTED, actor_label="olga", details={"n": n}) for n in (1, 2)
    ]
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(action=AuditEvent.Action.BACKUP_REQUESTED, actor_label="olga", details={"n": "rolled back"})
        raise RuntimeError("the action failed")
    events += [
        audit_record(action=AuditEvent.Action.RESTORE_REQUESTED, actor_label="abel", details={"n": n})
        for n in (3, 4, 5)
    ]
    assert events[2].pk == events[1].pk + 2
    return events


def verify() -> tuple[dict[str, Any], str]:
    """`audit verify --json`: its one JSON document, and the error line (empty when the chain holds)."""
    out = StringIO()
    try:
        call_command("audit", "verify", "--json", stdout=out)
    except CommandError as exc:
        return json.loads(out.getvalue()), str(exc)
    return json.loads(out.getvalue()), ""


def test_an_untouched_log_verifies(log: list[AuditEvent]) -> None:
    document, error = verify()

    assert error == ""
    assert document == {"ok": True, "checked": 5, "head": {"id": log[-1].pk, "hash": log[-1].hash}, "broken": None}


def test_an_edited_event_is_named(log: list[AuditEvent], superuser: psycopg.Connection[Any]) -> None:
    superuser.execute("UPDATE audit_auditevent SET actor_label = 'mallory' WHERE id = %s", (log[2].pk,))

    document, error = verify()

    assert document["ok"] is False
    assert document["broken"]["kind"] == "edited"
    assert document["broken"]["event_id"] == log[2].pk
    assert error == (
        f"audit chain broken after 2 good event(s): event #{log[2].pk} was edited: its hash does not match its content"
    )


def test_an_edit_in_the_details_is_named_too(log: list[AuditEvent], superuser: psycopg.Connection[Any]) -> None:
    superuser.execute("UPDATE audit_auditevent SET details = '{\"n\": 40}' WHERE id = %s", (log[3].pk,))

    document, _error = verify()

    assert (document["broken"]["kind"], document["broken"]["event_id"]) == ("edited", log[3].pk)


def test_a_deleted_event_is_named_by_the_event_after_the_gap(
    log: list[AuditEvent], superuser: psycopg.Connection[Any]
) -> None:
    superuser.execute("DELETE FROM audit_auditevent WHERE id = %s", (log[2].pk,))

    document, error = verify()

    assert document["broken"] == {
        "kind": "deleted",
        "event_id": log[3].pk,
        "previous_id": log[1].pk,
        "next_id": None,
        "message": f"events were deleted between #{log[1].pk} and #{log[3].pk}: #{log[3].pk} links to an event "
        "that no longer exists",
    }
    assert f"events were deleted between #{log[1].pk} and #{log[3].pk}" in error


def test_deleting_the_first_events_is_named(log: list[AuditEvent], superuser: psycopg.Connection[Any]) -> None:
    superuser.execute("DELETE FROM audit_auditevent WHERE id <= %s", (log[1].pk,))

    document, _error = verify()

    assert document["broken"]["kind"] == "deleted"
    assert (document["broken"]["event_id"], document["broken"]["previous_id"]) == (log[2].pk, None)
    assert document["broken"]["message"].startswith(f"events were deleted between the chain's start and #{log[2].pk}")


def test_an_edited_event_given_a_new_hash_breaks_the_next_link(
    log: list[AuditEvent], superuser: psycopg.Connection[Any]
) -> None:
    """The attacker knows the algorithm and re-hashes the event they edited: the event after it still links to the
    old hash."""
    edited = AuditEvent.objects.get(pk=log[2].pk)
    edited.actor_label = "mallory"
    superuser.execute(
        "UPDATE audit_auditevent SET actor_label = 'mallory', hash = %s WHERE id = %s",
        (chain.event_hash(edited, edited.prev_hash), log[2].pk),
    )

    document, _error = verify()

    assert (document["broken"]["kind"], document["broken"]["event_id"]) == ("deleted", log[3].pk)
    assert document["broken"]["previous_id"] == log[2].pk


def test_an_inserted_event_is_named(log: list[AuditEvent], superuser: psycopg.Connection[Any]) -> None:
    """A forged event in the unused id after the second, linking to the second and hashed correctly. The database
    refuses a second successor of an event: the attacker drops that constraint first."""
    forged = AuditEvent(
        pk=log[1].pk + 1, action=AuditEvent.Action.RESTORE_APPROVED, actor_label="abel", details={"n": "forged"}
    )
    forged.created_at = log[1].created_at
    superuser.execute("ALTER TABLE audit_auditevent DROP CONSTRAINT auditevent_one_successor")
    try:
        superuser.execute(
            "INSERT INTO audit_auditevent (id, created_at, actor_label, action, object_type, object_id, object_repr, "
            "via, os_user, os_host, details, labels, prev_hash, hash) "
            "VALUES (%s, %s, 'abel', 'restore.approved', '', '', '', 'system', '', '', '{\"n\": \"forged\"}', '{}', "
            "%s, %s)",
            (forged.pk, forged.created_at, log[1].hash, chain.event_hash(forged, log[1].hash)),
        )

        document, error = verify()
    finally:
        superuser.execute("DELETE FROM audit_auditevent WHERE id = %s", (forged.pk,))
        superuser.execute("ALTER TABLE audit_auditevent ADD CONSTRAINT auditevent_one_successor UNIQUE (prev_hash)")

    assert document["broken"] == {
        "kind": "inserted",
        "event_id": forged.pk,
        "previous_id": log[1].pk,
        "next_id": log[2].pk,
        "message": f"event #{forged.pk} was inserted: it links to #{log[1].pk}, but the next event, #{log[2].pk}, "
        f"links to #{log[1].pk} too",
    }
    assert error.endswith(document["broken"]["message"])


def test_truncate_is_refused_even_for_a_superuser_with_the_triggers_on(log: list[AuditEvent]) -> None:
    settings = connection.settings_dict
    with psycopg.connect(
        host="127.0.0.1", port=settings["PORT"] or 5432, user=settings["USER"], dbname=settings["NAME"], autocommit=True
    ) as conn:
        for statement in ("TRUNCATE audit_auditevent", "TRUNCATE auth_user CASCADE"):
            with pytest.raises(psycopg.errors.RaiseException, match="audit events are append-only"):
                conn.execute(statement)
    assert AuditEvent.objects.count() == 5


def test_verify_on_the_command_line_is_one_line_and_exit_status_1(
    log: list[AuditEvent], superuser: psycopg.Connection[Any]
) -> None:
    intact = manage("audit", "verify")
    assert (intact.returncode, intact.stderr) == (0, "")
    assert intact.stdout == f"audit chain intact: 5 events, newest #{log[-1].pk} (hash {log[-1].hash})\n"

    superuser.execute("DELETE FROM audit_auditevent WHERE id = %s", (log[3].pk,))
    broken = manage("audit", "verify")
    as_json = manage("audit", "verify", "--json")

    assert broken.returncode == as_json.returncode == 1
    assert broken.stdout == ""
    assert broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr
    assert broken.stderr.startswith(
        "CommandError: audit chain broken after 3 good event(s): "
        f"events were deleted between #{log[2].pk} and #{log[4].pk}"
    )
    assert json.loads(as_json.stdout)["broken"]["event_id"] == log[4].pk
    assert as_json.stderr == broken.stderr
