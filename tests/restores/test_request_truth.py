"""What a restore's pages say is true (issue #11): a database name that exists is refused in the form at once, the
page after a request words its notice from the run's state, and the timeline shows each step once, in the
reader's language, with the safety backup as a step of its own."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from backups.models import BackupArtifact
from dr_console.jobs import job_transition
from dr_console.notes import Note
from inventory.models import Environment
from restores.models import RestoreRun
from restores.services import restore_run_approve, restore_run_request
from tests.factories import BackupArtifactFactory, DatastoreFactory, DatastoreHealthFactory, EnvironmentFactory
from tests.support.postgres import SourceDb

pytestmark = pytest.mark.django_db
Status, Kind = RestoreRun.Status, RestoreRun.TargetKind


@pytest.fixture
def backup() -> BackupArtifact:
    prod = EnvironmentFactory(name="prod", protected=True, required_approvals=1)
    datastore = DatastoreFactory(name="prod-db", environment=prod)
    DatastoreHealthFactory(datastore=datastore)  # a worker reached it: which database it is is known
    return BackupArtifactFactory(datastore=datastore, succeeded=True)  # type: ignore[no-any-return]


def create_url(backup: BackupArtifact) -> str:
    return f"{reverse('restores:run_create')}?artifact={backup.pk}"


def test_the_form_refuses_a_database_name_that_exists_next_to_the_field(
    client: Client, operator: Any, source_db: SourceDb
) -> None:
    datastore = DatastoreFactory(name="staging-db", url_env=source_db.url_env)
    backup = BackupArtifactFactory(datastore=datastore, succeeded=True)
    client.force_login(operator)
    fields = {"target_kind": Kind.NEW_DATABASE, "reason": "x", "jobs": 1}
    response = client.post(create_url(backup), {**fields, "new_database_name": source_db.name})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert f"database {source_db.name} already exists on 127.0.0.1:5432" in errors["new_database_name"][0]
    assert not RestoreRun.objects.exists()
    # The name rule is worded once, the same in the form as on the command line.
    response = client.post(create_url(backup), {**fields, "new_database_name": "9 bad"})
    assert response.context["form"].errors["new_database_name"] == [
        "'9 bad' is not a valid database name: use letters, digits, _ $ and -, at most 63 characters, "
        "starting with a letter or _"
    ]


def test_the_notice_after_a_request_says_what_is_true_when_the_page_is_drawn(
    client: Client, operator: Any, backup: BackupArtifact
) -> None:
    """A run that failed in the second between the request and the page is not "queued"."""
    staging = DatastoreFactory(name="staging-db", environment=EnvironmentFactory(name="staging"))
    Environment.objects.filter(name="prod").update(protected_data=False)  # queued at once, no approval
    client.force_login(operator)
    response = client.post(
        create_url(backup),
        {"target_kind": Kind.DATASTORE, "target_datastore": staging.pk, "reason": "copy prod to staging", "jobs": 1},
    )
    run = RestoreRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("restores:run_detail", args=[run.pk])
    job_transition(RestoreRun, pk=run.pk, to=Status.FAILED, error="environment variable TEST_DB1_URL is not set")
    page = client.get(response["Location"]).content.decode()
    notice = re.search(r'id="requested-notice">([^<]*)<', page)
    assert notice is not None
    assert notice[1] == f"Restore #{run.pk} requested; it has already ended: its status is below."
    assert "queued" not in notice[1]
    # No log on the page: it does not point at one.
    assert "Read the log below" not in page and "Fix the cause, then request the restore again" in page
    assert 'id="requested-notice"' not in client.get(response["Location"]).content.decode()  # said once


def approved_run(backup: BackupArtifact, operator: Any, approver: Any) -> RestoreRun:
    run = restore_run_request(
        artifact=backup,
        target_kind=Kind.IN_PLACE,
        requested_by=operator,
        reason="bad migration",
        confirm="prod-db",
        enqueue=False,
    )
    restore_run_approve(run_id=run.pk, approver=approver, comment="looks right", enqueue=False)
    job_transition(RestoreRun, pk=run.pk, to=Status.RUNNING, event_note=Note("launched_on", {"host": "vm"}))
    return run


def timeline(client: Client, run: RestoreRun, **headers: Any) -> str:
    page = client.get(reverse("restores:run_detail", args=[run.pk]), **headers).content.decode()
    start = page.index('id="timeline-heading-')
    return page[start : page.index("</table>", start)]


def test_the_timeline_shows_each_step_once_and_only_the_current_one_in_progress(
    client: Client, operator: Any, approver: Any, backup: BackupArtifact
) -> None:
    run = approved_run(backup, operator, approver)
    safety = BackupArtifactFactory(
        datastore=backup.datastore, succeeded=True, trigger=f"safety backup of restore #{run.pk}"
    )
    RestoreRun.objects.filter(pk=run.pk).update(safety_backup=safety)
    client.force_login(operator)
    lines = timeline(client, run)
    # The approval once, with its approver and comment; no second "Approved · approved by ..." line.
    assert lines.count("Approved") == 1 and "looks right" in lines and "approved by" not in lines
    assert '<span class="badge badge-done">Requested</span>' in lines  # a past step is done, not "…"
    assert lines.count("badge-info") == 1  # only the step it is in now
    assert "launched on vm" in lines
    assert f'Safety backup <a href="{reverse("backups:artifact_detail", args=[safety.pk])}">#{safety.pk}</a>' in lines


def test_timeline_notes_are_in_the_readers_language(
    client: Client, operator: Any, approver: Any, backup: BackupArtifact
) -> None:
    run = approved_run(backup, operator, approver)
    client.force_login(operator)
    lines = timeline(client, run, HTTP_ACCEPT_LANGUAGE="es")
    assert "lanzada en vm" in lines and "launched on" not in lines
    # The English text stays on the row, for logs and exports.
    assert run.events.get(new_status=Status.RUNNING).message == "launched on vm"


def test_check_names_and_details_are_in_the_readers_language(
    client: Client, operator: Any, approver: Any, backup: BackupArtifact
) -> None:
    from dr_console.notes import check_item

    run = approved_run(backup, operator, approver)
    checks = [
        check_item(True, name="SELECT 1", detail=Note("returned", {"value": "1"})),
        check_item(True, name=Note("check_row_counts"), detail=Note("tables_match", {"count": "4"})),
    ]
    RestoreRun.objects.filter(pk=run.pk).update(checks=checks)
    client.force_login(operator)
    page = client.get(reverse("restores:run_detail", args=[run.pk]), HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "recuentos de filas" in page and "tablas que coinciden con la copia: 4" in page and "devolvió 1" in page
    assert "row counts" not in page and "tables match" not in page and "returned 1" not in page


def test_a_database_name_with_a_trailing_newline_is_refused() -> None:
    """`$` in a pattern matches before a final newline: "check\\n" would have created a database named so."""
    from restores.services import database_name_problem

    assert database_name_problem("check") == ""
    assert "is not a valid database name" in database_name_problem("check\n")
