"""The audit log's hash chain as audit_record writes it: each event links to the one before, what is hashed is what
the database gives back, appends cost one query, and writers at once keep one chain."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections, transaction

from audit import chain
from audit.models import AppendOnlyError, AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record
from tests.factories import AuditEventFactory, EnvironmentFactory


def _record(**details: Any) -> AuditEvent:
    return audit_record(action=AuditEvent.Action.BACKUP_REQUESTED, actor_label="olga", details=details)


@pytest.mark.django_db
def test_each_event_links_to_the_one_before_and_the_first_to_genesis() -> None:
    first, second, third = _record(n=1), _record(n=2), AuditEventFactory()

    assert [first.prev_hash, second.prev_hash, third.prev_hash] == [chain.GENESIS, first.hash, second.hash]
    assert len({first.hash, second.hash, third.hash}) == 3
    report = audit_chain_verify()
    assert (report.broken, report.checked, report.head_id, report.head_hash) == (None, 3, third.pk, third.hash)


@pytest.mark.django_db
def test_what_is_hashed_is_what_the_database_gives_back() -> None:
    """Values PostgreSQL's jsonb and inet print differently from how Python wrote them hash the same read back."""
    details = {
        "floats": [1.5, 2.0, 1e16, 1e-07, 0.1 + 0.2, -0.0],
        "big": 10**20,
        "tuple": ("a", "b"),
        "text": 'ñandú ✓ \u2028 "quoted" \\ tab\t',
        "nested": {"z": 1, "a": {"b": [None, True, False]}},
        "keys": {3: "int key", "3.5": "str key"},
    }
    written = [
        audit_record(action=AuditEvent.Action.AUTH_LOGGED_IN, actor_label="olga", details=details, client_ip=ip)
        for ip in ("2001:db8:0:0:1:0:0:1", "::ffff:192.0.2.1", "192.0.2.7", None)
    ]

    for event in written:
        stored = AuditEvent.objects.get(pk=event.pk)
        assert chain.event_hash(stored, stored.prev_hash) == stored.hash == event.hash
    assert audit_chain_verify().broken is None


@pytest.mark.django_db
def test_recording_inside_a_transaction_costs_one_query_more_than_the_insert(django_assert_num_queries: Any) -> None:
    environment = EnvironmentFactory()
    with transaction.atomic(), django_assert_num_queries(2) as captured:
        audit_record(action=AuditEvent.Action.CONFIG_CHANGED, actor_label="olga", obj=environment)
    assert "audit_auditevent_chain_head" in captured.captured_queries[0]["sql"]
    assert captured.captured_queries[1]["sql"].startswith('INSERT INTO "audit_auditevent"')


@pytest.mark.django_db
def test_an_event_rolled_back_leaves_the_chain_whole() -> None:
    before = _record(n=1)
    with pytest.raises(RuntimeError), transaction.atomic():
        _record(n=2)
        raise RuntimeError("the action failed")
    after = _record(n=3)

    assert after.prev_hash == before.hash
    assert audit_chain_verify().broken is None


@pytest.mark.django_db
def test_events_are_chained_one_at_a_time_and_never_forked() -> None:
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_create([AuditEvent(action=AuditEvent.Action.CONFIG_LOADED, actor_label="x")])
    head = _record(n=1)
    with pytest.raises(IntegrityError), connection.cursor() as cursor:  # the database refuses a second successor
        cursor.execute(
            "INSERT INTO audit_auditevent (created_at, actor_label, action, object_type, object_id, object_repr, "
            "via, os_user, os_host, details, labels, prev_hash, hash) "
            "VALUES (now(), 'x', 'config.loaded', '', '', '', 'system', '', '', '{}', '{}', %s, 'forged')",
            [head.prev_hash],
        )


@pytest.mark.django_db(transaction=True)
def test_writers_at_once_keep_one_unbroken_chain() -> None:
    """Eight threads, each with its own connection, record 25 events each; half of them inside a transaction that
    goes on after the event (the chain stays held meanwhile). Without the lock, two would link to the same head and
    the database would refuse one (a unique prev_hash)."""
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            start.wait()
            for n in range(per_thread):
                if n % 2:
                    with transaction.atomic():
                        _record(worker=worker, n=n)
                        AuditEvent.objects.filter(pk=0).exists()  # more work in the same transaction
                else:
                    _record(worker=worker, n=n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=write, args=(worker,)) for worker in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)

    assert not errors, errors
    assert AuditEvent.objects.count() == threads * per_thread
    report = audit_chain_verify()
    assert report.broken is None
    assert report.checked == threads * per_thread
    events = list(AuditEvent.objects.order_by("pk").values_list("prev_hash", "hash"))
    assert all(event[0] == before[1] for before, event in zip(events, events[1:], strict=False))
