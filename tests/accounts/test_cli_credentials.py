"""Who is acting on the command line: `--as` is a claim, a credential is the proof. Each test tries a way round
the four-eyes rule from one shell and asserts it is refused in one line, that nothing changed, and that the
attempt is in the audit log."""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import socket
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.models import PersonalToken
from accounts.services import personal_token_revoke
from audit.models import AuditEvent
from restores.models import RestoreApproval, RestoreRun
from tests.factories import BackupArtifactFactory, RestoreRunFactory
from tests.support.cli import token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A script, cron or a pipe: nobody can type a password."""
    monkeypatch.setattr("accounts.cli.ask_secret", lambda username, purpose: None)


@pytest.fixture
def waiting(operator: Any) -> RestoreRun:
    """Olga's restore over a protected datastore, waiting for one approval."""
    return RestoreRunFactory(
        awaiting_approval=True,
        triggered_by=operator,
        target_kind=RestoreRun.TargetKind.IN_PLACE,
        new_database_name="",
        target_key="datastore:x",
    )


def assert_untouched(run: RestoreRun) -> None:
    run.refresh_from_db()
    assert run.status == RestoreRun.Status.AWAITING_APPROVAL
    assert not RestoreApproval.objects.filter(run=run).exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.RESTORE_APPROVED).exists()


def refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_REFUSED).order_by("pk"))


def test_approving_as_someone_else_by_name_alone_is_refused(
    waiting: RestoreRun, approver: Any, no_terminal: None
) -> None:
    """`restore 5 --as alice` then `approve 5 --as bob` from one shell: the name bob proves nothing."""
    with pytest.raises(CommandError, match="approve restore #\\d+ as abel takes abel's own credential") as refused:
        call_command("approve", str(waiting.pk), "--as", "abel")
    assert "\n" not in str(refused.value)
    assert_untouched(waiting)
    [event] = refusals()
    assert (event.actor_label, event.via, event.details["reason"]) == ("abel", "cli", "no_credential")
    assert event.details["purpose"] == f"approve restore #{waiting.pk}"
    assert event.os_user == getpass.getuser() and event.os_host == socket.gethostname()


