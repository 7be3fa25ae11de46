"""Who is acting on the web: sessions that end on the server, login throttling and lockout (django-axes), and
the password asked again before the actions that cannot be taken back. A stolen session cookie alone cannot
approve a restore."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from restores.models import RestoreApproval, RestoreRun
from tests.factories import RestoreRunFactory
from tests.support import web

pytestmark = pytest.mark.django_db


def log_in(client: Client, username: str, password: str | None = None) -> Any:
    return web.log_in(client, username, password, REMOTE_ADDR="10.0.0.7")


@pytest.fixture
def waiting(operator: Any) -> RestoreRun:
    return RestoreRunFactory(
        awaiting_approval=True,
        triggered_by=operator,
        target_kind=RestoreRun.TargetKind.IN_PLACE,
        new_database_name="",
        target_key="datastore:x",
    )


# --- sessions --------------------------------------------------------------------------------------------------------


def test_an_idle_session_ends_on_the_server_and_htmx_is_sent_to_the_login_page(client: Client, viewer: Any) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert log_in(client, "vera").status_code == 302
        assert client.get(reverse("audit:event_list")).status_code == 200
    with time_machine.travel(start + timedelta(minutes=29), tick=False):
        assert client.get(reverse("audit:event_list")).status_code == 200  # activity: the idle clock restarts
    with time_machine.travel(start + timedelta(minutes=29 + 31), tick=False):
        response = client.get(
            reverse("audit:event_list"), headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/audit/"}
        )
    assert response.status_code == 200 and response["HX-Redirect"].startswith(reverse("login"))
    assert "next=/audit/" in response["HX-Redirect"]
    assert "_auth_user_id" not in client.session  # logged out, not only redirected
    event = AuditEvent.objects.get(action=AuditEvent.Action.AUTH_SESSION_EXPIRED)
    assert event.details["timeout"] == "idle" and event.via == "web"


def test_polling_does_not_keep_an_idle_session_alive(client: Client, viewer: Any) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        log_in(client, "vera")
    for minutes in (10, 20, 29):
        with time_machine.travel(start + timedelta(minutes=minutes), tick=False):
            poll = {"HX-Request": "true", "X-Console-Poll": "1"}
            assert client.get(reverse("audit:event_list"), headers=poll).status_code == 200
    with time_machine.travel(start + timedelta(minutes=31), tick=False):
        response = client.get(reverse("audit:event_list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_busy_session_still_ends_after_the_absolute_timeout(client: Client, viewer: Any, settings: Any) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        log_in(client, "vera")
    for hours in range(1, 12):  # active every hour, never idle
        for minutes in (0, 20, 40):
            with time_machine.travel(start + timedelta(hours=hours - 1, minutes=minutes + 1), tick=False):
                assert client.get(reverse("audit:event_list")).status_code == 200
    with time_machine.travel(start + timedelta(hours=12, minutes=1), tick=False):
        response = client.get(reverse("audit:event_list"))
    assert response.status_code == 302
    assert AuditEvent.objects.get(action=AuditEvent.Action.AUTH_SESSION_EXPIRED).details["timeout"] == "absolute"


# --- login throttling and lockout ------------------------------------------------------------------------------


def test_failed_logins_lock_the_account_out_with_a_clear_message_and_are_audited(client: Client, viewer: Any) -> None:
    for _ in range(4):
        assert log_in(client, "vera", "wrong").status_code == 200  # the form again, with its error
    locked = log_in(client, "vera", "wrong")
    assert locked.status_code == 429
    assert "This account is locked after 5 failed logins from this address." in locked.content.decode()
    # Locked: even the right password does not get in until it is reset or the cool-off has passed.
    assert log_in(client, "vera").status_code == 429
    failed = AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_LOGIN_FAILED)
    assert failed.count() >= 5 and {e.client_ip for e in failed} == {"10.0.0.7"}
    lockouts = AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_LOCKED_OUT)  # each attempt while locked
    assert {(e.actor_label, e.via, e.client_ip) for e in lockouts} == {("vera", "web", "10.0.0.7")}

    from django.core.management import call_command

    call_command("axes_reset_username", "vera")  # what the admin does (README)
    assert log_in(client, "vera").status_code == 302
    assert AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_LOGGED_IN, actor_label="vera").exists()


# --- re-authentication -----------------------------------------------------------------------------------------


def test_a_stolen_session_cookie_alone_cannot_approve(waiting: RestoreRun, approver: Any) -> None:
    """The thief has the cookie of a session that logged in long ago; not the password."""
    victim = Client()
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        log_in(victim, "abel")
    thief = Client()
    thief.cookies = victim.cookies
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        response = thief.post(reverse("restores:run_approve", args=[waiting.pk]), {"comment": "looks fine"})
        assert response.status_code == 403
        page = response.content.decode()
        assert "Type your password to approve this restore." in page
        assert 'name="comment" value="looks fine"' in page  # the form posts it again: nothing typed is lost
        guessed = thief.post(
            reverse("restores:run_approve", args=[waiting.pk]), {"comment": "x", "reauth_password": "guess"}
        )
    assert guessed.status_code == 403 and "That password is not right; nothing was done." in guessed.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == RestoreRun.Status.AWAITING_APPROVAL and not RestoreApproval.objects.exists()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_REAUTH_FAILED, actor_label="abel").count() == 1
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_LOGIN_FAILED).exists()


def test_approving_with_the_password_works_and_counts_for_a_few_minutes(
    client: Client, waiting: RestoreRun, approver: Any, operator: Any
) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        log_in(client, "abel")
        detail = client.get(reverse("restores:run_detail", args=[waiting.pk])).content.decode()
        assert 'name="reauth_password"' not in detail  # the password typed to log in counts for a few minutes
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        detail = client.get(reverse("restores:run_detail", args=[waiting.pk])).content.decode()
        assert 'name="reauth_password"' in detail  # then the approve form asks for it up front
    with time_machine.travel(start + timedelta(minutes=20), tick=False):
        response = client.post(
            reverse("restores:run_approve", args=[waiting.pk]), {"comment": "ok", "reauth_password": "abel-password"}
        )
    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.status == RestoreRun.Status.QUEUED
    assert AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_REAUTHENTICATED, actor_label="abel").exists()
    second = RestoreRunFactory(
        awaiting_approval=True, triggered_by=operator, target_kind="in_place", new_database_name="", target_key="y"
    )
    with time_machine.travel(start + timedelta(minutes=24), tick=False):  # within 5 minutes: not asked again
        assert client.post(reverse("restores:run_approve", args=[second.pk])).status_code == 302
    second.refresh_from_db()
    assert second.status == RestoreRun.Status.QUEUED


def test_a_password_login_counts_as_a_recent_password_but_a_cookie_alone_does_not(
    client: Client, waiting: RestoreRun, approver: Any
) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert log_in(client, "abel").status_code == 302
    with time_machine.travel(start + timedelta(minutes=4), tick=False):  # within REAUTH_MAX_AGE of the login
        assert client.post(reverse("restores:run_approve", args=[waiting.pk]), {"comment": "ok"}).status_code == 302
    waiting.refresh_from_db()
    assert waiting.status == RestoreRun.Status.QUEUED
    # force_login is a session made without a password (a script, a stolen session): it is asked for one.
    other = Client()
    other.force_login(approver)
    second = RestoreRunFactory(awaiting_approval=True, target_kind="in_place", new_database_name="", target_key="z")
    assert other.post(reverse("restores:run_approve", args=[second.pk]), {"comment": "ok"}).status_code == 403


@pytest.mark.parametrize("action", ["pin", "unpin", "retention"])
def test_pin_unpin_and_retention_need_the_password_again(client: Client, operator: Any, action: str) -> None:
    from backups.models import BackupArtifact
    from tests.factories import BackupArtifactFactory

    pins = {"pinned_at": timezone.now(), "pinned_by": operator} if action == "unpin" else {}
    artifact = BackupArtifactFactory(succeeded=True, **pins)
    urls = {
        "pin": reverse("backups:artifact_pin", args=[artifact.pk]),
        "unpin": reverse("backups:artifact_unpin", args=[artifact.pk]),
        "retention": reverse("overview:retention_update", args=[artifact.datastore.name]),
    }
    data = (
        {"reason": "legal hold"}
        if action == "pin"
        else {"keep_last": "3", "keep_daily": "0", "keep_weekly": "0", "keep_monthly": "0"}
    )
    client.force_login(operator)
    refused = client.post(urls[action], data)
    assert refused.status_code == 403 and 'name="reauth_password"' in refused.content.decode()
    assert (BackupArtifact.objects.get(pk=artifact.pk).pinned_at is not None) == (action == "unpin")
    events = AuditEvent.objects.filter(action__in=["backup.pinned", "backup.unpinned", "retention.changed"])
    assert not events.exists()
    done = client.post(urls[action], {**data, "reauth_password": "olga-password"})
    assert done.status_code in (200, 302)
    assert events.count() == 1
    if action != "retention":
        assert (BackupArtifact.objects.get(pk=artifact.pk).pinned_at is not None) == (action == "pin")
