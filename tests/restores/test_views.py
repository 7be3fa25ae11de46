"""The restore pages: permissions, the request form, a run's page and its polled status, approvals.
The services they call are tested in test_services.py and test_approvals.py; here, what a person sees and can do."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django.asserts import assertTemplateNotUsed, assertTemplateUsed

from audit.models import AuditEvent
from backups.models import BackupArtifact
from inventory.models import Datastore, Environment
from restores.models import RestoreApproval, RestoreRun
from restores.selectors import restore_run_page
from restores.services import ApprovalRefused, restore_run_cancel, restore_run_request
from tests.factories import (
    BackupArtifactFactory,
    DatastoreFactory,
    DatastoreHealthFactory,
    EnvironmentFactory,
    user_in_groups,
)
from tests.support.web import logged_in_with_password

pytestmark = pytest.mark.django_db
Status = RestoreRun.Status
Kind = RestoreRun.TargetKind
HTMX = {"HX-Request": "true"}


@pytest.fixture
def viewer(db: None) -> User:
    return user_in_groups("vera", "viewer")


@pytest.fixture
def prod() -> Environment:
    # Two approvals: one approval in a test does not queue the run, so nothing reaches the broker.
    return EnvironmentFactory(name="prod", protected=True, required_approvals=2)


@pytest.fixture
def prod_db(prod: Environment) -> Datastore:
    datastore = DatastoreFactory(name="prod-db", environment=prod)
    DatastoreHealthFactory(datastore=datastore)  # a worker reached it: the console knows which database it is
    return datastore


@pytest.fixture
def backup(prod_db: Datastore) -> BackupArtifact:
    return BackupArtifactFactory(datastore=prod_db, status="succeeded", sha256="a" * 64, storage_key="k")


def logged_in(client: Client, user: User) -> Client:
    return logged_in_with_password(client, user)  # approvals and protected restores need a recent password


def request_in_place(backup: BackupArtifact, requester: User) -> RestoreRun:
    return restore_run_request(
        artifact=backup,
        target_kind=Kind.IN_PLACE,
        requested_by=requester,
        reason="bad migration dropped documents",
        confirm=backup.datastore.name,
        enqueue=False,
    )


def make_run(backup: BackupArtifact, requester: User, **fields: Any) -> RestoreRun:
    """A run row as a worker would have left it, without going through the workflow."""
    values: dict[str, Any] = {
        "artifact": backup,
        "artifact_sha256": backup.sha256,
        "target_kind": Kind.IN_PLACE,
        "target_datastore": backup.datastore,
        "target_key": f"datastore:{backup.datastore_id}",
        "reason": "drill",
        "triggered_by": requester,
        "trigger": requester.username,
        "options": {"jobs": 2, "no_owner": False},
    }
    values.update(fields)
    return RestoreRun.objects.create(**values)


def form_data(**overrides: Any) -> dict[str, Any]:
    data = {"target_kind": Kind.IN_PLACE, "reason": "incident 42: bad migration", "confirm": "prod-db", "jobs": 2}
    data.update(overrides)
    return data


def create_url(backup: BackupArtifact) -> str:
    return f"{reverse('restores:run_create')}?artifact={backup.pk}"


# --- permissions ----------------------------------------------------------------------------------------------------


def test_every_page_needs_a_login(client: Client, backup: BackupArtifact, operator: User) -> None:
    run = request_in_place(backup, operator)
    for url in (
        reverse("restores:run_list"),
        create_url(backup),
        reverse("restores:run_detail", args=[run.pk]),
        reverse("restores:run_status", args=[run.pk]),
        reverse("restores:approval_list"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), url
    response = client.post(reverse("restores:run_approve", args=[run.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not run.approvals.exists()


def test_viewer_reads_every_page(client: Client, viewer: User, backup: BackupArtifact, operator: User) -> None:
    run = request_in_place(backup, operator)
    logged_in(client, viewer)
    for url in (
        reverse("restores:run_list"),
        reverse("restores:run_detail", args=[run.pk]),
        reverse("restores:approval_list"),
    ):
        assert client.get(url).status_code == 200, url
    assert client.get(reverse("restores:run_status", args=[run.pk]), headers=HTMX).status_code == 200
    detail = client.get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    assert "Someone with the approver role decides on it" in detail
    assert "Cancel restore" not in detail and "Approve restore" not in detail


def test_viewer_changes_nothing(client: Client, viewer: User, backup: BackupArtifact, operator: User) -> None:
    run = request_in_place(backup, operator)
    logged_in(client, viewer)
    assert client.get(create_url(backup)).status_code == 403
    assert client.post(create_url(backup), form_data()).status_code == 403
    assert client.post(reverse("restores:run_cancel", args=[run.pk])).status_code == 403
    assert client.post(reverse("restores:run_approve", args=[run.pk]), {"comment": "ok"}).status_code == 403
    assert client.post(reverse("restores:run_reject", args=[run.pk]), {"reason": "no"}).status_code == 403
    run.refresh_from_db()
    assert run.status == Status.AWAITING_APPROVAL and not run.approvals.exists()
    assert RestoreRun.objects.count() == 1


def test_state_changes_refuse_get(client: Client, approver: User, backup: BackupArtifact, operator: User) -> None:
    run = request_in_place(backup, operator)
    logged_in(client, approver)
    for name in ("run_cancel", "run_approve", "run_reject"):
        assert client.get(reverse(f"restores:{name}", args=[run.pk])).status_code == 405, name
    run.refresh_from_db()
    assert run.status == Status.AWAITING_APPROVAL


def test_csrf_is_required(backup: BackupArtifact, operator: User, approver: User) -> None:
    run = request_in_place(backup, operator)
    client = logged_in(Client(enforce_csrf_checks=True), approver)
    assert client.post(reverse("restores:run_approve", args=[run.pk])).status_code == 403
    assert not run.approvals.exists()


# --- the request form -----------------------------------------------------------------------------------------------


def test_form_preselects_no_target_and_says_plainly_what_the_chosen_one_overwrites(
    client: Client, operator: User, backup: BackupArtifact
) -> None:
    response = logged_in(client, operator).get(create_url(backup))
    assert response.status_code == 200
    assertTemplateUsed(response, "restores/run_create.html")
    text = response.content.decode()
    # Nothing chosen for the operator: "in place" is the most destructive target.
    assert " checked" not in text.split('name="target_kind"', 1)[1].split("</fieldset>", 1)[0]
    assert "Choose where to restore into; this will then say what it overwrites." in text
    response = client.post(create_url(backup), {"reason": "bad migration", "jobs": 2})
    assert "Choose where to restore into." in response.content.decode()
    text = client.get(create_url(backup) + "&target_kind=in_place").content.decode()
    assert (
        f"This replaces every table of prod-db (environment prod, protected) with the content of backup #{backup.pk}"
        in text
    )
    assert 'name="confirm"' in text  # protected: the typed confirmation is asked for
    assert "A safety backup of prod-db is taken first" in text


def test_impact_preview_follows_the_target(client: Client, operator: User, backup: BackupArtifact) -> None:
    logged_in(client, operator)
    headers = {**HTMX, "HX-Target": "restore-impact"}
    response = client.get(create_url(backup) + "&target_kind=new_database&new_database_name=check", headers=headers)
    assert response.status_code == 200
    assertTemplateUsed(response, "restores/partials/run_impact.html")
    assertTemplateNotUsed(response, "base.html")
    text = response.content.decode()
    assert "This creates the database check on prod-db" in text and "Nothing is overwritten" in text
    assert 'name="confirm"' not in text  # a new database overwrites nothing: no typed confirmation

    staging_db = DatastoreFactory(name="staging-db", environment=EnvironmentFactory(name="staging"))
    response = client.get(
        create_url(backup) + f"&target_kind=datastore&target_datastore={staging_db.pk}", headers=headers
    )
    text = response.content.decode()
    assert "This replaces every table of staging-db (environment staging) with" in text
    assert 'name="confirm"' not in text and "no approval is needed" in text


def test_a_refreshed_impact_box_keeps_the_typed_confirmation(
    client: Client, operator: User, backup: BackupArtifact
) -> None:
    """The box refreshes when the target changes; what the person already typed is not wiped by it."""
    logged_in(client, operator)
    headers = {**HTMX, "HX-Target": "restore-impact"}
    text = client.get(create_url(backup) + "&target_kind=in_place&confirm=prod-d", headers=headers).content.decode()
    assert 'value="prod-d"' in text
    text = client.get(create_url(backup) + "&target_kind=in_place", headers=headers).content.decode()
    assert 'name="confirm"' in text and "value=" not in text.split('name="confirm"')[1].split(">")[0]


def test_operator_requests_a_protected_restore(client: Client, operator: User, backup: BackupArtifact) -> None:
    response = logged_in(client, operator).post(create_url(backup), form_data(no_owner="on"))
    run = RestoreRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("restores:run_detail", args=[run.pk])
    assert run.status == Status.AWAITING_APPROVAL and run.required_approvals == 2
    assert run.triggered_by == operator and run.trigger == "web:olga"
    assert run.options == {"jobs": 2, "no_owner": True}
    event = AuditEvent.objects.get(action="restore.requested")
    assert event.client_ip == "127.0.0.1" and event.actor_label == "olga"

    page = client.get(response["Location"]).content.decode()
    assert f"Restore #{run.pk} requested. It waits for 2 approval(s)" in page
    assert "a" * 64 in page and "incident 42: bad migration" in page
    assert "Cancel restore" in page  # the requester may cancel
    assert "Approve restore" not in page


def test_missing_typed_confirmation_is_a_form_error_and_creates_nothing(
    client: Client, operator: User, backup: BackupArtifact
) -> None:
    response = logged_in(client, operator).post(create_url(backup), form_data(confirm="prod"))
    assert response.status_code == 200
    # A wrong name is told apart from a missing one.
    assert "“prod” does not match: type prod-db exactly (it is in the protected environment prod)." in (
        response.content.decode()
    )
    response = client.post(create_url(backup), form_data(confirm="", reason=" "))
    text = response.content.decode()
    assert "Type prod-db exactly" in text and "This field is required." in text
    assert not RestoreRun.objects.exists()


def test_a_refusal_of_the_service_is_shown_in_the_form(client: Client, operator: User, prod_db: Datastore) -> None:
    failed = BackupArtifactFactory(datastore=prod_db, status="failed", error="pg_dump exited with status 1")
    response = logged_in(client, operator).post(create_url(failed), form_data())
    text = response.content.decode()
    assert response.status_code == 200
    assert f"backup #{failed.pk} is failed; only a succeeded backup can be restored" in text
    assert not RestoreRun.objects.exists()


def test_new_database_needs_a_valid_name(client: Client, operator: User, backup: BackupArtifact) -> None:
    logged_in(client, operator)
    response = client.post(create_url(backup), form_data(target_kind=Kind.NEW_DATABASE, confirm=""))
    assert "Name the new database." in response.content.decode()
    response = client.post(
        create_url(backup), form_data(target_kind=Kind.NEW_DATABASE, new_database_name="1; drop", confirm="")
    )
    assert "starting with a letter or _" in response.content.decode()
    assert not RestoreRun.objects.exists()


def test_htmx_form_gets_the_form_partial_then_a_client_redirect(
    client: Client, operator: User, backup: BackupArtifact
) -> None:
    logged_in(client, operator)
    response = client.post(create_url(backup), form_data(confirm=""), headers=HTMX)
    assert response.status_code == 200
    assertTemplateUsed(response, "restores/partials/run_form.html")
    assertTemplateNotUsed(response, "base.html")

    response = client.post(create_url(backup), form_data(), headers=HTMX)
    run = RestoreRun.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("restores:run_detail", args=[run.pk])


def test_form_without_an_artifact_says_where_to_start(client: Client, operator: User) -> None:
    response = logged_in(client, operator).get(reverse("restores:run_create"))
    assert response.status_code == 400
    assert "Choose the backup to restore first" in response.content.decode()
    assert client.get(reverse("restores:run_create") + "?artifact=999999").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_unprotected_request_is_queued_on_the_real_broker(client: Client) -> None:
    broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    broker.delete("celery")
    operator = user_in_groups("olga", "operator")
    staging_db = DatastoreFactory(name="staging-db", environment=EnvironmentFactory(name="staging"))
    artifact = BackupArtifactFactory(datastore=staging_db, status="succeeded", sha256="b" * 64, storage_key="k")
    try:
        response = logged_in(client, operator).post(create_url(artifact), form_data(confirm=""))
        run = RestoreRun.objects.get()
        assert response.status_code == 302
        assert run.status == Status.QUEUED and run.required_approvals == 0
        assert broker.llen("celery") == 1  # handed to a worker, after the commit
    finally:
        broker.delete("celery")


# --- a run's page ---------------------------------------------------------------------------------------------------


def test_run_status_stops_polling_once_the_run_ended(client: Client, viewer: User, backup: BackupArtifact) -> None:
    active = make_run(backup, viewer, status=Status.RUNNING)
    ended = make_run(backup, viewer, status=Status.SUCCEEDED)
    logged_in(client, viewer)

    response = client.get(reverse("restores:run_status", args=[active.pk]), headers=HTMX)
    assert response.status_code == 200
    assertTemplateUsed(response, "restores/partials/run_status.html")
    assertTemplateNotUsed(response, "base.html")
    assert 'hx-trigger="every 3s"' in response.content.decode()

    response = client.get(reverse("restores:run_status", args=[ended.pk]), headers=HTMX)
    assert response.status_code == 286
    assert "every 3s" not in response.content.decode()

    # Not htmx: the whole page
    response = client.get(reverse("restores:run_status", args=[ended.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("restores:run_detail", args=[ended.pk])
    response = client.get(reverse("restores:run_detail", args=[active.pk]))
    assertTemplateUsed(response, "base.html")
    assert 'hx-trigger="every 3s"' in response.content.decode()


def test_failed_run_shows_the_error_first_then_checks_and_log(
    client: Client, viewer: User, backup: BackupArtifact, operator: User
) -> None:
    run = make_run(
        backup,
        operator,
        status=Status.FAILED,
        error="check failed: GET /readyz: 503 Service Unavailable",
        stderr_tail="pg_restore: warning: something odd",
        checks=[
            {"name": "SELECT 1", "ok": True, "detail": "returned 1"},
            {"name": "GET /readyz", "ok": False, "detail": "503 Service Unavailable", "status_code": 503},
        ],
    )
    text = logged_in(client, viewer).get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    error_at = text.index("check failed: GET /readyz: 503")
    assert error_at < text.index("pg_restore: warning: something odd")
    assert error_at < text.index("Checks after the restore")
    assert "HTTP 503" in text and "request the restore again" in text
    assert "Cancel restore" not in text


def test_timeline_names_who_did_what(client: Client, operator: User, approver: User, backup: BackupArtifact) -> None:
    run = request_in_place(backup, operator)
    logged_in(client, approver).post(reverse("restores:run_approve", args=[run.pk]), {"comment": "checked with Olga"})
    text = client.get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    timeline = text[text.index("Timeline") :]
    assert timeline.index("Requested") < timeline.index("Awaiting approval") < timeline.index("Approved")
    assert "abel" in timeline and "checked with Olga" in timeline and "olga" in timeline
    assert "<time datetime=" in timeline and 'title="' in timeline  # relative age, exact time on hover


def test_safety_backup_is_linked(client: Client, viewer: User, backup: BackupArtifact, prod_db: Datastore) -> None:
    safety = BackupArtifactFactory(datastore=prod_db, status="succeeded", sha256="c" * 64, storage_key="s")
    run = make_run(backup, viewer, status=Status.SUCCEEDED, safety_backup=safety)
    text = logged_in(client, viewer).get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    assert f"backup #{safety.pk}" in text and reverse("backups:artifact_detail", args=[safety.pk]) in text


# --- cancel ---------------------------------------------------------------------------------------------------------


def test_requester_cancels_their_own_run(client: Client, operator: User, backup: BackupArtifact) -> None:
    run = request_in_place(backup, operator)
    response = logged_in(client, operator).post(reverse("restores:run_cancel", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED and run.error == "cancelled by olga"
    assert "cancelled before it touched anything" in response.content.decode()
    assert AuditEvent.objects.get(action="restore.cancelled").client_ip == "127.0.0.1"

    response = client.post(reverse("restores:run_cancel", args=[run.pk]), follow=True)
    assert "had already ended" in response.content.decode()


def test_htmx_cancel_answers_with_the_status_partial(client: Client, operator: User, backup: BackupArtifact) -> None:
    run = make_run(backup, operator, status=Status.RUNNING)
    response = logged_in(client, operator).post(reverse("restores:run_cancel", args=[run.pk]), headers=HTMX)
    assert response.status_code == 200
    assertTemplateUsed(response, "restores/partials/run_status.html")
    assertTemplateNotUsed(response, "base.html")
    assert "run-changed" in response["HX-Trigger"]
    assert "the target may be partly restored" in response.content.decode()
    assert RestoreRun.objects.get(pk=run.pk).status == Status.CANCELLED


def test_someone_elses_run_cannot_be_cancelled(
    client: Client, operator: User, approver: User, backup: BackupArtifact
) -> None:
    run = request_in_place(backup, operator)
    logged_in(client, approver)
    assert "Cancel restore" not in client.get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    assert client.post(reverse("restores:run_cancel", args=[run.pk])).status_code == 403
    assert RestoreRun.objects.get(pk=run.pk).status == Status.AWAITING_APPROVAL


def test_a_viewer_cannot_cancel_even_a_restore_they_requested(
    client: Client, viewer: User, backup: BackupArtifact
) -> None:
    """Cancelling is an operator's act, as on the command line (`cancel` needs restores.add_restorerun): a run
    requested by someone who has since become a viewer stays, and the page offers no button."""
    run = make_run(backup, viewer, status=Status.RUNNING)
    logged_in(client, viewer)
    assert "Cancel restore" not in client.get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    for headers in ({}, HTMX):
        assert client.post(reverse("restores:run_cancel", args=[run.pk]), headers=headers).status_code == 403
    assert RestoreRun.objects.get(pk=run.pk).status == Status.RUNNING
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.RESTORE_CANCELLED).exists()
    with pytest.raises(ApprovalRefused, match="^vera may not cancel restores: that needs the operator role$"):
        restore_run_cancel(run_id=run.pk, cancelled_by=viewer)  # the service refuses too, whoever calls it
    assert RestoreRun.objects.get(pk=run.pk).status == Status.RUNNING


# --- approvals ------------------------------------------------------------------------------------------------------


def test_requester_cannot_approve_their_own_run_and_is_told_why(
    client: Client, approver: User, backup: BackupArtifact
) -> None:
    run = request_in_place(backup, approver)  # abel is an operator too
    logged_in(client, approver)
    detail = client.get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    assert "You requested this restore, so someone else must approve it" in detail
    assert "Approve restore" not in detail
    approvals_page = client.get(reverse("restores:approval_list")).content.decode()
    assert "You requested this restore" in approvals_page and "Approve restore" not in approvals_page

    response = client.post(reverse("restores:run_approve", args=[run.pk]), {"comment": "me"}, follow=True)
    assert f"Not approved: abel requested restore #{run.pk} and cannot decide on it." in response.content.decode()
    assert not run.approvals.exists()


def test_operator_without_the_approver_role_may_not_approve(
    client: Client, operator: User, approver: User, backup: BackupArtifact
) -> None:
    run = request_in_place(backup, approver)
    assert logged_in(client, operator).post(reverse("restores:run_approve", args=[run.pk])).status_code == 403
    assert not run.approvals.exists()


def test_approver_approves_from_the_approvals_page(
    client: Client, operator: User, approver: User, backup: BackupArtifact
) -> None:
    run = request_in_place(backup, operator)
    logged_in(client, approver)
    page = client.get(reverse("restores:approval_list")).content.decode()
    assert f"Approve restore #{run.pk}" in page and "bad migration dropped documents" in page

    response = client.post(
        reverse("restores:run_approve", args=[run.pk]),
        {"comment": "  looks right  ", "next": reverse("restores:approval_list")},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("restores:approval_list")
    assert f"You approved restore #{run.pk} (1 of 2 approvals)" in response.content.decode()
    approval = RestoreApproval.objects.get()
    assert (approval.approver, approval.decision, approval.comment) == (approver, "approved", "looks right")
    run.refresh_from_db()
    assert run.status == Status.AWAITING_APPROVAL  # the second approval is someone else's
    assert AuditEvent.objects.get(action="restore.approved").client_ip == "127.0.0.1"
    # Abel has decided; the page now says so instead of offering the buttons again.
    assert "You have already decided on this restore" in response.content.decode()


def test_next_never_leaves_the_console(client: Client, operator: User, approver: User, backup: BackupArtifact) -> None:
    run = request_in_place(backup, operator)
    response = logged_in(client, approver).post(
        reverse("restores:run_approve", args=[run.pk]), {"next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("restores:run_detail", args=[run.pk])


@pytest.mark.django_db(transaction=True)
def test_the_last_approval_queues_the_run_on_the_real_broker(client: Client) -> None:
    broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    broker.delete("celery")
    operator = user_in_groups("olga", "operator")
    approver = user_in_groups("abel", "approver", "operator")
    prod_db = DatastoreFactory(name="prod-db", environment=EnvironmentFactory(name="prod", protected=True))
    DatastoreHealthFactory(datastore=prod_db)  # a worker reached it: which database it is is known
    artifact = BackupArtifactFactory(datastore=prod_db, status="succeeded", sha256="a" * 64, storage_key="k")
    run = request_in_place(artifact, operator)
    try:
        response = logged_in(client, approver).post(reverse("restores:run_approve", args=[run.pk]), follow=True)
        run.refresh_from_db()
        assert run.status == Status.QUEUED
        assert "it is queued and starts when a worker is free" in response.content.decode()
        assert broker.llen("celery") == 1
    finally:
        broker.delete("celery")


def test_reject_needs_a_reason(client: Client, operator: User, approver: User, backup: BackupArtifact) -> None:
    run = request_in_place(backup, operator)
    logged_in(client, approver)
    response = client.post(reverse("restores:run_reject", args=[run.pk]), {"reason": "  "}, follow=True)
    assert "Say why you reject the restore" in response.content.decode()
    assert RestoreRun.objects.get(pk=run.pk).status == Status.AWAITING_APPROVAL

    response = client.post(reverse("restores:run_reject", args=[run.pk]), {"reason": "use last night's"}, follow=True)
    run.refresh_from_db()
    assert run.status == Status.REJECTED and run.error == "rejected by abel: use last night's"
    text = response.content.decode()
    assert f"You rejected restore #{run.pk}" in text and "Reject restore" not in text


def test_a_decision_on_an_ended_run_is_refused_with_a_message(
    client: Client, operator: User, approver: User, backup: BackupArtifact
) -> None:
    run = make_run(backup, operator, status=Status.CANCELLED)
    response = logged_in(client, approver).post(
        reverse("restores:run_reject", args=[run.pk]), {"reason": "no"}, follow=True
    )
    assert f"Not rejected: restore #{run.pk} is cancelled, not awaiting approval." in response.content.decode()


def test_htmx_decision_is_a_client_redirect(
    client: Client, operator: User, approver: User, backup: BackupArtifact
) -> None:
    run = request_in_place(backup, operator)
    response = logged_in(client, approver).post(reverse("restores:run_approve", args=[run.pk]), headers=HTMX)
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("restores:run_detail", args=[run.pk])


def test_approvals_page_empty_state(client: Client, viewer: User) -> None:
    text = logged_in(client, viewer).get(reverse("restores:approval_list")).content.decode()
    assert "No restore is waiting for approval." in text


def test_expired_requests_are_not_offered_for_approval(
    client: Client, operator: User, approver: User, backup: BackupArtifact, settings: Any
) -> None:
    request_in_place(backup, operator)
    settings.RESTORE_APPROVAL_TTL = 0
    text = logged_in(client, approver).get(reverse("restores:approval_list")).content.decode()
    assert "No restore is waiting for approval." in text


# --- the history ----------------------------------------------------------------------------------------------------


def test_run_list_filters_by_status_and_htmx_gets_the_rows(
    client: Client, viewer: User, backup: BackupArtifact
) -> None:
    failed = make_run(backup, viewer, status=Status.FAILED)
    succeeded = make_run(backup, viewer, status=Status.SUCCEEDED)
    logged_in(client, viewer)
    response = client.get(reverse("restores:run_list"))
    assertTemplateUsed(response, "restores/run_list.html")
    text = response.content.decode()
    assert text.index(f"#{succeeded.pk}<") < text.index(f"#{failed.pk}<")  # newest first

    response = client.get(reverse("restores:run_list") + "?status=failed", headers=HTMX)
    assertTemplateUsed(response, "restores/partials/run_rows.html")
    assertTemplateNotUsed(response, "base.html")
    text = response.content.decode()
    assert f"#{failed.pk}<" in text and f"#{succeeded.pk}<" not in text

    response = client.get(reverse("restores:run_list") + "?status=cancelled")
    assert "No restores match this filter." in response.content.decode()
    response = client.get(reverse("restores:run_list") + "?status=nonsense")  # ignored, not an error
    assert response.status_code == 200 and f"#{failed.pk}<" in response.content.decode()


def test_run_list_empty_state_says_where_to_start(client: Client, viewer: User) -> None:
    text = logged_in(client, viewer).get(reverse("restores:run_list")).content.decode()
    assert "No restore has been requested yet." in text and reverse("backups:artifact_list") in text


def test_keyset_pages_cover_every_run_once(viewer: User, backup: BackupArtifact) -> None:
    runs = [make_run(backup, viewer, status=Status.SUCCEEDED) for _ in range(5)]
    seen = []
    page = restore_run_page(per_page=2)
    assert page.is_first
    while True:
        seen += [run.pk for run in page.items]
        if not page.older:
            break
        page = restore_run_page(per_page=2, before=page.older)
    assert seen == [run.pk for run in reversed(runs)]
    back = restore_run_page(per_page=2, after=page.newer)  # from the last page, one page newer
    assert [run.pk for run in back.items] == seen[2:4]
    assert restore_run_page(per_page=2, before="garbage").items == restore_run_page(per_page=2).items


def test_list_pages_make_the_same_queries_for_3_or_50_runs(
    client: Client, approver: User, operator: User, backup: BackupArtifact, django_assert_max_num_queries: Any
) -> None:
    def add_runs(count: int) -> None:
        for _ in range(count):
            run = make_run(backup, operator, status=Status.AWAITING_APPROVAL, required_approvals=2)
            RestoreApproval.objects.create(run=run, approver=approver, decision="approved", comment="ok")

    logged_in(client, approver)
    add_runs(3)
    counts = {}
    for name in ("run_list", "approval_list"):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse(f"restores:{name}")).status_code == 200
        counts[name] = len(queries)
    add_runs(47)
    for name in ("run_list", "approval_list"):
        with django_assert_max_num_queries(counts[name]):
            response = client.get(reverse(f"restores:{name}"))
        shown = set(re.findall(r'href="/restores/(\d+)/"', response.content.decode()))
        assert len(shown) == 50, name


def test_htmx_approval_list_gets_the_rows_only(
    client: Client, viewer: User, operator: User, backup: BackupArtifact
) -> None:
    run = request_in_place(backup, operator)
    response = logged_in(client, viewer).get(reverse("restores:approval_list"), headers=HTMX)
    assertTemplateUsed(response, "restores/partials/approval_rows.html")
    assertTemplateNotUsed(response, "base.html")
    assert f"Restore #{run.pk} into prod-db" in response.content.decode()
    response = client.get(reverse("restores:approval_list"))
    assertTemplateUsed(response, "restores/approval_list.html")
    assertTemplateUsed(response, "base.html")


# --- a Redis backup ---------------------------------------------------------------------------------------------


@pytest.fixture
def redis_backup(prod: Environment) -> BackupArtifact:
    queue = DatastoreFactory(name="prod-queue", environment=prod, kind=Datastore.Kind.REDIS)
    DatastoreHealthFactory(datastore=queue)
    return BackupArtifactFactory(
        datastore=queue, status="succeeded", sha256="b" * 64, storage_key="k", format="redis_snapshot"
    )


def test_the_form_of_a_redis_backup_offers_redis_targets_replace_and_a_key_pattern(
    client: Client, operator: User, redis_backup: BackupArtifact, prod_db: Datastore
) -> None:
    other = DatastoreFactory(name="staging-queue", kind=Datastore.Kind.REDIS)

    response = logged_in(client, operator).get(create_url(redis_backup) + "&target_kind=in_place")

    page = response.content.decode()
    form = response.context["form"]
    assert [value for value, _label in form.fields["target_kind"].choices] == [Kind.IN_PLACE, Kind.DATASTORE]
    assert set(form.fields["target_datastore"].queryset) == {redis_backup.datastore, other}  # no PostgreSQL
    assert "Replace existing keys" in page and "Only keys matching" in page
    assert "Parallel pg_restore jobs" not in page and "A new database" not in page
    assert "This writes the keys of backup" in page
    assert "Existing keys are never overwritten" in page


def test_impact_of_a_redis_restore_follows_replace_and_the_pattern(
    client: Client, operator: User, redis_backup: BackupArtifact
) -> None:
    response = logged_in(client, operator).get(
        create_url(redis_backup) + "&target_kind=in_place&replace=on&key_pattern=rq:*",
        headers={**HTMX, "HX-Target": "restore-impact"},
    )

    assertTemplateUsed(response, "restores/partials/run_impact.html")
    page = response.content.decode()
    assert "Keys that exist in both are overwritten with the backup" in page
    assert 'Only the keys matching <span class="mono">rq:*</span>' in page


def test_operator_requests_a_redis_restore_with_replace_and_a_pattern(
    client: Client, operator: User, redis_backup: BackupArtifact
) -> None:
    data = {
        "target_kind": Kind.IN_PLACE,
        "reason": "queue lost",
        "confirm": "prod-queue",
        "replace": "on",
        "key_pattern": "rq:queue:*",
    }

    response = logged_in(client, operator).post(create_url(redis_backup), data)

    run = RestoreRun.objects.get()
    assert response.status_code == 302
    assert run.options == {"replace": True, "key_pattern": "rq:queue:*"}
    assert run.status == Status.AWAITING_APPROVAL
    page = client.get(reverse("restores:run_detail", args=[run.pk])).content.decode()
    assert "replace existing keys" in page and 'only keys matching <span class="mono">rq:queue:*</span>' in page


def test_a_bad_key_pattern_is_a_form_error(client: Client, operator: User, redis_backup: BackupArtifact) -> None:
    data = {"target_kind": Kind.IN_PLACE, "reason": "queue lost", "confirm": "prod-queue", "key_pattern": "rq:[ab"}

    response = logged_in(client, operator).post(create_url(redis_backup), data)

    assert response.status_code == 200
    assert "unclosed [ in the key pattern" in response.content.decode()
    assert not RestoreRun.objects.exists()


def test_the_page_of_a_redis_backup_shows_keys_per_type(
    client: Client, viewer: User, redis_backup: BackupArtifact
) -> None:
    BackupArtifact.objects.filter(pk=redis_backup.pk).update(
        row_counts={"hash": 3, "list": 2}, archive_entries=5, stderr_tail="1 keys vanished during the scan"
    )

    page = logged_in(client, viewer).get(reverse("backups:artifact_detail", args=[redis_backup.pk])).content.decode()

    assert "Keys per type" in page and "Rows per table" not in page
    assert "Snapshot notes" in page and "1 keys vanished during the scan" in page