def test_a_token_proves_only_its_owner(
    waiting: RestoreRun, operator: Any, approver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Olga's own token with `--as abel` is refused; without `--as` it acts as olga, who asked for the restore."""
    monkeypatch.setenv("DR_CONSOLE_TOKEN", token_for(operator))
    with pytest.raises(CommandError, match="the personal token is olga's, not abel's"):
        call_command("approve", str(waiting.pk), "--as", "abel")
    with pytest.raises(CommandError, match="olga may not approve or reject restores"):
        call_command("approve", str(waiting.pk))
    assert_untouched(waiting)
    assert [e.details["reason"] for e in refusals()] == ["token_of_another_user"]


def test_the_approvers_own_token_approves_and_the_audit_says_it_came_from_the_command_line(
    waiting: RestoreRun, approver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DR_CONSOLE_TOKEN", token_for(approver))
    call_command("approve", str(waiting.pk), "--json", stdout=io.StringIO())
    waiting.refresh_from_db()
    assert waiting.status == RestoreRun.Status.QUEUED
    event = AuditEvent.objects.get(action=AuditEvent.Action.RESTORE_APPROVED)
    assert (event.actor_label, event.via, event.os_user) == ("abel", "cli", getpass.getuser())
    assert PersonalToken.objects.get(user=approver).last_used_at is not None


@pytest.mark.parametrize("which", ["revoked", "expired", "unknown"])
def test_a_revoked_expired_or_unknown_token_is_refused(
    waiting: RestoreRun, approver: Any, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    secret = token_for(approver, days=1)
    token = PersonalToken.objects.get(user=approver)
    if which == "revoked":
        personal_token_revoke(token_id=token.pk, revoked_by=approver)
    elif which == "unknown":
        secret = secret[:-4] + "AAAA"
    monkeypatch.setenv("DR_CONSOLE_TOKEN", secret)
    expected = {
        "revoked": f"personal token #{token.pk} \\(drc_\\S+…\\) of abel was revoked on .* UTC; `manage.py token create",
        "expired": f"personal token #{token.pk} \\(drc_\\S+…\\) of abel expired on .* UTC",
        "unknown": "the personal token is not one this console issued",
    }[which]
    later = timezone.now() + timedelta(days=2 if which == "expired" else 0)
    with time_machine.travel(later, tick=False), pytest.raises(CommandError, match=expected):
        call_command("approve", str(waiting.pk))
    assert_untouched(waiting)
    [event] = refusals()
    assert event.details["reason"] == f"{which}_token"
    assert secret not in json.dumps(event.details)  # the secret is never recorded


def test_a_wrong_password_typed_is_refused(waiting: RestoreRun, approver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("accounts.cli.ask_secret", lambda username, purpose: "guess")
    with pytest.raises(CommandError, match="wrong user name or password for abel; nothing was done"):
        call_command("approve", str(waiting.pk), "--as", "abel")
    assert_untouched(waiting)
    assert [e.details["reason"] for e in refusals()] == ["bad_password"]


def test_the_right_password_typed_approves(waiting: RestoreRun, approver: Any) -> None:
    """The person at the terminal types their own password (tests/conftest.py)."""
    call_command("approve", str(waiting.pk), "--as", "abel", stdout=io.StringIO())
    waiting.refresh_from_db()
    assert waiting.status == RestoreRun.Status.QUEUED


def test_requesting_as_someone_else_needs_their_credential_too(
    waiting: RestoreRun, operator: Any, no_terminal: None
) -> None:
    with pytest.raises(CommandError, match="restore backup #\\d+ as olga takes olga's own credential"):
        call_command("restore", str(waiting.artifact_id), "--new-database", "copy", "--as", "olga", "--reason", "look")
    assert RestoreRun.objects.count() == 1
    with pytest.raises(CommandError, match="back up .* as olga takes olga's own credential"):
        call_command("backup", waiting.artifact.datastore.name, "--as", "olga")
    assert len(refusals()) == 2


def test_a_request_records_the_os_user_and_host(operator: Any, source_db: Any, new_database_name: str) -> None:
    artifact = BackupArtifactFactory(succeeded=True, datastore__url_env=source_db.url_env)
    out = io.StringIO()
    call_command(
        "restore",
        str(artifact.pk),
        *("--new-database", new_database_name, "--as", "olga", "--reason", "look", "--json"),
        stdout=out,
    )
    summary = json.loads(out.getvalue())
    run = RestoreRun.objects.get(pk=summary["id"])
    assert (run.requested_via, run.requested_os_user, run.requested_host) == (
        "cli",
        getpass.getuser(),
        socket.gethostname(),
    )
    assert summary["requested_os_user"] == getpass.getuser()
    event = AuditEvent.objects.get(action=AuditEvent.Action.RESTORE_REQUESTED)
    assert (event.via, event.os_user, event.os_host) == ("cli", getpass.getuser(), socket.gethostname())


def test_token_create_prints_it_once_and_stores_only_its_hash(approver: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("token", "create", "--user", "abel", "--name", "laptop", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("drc_") and len(secret) > 40
    assert "shown once" in err.getvalue()
    token = PersonalToken.objects.get(user=approver)
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([list(row) for row in PersonalToken.objects.values_list()], default=str)
    listing = io.StringIO()
    call_command("token", "list", "--json", stdout=listing)
    [row] = json.loads(listing.getvalue())
    assert (row["user"], row["state"], row["name"]) == ("abel", "active", "laptop")
    assert secret not in listing.getvalue()
    created = AuditEvent.objects.get(action=AuditEvent.Action.AUTH_TOKEN_CREATED)
    assert created.actor_label == "abel" and secret not in json.dumps(created.details)

    call_command("token", "revoke", str(token.pk), stdout=io.StringIO())
    assert PersonalToken.objects.get(pk=token.pk).state == "revoked"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.AUTH_TOKEN_REVOKED, actor_label="abel").exists()


def test_nobody_makes_a_token_for_someone_else_without_being_a_superuser(
    operator: Any, approver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Olga, proven by her own token, cannot mint one for abel (and then approve with it)."""
    monkeypatch.setenv("DR_CONSOLE_TOKEN", token_for(operator))
    with pytest.raises(CommandError, match="olga may not create tokens for abel"):
        call_command("token", "create", "--user", "abel", "--by", "olga", stdout=io.StringIO())
    with pytest.raises(CommandError, match="the personal token is olga's, not abel's"):
        call_command("token", "create", "--user", "abel", stdout=io.StringIO())
    assert not PersonalToken.objects.filter(user=approver).exists()
