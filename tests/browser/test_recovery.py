"""The runbook's recovery pages in a real browser, against the sample application (its real API, RQ worker,
PostgreSQL database and Redis): backing up and restoring the queue Redis, the Queues page with real failed jobs,
a reprocess batch built as a draft, sent and followed to its end, and the datastore page (schedule, drills,
retention preview). `make screenshots` also takes each page in Spanish for the Spanish runbook."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect
from rq import Queue
from rq.registry import FailedJobRegistry

from drills.models import DrillRun
from inventory.models import Datastore
from sampleapp.config import QUEUE_NAME
from tests.browser.conftest import JOB_TIMEOUT_MS, Console, Screenshots
from tests.browser.pages import go_to, mark_page, number_in, row_with_cell, row_with_link, still_marked
from tests.factories import DatastoreFactory
from tests.support.sampleapp import SampleApp

pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)

# Before Redis was lost: 80 documents done, 25 waiting in the queue, 9 being processed; and the jobs of 6 more
# failed while the documents table was being restored.
DONE, WAITING, PROCESSING, FAILED = 80, 25, 9, 6
LOST = WAITING + PROCESSING + FAILED


def prod_runs_the_sample_application(console: Console, app: SampleApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """prod is the sample application: its API, its PostgreSQL as prod-db, its Redis as prod-redis. The URLs and
    the token are in the environment, as in production."""
    monkeypatch.setenv("PROD_DATABASE_URL", app.database_url)
    monkeypatch.setenv("PROD_REDIS_URL", app.redis_url)
    monkeypatch.setenv("PROD_API_TOKEN", app.token)
    prod = console.history.prod
    prod.api_url = app.url
    prod.api_token_env = "PROD_API_TOKEN"
    prod.postgres_datastore = console.history.prod_db
    prod.redis_datastore = DatastoreFactory(
        environment=prod, name="prod-redis", kind=Datastore.Kind.REDIS, url_env="PROD_REDIS_URL", description="RQ"
    )
    prod.save()


def fill_redis_restore(page: Page, reason: str = "Redis lost its data at 09:12; back to the last snapshot") -> None:
    """The Redis restore form, by the fields' ids: the same in every language."""
    page.locator("#id_target_kind_0").check()  # in place: nothing is preselected
    page.locator("#id_replace").check()
    page.locator("#id_key_pattern").fill("rq:*")
    page.locator("#id_reason").fill(reason)
    # The part saying what the restore does (with the confirmation field) follows each choice: type the
    # confirmation once it has followed the last one.
    expect(page.locator("#restore-impact")).to_contain_text("rq:*")
    page.locator("#id_confirm").fill("prod-redis")


def lose_the_queue(app: SampleApp) -> None:
    """The incident as the application's data shows it: PENDING and PROCESSING documents whose jobs are gone, and
    real failed jobs, whose worker found no documents table (pg_restore --clean had dropped it)."""
    documents = app.seed(DONE + WAITING + PROCESSING + FAILED)
    ids = [document_id for _, document_id in documents]
    with app.connect() as conn:
        conn.execute("UPDATE documents SET status = 'READY' WHERE id <= %s", [ids[DONE - 1]])
        conn.execute(
            "UPDATE documents SET status = 'PROCESSING' WHERE id > %s AND id <= %s",
            [ids[DONE - 1], ids[DONE + PROCESSING - 1]],
        )
        conn.execute("ALTER TABLE documents RENAME TO documents_being_restored")
        try:
            connection = app.redis()
            queue = Queue(QUEUE_NAME, connection=connection)
            for workspace_id, document_id in documents[-FAILED:]:
                queue.enqueue("sampleapp.jobs.reprocess_document", workspace_id, document_id)
            failed = FailedJobRegistry(queue=queue)
            deadline = time.monotonic() + 30
            while failed.count < FAILED:
                assert time.monotonic() < deadline, f"the jobs did not fail: {app.log_tail()}"
                time.sleep(0.05)
        finally:
            conn.execute("ALTER TABLE documents_being_restored RENAME TO documents")


