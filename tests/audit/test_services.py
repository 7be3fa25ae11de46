"""audit_record, the one way into the append-only audit log."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from audit.services import audit_record
from tests.factories import EnvironmentFactory

pytestmark = pytest.mark.django_db


def test_details_quoting_text_from_outside_are_recorded_escaped_however_deep() -> None:
    environment = EnvironmentFactory(name="prod")
    audit_record(
        action=AuditEvent.Action.QUEUE_FAILED_REQUEUED,
        actor_label="cli:ops\x1b[31m",
        obj=environment,
        details={
            "queue": "docs\x00\x1b[31m",
            "error": "2 keys of the backup already exist: s:bin\x00, lock\x07",
            "checks": [{"name": "GET /readyz", "ok": False, "detail": "503: \x00"}],
            "requeued": 3,
        },
    )

    event = AuditEvent.objects.get()  # PostgreSQL's jsonb took it: it refuses \u0000
    assert event.actor_label == "cli:ops\\x1b[31m"
    assert event.details == {
        "queue": "docs\\x00\\x1b[31m",
        "error": "2 keys of the backup already exist: s:bin\\x00, lock\\x07",
        "checks": [{"name": "GET /readyz", "ok": False, "detail": "503: \\x00"}],
        "requeued": 3,
    }
