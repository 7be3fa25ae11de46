"""The audit log page and its CSV export: permission, filters, keyset pages, streamed CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django.asserts import assertTemplateNotUsed, assertTemplateUsed

from audit.models import AuditEvent
from audit.selectors import AuditFilters, audit_event_page
from tests.factories import UserFactory, user_in_groups

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture
def viewer(db: None) -> User:
    return user_in_groups("vera", "viewer")


def event(action: str, actor: str, at: datetime, **fields: Any) -> AuditEvent:
    fields.setdefault("object_type", "restores.restorerun")
    fields.setdefault("object_id", "7")
    fields.setdefault("object_repr", "restore #7")
    return AuditEvent.objects.create(action=action, actor_label=actor, created_at=at, **fields)


@pytest.fixture
def events() -> list[AuditEvent]:
    day = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    return [
        event("restore.requested", "olga", day, details={"reason": "incident 42", "protected": True}),
        event("restore.approved", "abel", day + timedelta(hours=1), client_ip="10.0.0.5", details={"comment": ""}),
        event("restore.launched", "console", day + timedelta(days=1), details={"worker": "w1"}),
        event(
            "config.loaded",
            "=HYPERLINK(evil)",
            day + timedelta(days=2),
            object_type="",
            object_id="",
            object_repr="",
            details={"changes": ["environment prod: created"]},
        ),
    ]


def test_audit_pages_need_a_login_and_the_permission(client: Client, events: list[AuditEvent]) -> None:
    for name in ("audit:event_list", "audit:event_export"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(UserFactory(username="nobody"))
    assert client.get(reverse("audit:event_list")).status_code == 403
    assert client.get(reverse("audit:event_export")).status_code == 403


def test_viewer_reads_the_log_newest_first(client: Client, viewer: User, events: list[AuditEvent]) -> None:
    client.force_login(viewer)
    response = client.get(reverse("audit:event_list"))
    assert response.status_code == 200
    assertTemplateUsed(response, "audit/event_list.html")
    text = response.content.decode()
    assert (
        text.index("Configuration loaded</td>")
        < text.index("Restore launched</td>")
        < text.index("Restore requested</td>")
    )
    assert "reason=incident 42" in text  # details, compactly
    assert reverse("restores:run_detail", args=[7]) in text  # the object links to its page
    assert "10.0.0.5" in text
    assert 'title="2026-03-10 12:00:00 UTC"' in text  # exact time on hover


def test_filters_narrow_the_list_and_htmx_gets_the_rows(client: Client, viewer: User, events: list[AuditEvent]) -> None:
    client.force_login(viewer)
    url = reverse("audit:event_list")
    response = client.get(url, {"action": "restore.approved"}, headers=HTMX)
    assertTemplateUsed(response, "audit/partials/event_rows.html")
    assertTemplateNotUsed(response, "base.html")
    text = response.content.decode()
    assert "Restore approved</td>" in text and "Restore requested</td>" not in text

    text = client.get(url, {"actor": "OLG"}).content.decode()
    assert "Restore requested</td>" in text and "Restore approved</td>" not in text
    text = client.get(url, {"object_type": "restores.restorerun"}).content.decode()
    assert "Configuration loaded</td>" not in text and "Restore launched</td>" in text
    text = client.get(url, {"since": "2026-03-11", "until": "2026-03-11"}).content.decode()
    assert (
        "Restore launched</td>" in text
        and "Restore requested</td>" not in text
        and "Configuration loaded</td>" not in text
    )
    text = client.get(url, {"since": "2026-03-12", "until": "2026-03-01"}).content.decode()
    assert "The end date is before the start date." in text
    text = client.get(url, {"action": "backup.finished"}).content.decode()
    assert "No event matches this filter." in text and "Clear the filter" in text


def test_empty_log_says_what_appears_there(client: Client, viewer: User) -> None:
    client.force_login(viewer)
    assert "Nothing has been recorded yet." in client.get(reverse("audit:event_list")).content.decode()


def test_csv_export_streams_the_filtered_rows(client: Client, viewer: User, events: list[AuditEvent]) -> None:
    client.force_login(viewer)
    response = client.get(reverse("audit:event_export"), {"object_type": "restores.restorerun", "before": "x"})
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-log-')
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "id",
        "time",
        "actor",
        "action",
        "object_type",
        "object_id",
        "object",
        "client_ip",
        "details",
        "via",
        "os_user",
        "os_host",
    ]
    assert [row[3] for row in rows[1:]] == ["restore.launched", "restore.approved", "restore.requested"]
    assert rows[1][1] == "2026-03-11T12:00:00+00:00"  # ISO 8601
    assert rows[2][7] == "10.0.0.5"
    assert rows[3][8] == '{"protected": true, "reason": "incident 42"}'


def test_csv_export_cannot_smuggle_a_spreadsheet_formula(
    client: Client, viewer: User, events: list[AuditEvent]
) -> None:
    client.force_login(viewer)
    response = client.get(reverse("audit:event_export"), {"action": "config.loaded"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 2 and rows[1][2] == "'=HYPERLINK(evil)"


def test_keyset_pages_of_the_log(events: list[AuditEvent]) -> None:
    first = audit_event_page(AuditFilters(), per_page=3)
    assert [e.pk for e in first.items] == [e.pk for e in reversed(events)][:3] and first.is_first
    second = audit_event_page(AuditFilters(), per_page=3, before=first.older)
    assert [e.pk for e in second.items] == [events[0].pk] and not second.older
    assert [e.pk for e in audit_event_page(AuditFilters(), per_page=3, after=second.newer).items] == [
        e.pk for e in first.items
    ]


def test_event_list_makes_the_same_queries_for_3_or_50_events(
    client: Client, viewer: User, django_assert_max_num_queries: Any
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def add(count: int, offset: int) -> None:
        for i in range(count):
            event("restore.requested", "olga", start + timedelta(minutes=offset + i), details={"reason": f"r{i}"})

    client.force_login(viewer)
    add(3, 0)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("audit:event_list")).status_code == 200
    add(47, 3)
    with django_assert_max_num_queries(len(queries)):
        response = client.get(reverse("audit:event_list"))
    assert response.content.decode().count("Restore requested</td>") == 50