@pytest.mark.worker
def test_an_operator_backs_up_the_queue_redis_and_reprocesses_what_it_lost(
    console: Console,
    celery_worker_thread: None,
    sampleapp: SampleApp,
    monkeypatch: pytest.MonkeyPatch,
    screenshots: Screenshots,
) -> None:
    prod_runs_the_sample_application(console, sampleapp, monkeypatch)
    lose_the_queue(sampleapp)
    olga = console.session()
    olga.goto("/")
    console.log_in(olga, "olga")
    spanish = SpanishPages(console, screenshots)

    # The queue Redis is a datastore like the others: backed up from the dashboard, verified, restorable.
    row = row_with_link(olga, "prod-redis")
    row.get_by_role("button", name="Back up now").click()
    expect(row).to_contain_text("Verified", timeout=JOB_TIMEOUT_MS)
    backup = row.get_by_role("cell").first.get_by_role("link")
    backup_id = number_in(backup, r"#(\d+)")
    backup.click()
    expect(olga.get_by_role("heading", level=1)).to_have_text(f"Backup #{backup_id} of prod-redis (prod)")
    expect(row_with_cell(olga, "hash").get_by_role("cell").last).not_to_have_text("0")  # RQ's jobs are hashes
    screenshots.take(olga, "redis-backup")
    spanish.take(olga.url, "redis-backup", f"Copia de seguridad #{backup_id} de prod-redis (prod)")
    olga.get_by_role("link", name="Restore…").click()
    expect(olga.get_by_label("Its own datastore (in place)")).not_to_be_checked()  # the operator chooses
    fill_redis_restore(olga)
    expect(olga.get_by_text("Only the keys matching rq:*.")).to_be_visible()
    expect(olga.get_by_role("button", name="Request restore (needs approval)")).to_be_visible()
    screenshots.take(olga, "redis-restore-form")
    if screenshots.enabled:
        page = spanish.open(olga.url, f"Restaurar la copia de seguridad #{backup_id} de prod-redis")
        fill_redis_restore(page, reason="Redis perdió sus datos a las 09:12; volver a la última instantánea")
        screenshots.take(page, "redis-restore-form", language="es")

    # The Queues page: what the application's Redis holds now, the failed jobs with their error, the worker.
    go_to(olga, "Queues")
    olga.get_by_role("link", name="prod", exact=True).click()
    expect(olga.get_by_role("heading", level=1)).to_have_text("Queues of prod")
    workers = olga.get_by_role("table").filter(has=olga.get_by_role("columnheader", name="Last heartbeat"))
    expect(workers.get_by_role("row")).to_have_count(2)  # the application's worker, and the header
    olga.get_by_role("link", name=f"Failed jobs of {QUEUE_NAME}").click()
    failed_jobs = olga.get_by_role("table").filter(has=olga.get_by_role("columnheader", name="Error"))
    expect(failed_jobs.get_by_role("row")).to_have_count(1 + FAILED)
    expect(failed_jobs).to_contain_text('relation "documents" does not exist')
    expect(olga.get_by_role("button", name=f"Requeue all {FAILED} failed jobs")).to_be_visible()
    screenshots.take(olga, "queues")
    spanish.take(olga.url, "queues", "Colas de prod")

    # Reprocess: a batch from the environment's query, built as a draft and shown before anything is sent.
    go_to(olga, "Reprocess")
    olga.get_by_role("link", name="Build a batch").first.click()
    olga.get_by_label("Environment", exact=True).select_option("prod")
    expect(olga.get_by_label("The documents the environment's query returns")).to_be_checked()
    expect(olga.get_by_label("Paste the CSV")).to_be_hidden()  # the CSV's fields only for a CSV
    olga.get_by_label("A list of workspace_id,document_id").check()
    expect(olga.get_by_label("Paste the CSV")).to_be_visible()
    olga.get_by_label("The documents the environment's query returns").check()
    screenshots.take(olga, "reprocess-new")
    if screenshots.enabled:
        page = spanish.open(olga.url, "Crear un lote de reprocesamiento")
        page.locator("#id_environment").select_option("prod")
        screenshots.take(page, "reprocess-new", language="es")
    olga.get_by_role("button", name="Build the batch").click()
    expect(olga.get_by_role("heading", level=1)).to_have_text("Reprocess batch #1 for prod")
    expect(olga.get_by_text("Nothing has been sent. Check the documents below, then send the batch.")).to_be_visible()
    items = olga.get_by_role("table").filter(has=olga.get_by_role("columnheader", name="Workspace"))
    expect(items.get_by_role("row")).to_have_count(1 + LOST)
    assert sampleapp.accepted_counts() == dict.fromkeys(sampleapp.statuses(), 0), "a draft sends nothing"
    screenshots.take(olga, "reprocess-draft")
    spanish.take(olga.url, "reprocess-draft", "Lote de reprocesamiento #1 para prod")

    # Send: the progress follows the batch to its end without a reload; the application processes every one.
    olga.get_by_role("button", name=f"Send {LOST} documents").click()
    expect(olga.get_by_role("status").first).to_have_text(f"Batch #1 is sending {LOST} documents.")
    mark_page(olga)
    expect(olga.get_by_text("Every document was accepted by the application.")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(olga.get_by_role("progressbar")).to_have_attribute("value", str(LOST))
    assert still_marked(olga), "the batch's page reloaded instead of updating"
    expect(olga.get_by_role("button", name="Send the")).to_have_count(0)  # nothing is left to send again
    assert set(sampleapp.wait_for_statuses("READY", timeout=60).values()) == {"READY"}
    assert sorted(set(sampleapp.accepted_counts().values())) == [0, 1]  # each lost one sent once, the rest never
    olga.reload()  # the finished page without the "is sending" message
    screenshots.take(olga, "reprocess-batch")
    spanish.take(olga.url, "reprocess-batch", "Lote de reprocesamiento #1 para prod")


def test_the_datastore_page_shows_the_schedule_drills_and_what_a_retention_policy_would_expire(
    console: Console, screenshots: Screenshots
) -> None:
    olga = console.session()
    olga.goto("/")
    console.log_in(olga, "olga")
    olga.get_by_role("link", name="prod-db", exact=True).click()
    expect(olga.get_by_role("heading", level=1)).to_have_text("Datastore prod-db (prod)")
    schedule = olga.locator("#schedule")
    expect(schedule).to_contain_text("0 3 * * * in Europe/Madrid")
    expect(schedule).to_contain_text("On schedule")
    drills = olga.locator("#drills")
    expect(drills).to_contain_text("Within RTO")
    # Its newest drill: how many nightly drills the history has depends on the hour (tonight's may be still to come).
    newest = DrillRun.objects.filter(datastore__name="prod-db").latest("created_at").pk
    expect(row_with_cell(drills, f"#{newest}").first).to_contain_text("probe: SELECT count(*) > 0 FROM documents")
    screenshots.take(olga, "datastore")

    # A tighter policy, previewed before it is saved: the page says what it would expire and why.
    retention = olga.locator("#retention")
    expect(retention).to_contain_text("What the saved policy does now")
    expect(retention).to_contain_text("0 backups would be expired, 30 kept.")
    retention.get_by_label("Daily", exact=True).fill("7")
    retention.get_by_label("Weekly", exact=True).fill("4")
    expect(retention).to_contain_text("Preview: what this policy would do now (not saved)")
    expect(retention).to_contain_text("backups would be expired")
    expect(retention.get_by_role("row").filter(has_text="Expire").first).to_be_visible()
    screenshots.take(olga, "datastore-retention", of=retention)
    if screenshots.enabled:
        page = SpanishPages(console, screenshots).open(olga.url, "Almacén de datos prod-db (prod)")
        screenshots.take(page, "datastore", language="es")
        saved_policy = page.locator("#retention-preview h3").inner_text()
        page.locator("#id_keep_daily").fill("7")
        page.locator("#id_keep_weekly").fill("4")
        expect(page.locator("#retention-preview h3")).not_to_have_text(saved_policy)  # now the preview's
        screenshots.take(page, "datastore-retention", language="es", of=page.locator("#retention"))


class SpanishPages:
    """The same pages in Spanish, for the Spanish runbook, seen by maria in a Spanish browser. Only when
    screenshots are taken (`make screenshots`): the Spanish pages themselves are tested in test_console.py."""

    def __init__(self, console: Console, screenshots: Screenshots) -> None:
        self.console = console
        self.screenshots = screenshots
        self.page: Page | None = None

    def open(self, url: str, heading: str) -> Page:
        if self.page is None:
            self.page = self.console.session(locale="es-ES")
            self.page.goto("/")
            self.console.log_in(self.page, "maria", language="es")
        self.page.goto(url)
        expect(self.page.get_by_role("heading", level=1)).to_have_text(heading)
        return self.page

    def take(self, url: str, name: str, heading: str) -> None:
        if self.screenshots.enabled:
            self.screenshots.take(self.open(url, heading), name, language="es")
