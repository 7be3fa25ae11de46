"""The console in a real browser: what an operator and an approver see and do, in English and in Spanish, on a
laptop and on a phone. Assertions are about what is on the screen."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import JOB_TIMEOUT_MS, PHONE, Console, Screenshots
from tests.browser.pages import go_to, mark_page, number_in, row_with_cell, row_with_link, still_marked
from tests.support.postgres import SourceDb

# Every test starts its ids at 1, so the pages (and screenshots) look the same whichever test runs first.
pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)


@pytest.mark.worker
def test_operator_backs_up_and_an_approver_approves_a_prod_restore(
    console: Console, celery_worker_thread: None, source_db: SourceDb, screenshots: Screenshots
) -> None:
    olga = console.session()

    # Any page asks for a login first.
    olga.goto("/")
    expect(olga.get_by_role("heading", name="Log in")).to_be_visible()
    screenshots.take(olga, "login")
    console.log_in(olga, "olga")

    # The dashboard: "Back up now", and the row follows the job to its end without a reload.
    expect(olga.get_by_role("heading", level=1)).to_have_text("Dashboard")
    row = row_with_link(olga, "prod-db")
    mark_page(olga)
    row.get_by_role("button", name="Back up now").click()
    expect(row.get_by_role("status")).to_have_text(re.compile(r"^Backup #\d+ of prod-db queued\.$"))
    backup_id = number_in(row.get_by_role("status"), r"#(\d+)")
    expect(row.get_by_role("button", name="Back up now")).to_be_disabled()  # one backup at a time
    last_backup = row.get_by_role("cell").first
    expect(last_backup.get_by_role("link", name=f"#{backup_id}")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(last_backup).to_contain_text("Verified", timeout=JOB_TIMEOUT_MS)  # the verification follows
    expect(row).to_contain_text("Within RPO")
    expect(row.get_by_role("button", name="Back up now")).to_be_enabled()
    assert still_marked(olga), "the dashboard reloaded instead of updating the row"
    screenshots.take(olga, "dashboard")

    # The history lists it; the datastore filter updates the list in place and the address can be shared.
    go_to(olga, "Backups")
    expect(olga.get_by_role("navigation").get_by_role("link", name="Backups")).to_have_attribute("aria-current", "page")
    backup_row = row_with_link(olga, f"#{backup_id}")
    expect(backup_row).to_contain_text("Succeeded")
    expect(backup_row).to_contain_text("Verified")
    screenshots.take(olga, "backups")
    mark_page(olga)
    datastore_filter = olga.get_by_label("Datastore", exact=True)  # typed, with suggestions: a fleet has hundreds
    datastore_filter.fill("prod-db")
    datastore_filter.press("Enter")
    expect(olga).to_have_url(re.compile(r"/backups/\?datastore=prod-db$"))
    expect(olga.get_by_role("row")).to_have_count(1 + 31)  # the header, 30 nightly backups and this one
    assert still_marked(olga)

    # The backup's page: what was recorded, and "Restore…".
    backup_row.get_by_role("link", name=f"#{backup_id}").click()
    expect(olga.get_by_role("heading", level=1)).to_have_text(f"Backup #{backup_id} of prod-db (prod)")
    expect(row_with_cell(olga, "public.chunks").get_by_role("cell").last).to_have_text("2,000")
    screenshots.take(olga, "backup-detail")

    with source_db.connect() as conn:
        conn.execute("TRUNCATE chunks")  # the incident: a bad job emptied a table in production

    # The restore form says what will be overwritten; a missing reason or confirmation is refused in the form.
    olga.get_by_role("link", name="Restore…").click()
    form_url = olga.url
    expect(olga.get_by_role("heading", level=1)).to_have_text(f"Restore backup #{backup_id} of prod-db")
    # Nothing is chosen for the operator: "in place" is the most destructive target.
    expect(olga.get_by_label("Its own datastore (in place)")).not_to_be_checked()
    expect(olga.get_by_text("Choose where to restore into; this will then say what it overwrites.")).to_be_visible()
    olga.get_by_label("Its own datastore (in place)").check()
    expect(olga.get_by_text("This replaces every table of prod-db (environment prod, protected)")).to_be_visible()
    olga.get_by_role("button", name="Request restore (needs approval)").click()
    expect(olga.get_by_text("This field is required.")).to_be_visible()
    expect(olga.get_by_text("Type prod-db exactly: it is in the protected environment prod.")).to_be_visible()
    olga.goto(form_url)
    # Choosing another kind of target says at once what it means, and what the button will do.
    olga.get_by_label("A new database").check()
    expect(olga.get_by_text("Nothing is overwritten, so no approval is needed.")).to_be_visible()
    expect(olga.get_by_role("button", name="Request restore", exact=True)).to_be_visible()
    expect(olga.get_by_label("New database name")).to_be_visible()
    olga.get_by_label("Its own datastore (in place)").check()
    expect(olga.get_by_label("New database name")).to_be_hidden()
    olga.get_by_label("Reason").fill("A bad job truncated chunks at 09:12; back to last night's state")
    olga.get_by_label("Type prod-db to confirm").fill("prod-db")
    screenshots.take(olga, "restore-form")
    olga.get_by_role("button", name="Request restore (needs approval)").click()

    # The run's page: waiting for someone else's approval; the requester may not give it.
    heading = olga.get_by_role("heading", level=1)
    expect(heading).to_have_text(re.compile(r"^Restore #\d+ into prod-db$"))
    run_id = number_in(heading, r"#(\d+)")
    expect(olga.get_by_role("status").first).to_contain_text(f"Restore #{run_id} requested.")
    status = olga.get_by_role("region", name="Status")
    expect(status).to_contain_text("Awaiting approval")
    expect(olga.get_by_text("You requested this restore, so someone else must approve it")).to_be_visible()
    mark_page(olga)

    # Abel, an approver, in a browser session of his own: the Approvals page lists it, and he approves.
    abel = console.session()
    abel.goto("/")
    console.log_in(abel, "abel")
    go_to(abel, "Approvals")
    expect(abel.get_by_role("heading", level=1)).to_have_text("Restores awaiting approval")
    expect(abel.get_by_role("article")).to_have_count(2)  # and maria's request from earlier
    card = abel.get_by_role("article").filter(has_text=f"Restore #{run_id} into prod-db")
    expect(card).to_contain_text("A bad job truncated chunks")
    screenshots.take(abel, "approvals")
    card.get_by_label("Comment (optional)").fill("Checked the backup with Olga")
    card.get_by_role("button", name=f"Approve restore #{run_id}").click()
    expect(abel.get_by_role("status")).to_contain_text(f"You approved restore #{run_id}: it is queued")
    expect(abel.get_by_role("article")).to_have_count(1)

    # Olga's page, untouched, follows the run to its end: succeeded, with its checklist and safety backup.
    expect(status).to_contain_text("Succeeded", timeout=JOB_TIMEOUT_MS)
    checks = olga.get_by_role("table").filter(has=olga.get_by_role("columnheader", name="Check"))
    for name in ("SELECT 1", "SELECT now()", "row counts", "GET /healthz", "GET /readyz"):
        expect(row_with_cell(checks, name)).to_contain_text("passed")
    expect(olga.get_by_text("Safety backup of the target, taken just before it was overwritten")).to_be_visible()
    expect(row_with_cell(olga, "abel")).to_contain_text("Checked the backup with Olga")  # in the timeline
    assert still_marked(olga), "the restore's page reloaded instead of updating"
    screenshots.take(olga, "restore-detail")
    with source_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (2000,)

    # The restore history and the audit log tell the story.
    go_to(olga, "Restores")
    expect(row_with_link(olga, f"#{run_id}")).to_contain_text("Succeeded")
    screenshots.take(olga, "restores")
    go_to(olga, "Audit log")
    for action, actor in (("Restore approved", "abel"), ("Restore requested", "olga"), ("Backup requested", "olga")):
        expect(olga.get_by_role("row").filter(has_text=action).filter(has_text=actor).first).to_be_visible()
    screenshots.take(olga, "audit-log")


# Each page in Spanish: where to go, and what it says.
SPANISH_PAGES = [
    ("backups", "/backups/", "Copias de seguridad", "Completada"),
    ("backup-detail", "/backups/{backup}/", "Copia de seguridad #{backup} de prod-db (prod)", "Filas por tabla"),
    ("restores", "/restores/", "Restauraciones", "Pendiente de aprobación"),
    ("restore-detail", "/restores/{restore}/", "Restauración #{restore} en ", "Comprobaciones tras la restauración"),
    ("approvals", "/restores/approvals/", "Restauraciones pendientes de aprobación", "Aprobar la restauración"),
    ("audit-log", "/audit/", "Registro de auditoría", "Restauración solicitada"),
]


@pytest.mark.parametrize("history_language", ["es"])
def test_spanish_pages_follow_the_browser_and_the_switcher_changes_them(
    console: Console, screenshots: Screenshots
) -> None:
    page = console.session(locale="es-ES")
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Iniciar sesión")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    screenshots.take(page, "login", language="es")
    console.log_in(page, "abel", language="es")  # an approver: the approvals page shows its buttons
    expect(page.get_by_role("heading", level=1)).to_have_text("Panel")
    expect(row_with_link(page, "prod-analytics")).to_contain_text("Supera el RPO")
    screenshots.take(page, "dashboard", language="es")

    history = console.history
    ids = {"backup": history.prod_db_backup.pk, "restore": history.succeeded.pk}
    for name, path, heading, text in SPANISH_PAGES:
        page.goto(path.format(**ids))
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading.format(**ids))
        expect(page.get_by_text(text).filter(visible=True).first).to_be_visible()
        screenshots.take(page, name, language="es")

    # An approver rejects maria's request, saying why.
    page.goto("/restores/approvals/")
    card = page.get_by_role("article").filter(has_text=f"Restauración #{history.awaiting.pk} en prod-analytics")
    card.get_by_label("Motivo del rechazo").fill("Primero hay que corregir la importación")
    card.get_by_role("button", name=f"Rechazar la restauración #{history.awaiting.pk}").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Rechazó la restauración #{history.awaiting.pk}; se ha avisado al solicitante."
    )
    expect(page.get_by_text("No hay ninguna restauración pendiente de aprobación.")).to_be_visible()

    page.goto(f"/restores/new/?artifact={history.prod_db_backup.pk}")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Restaurar la copia de seguridad #{history.prod_db_backup.pk} de prod-db"
    )
    page.locator("#id_target_kind_0").check()  # in place: the operator chooses it
    page.get_by_label("Motivo").fill("Un proceso erróneo vació la tabla chunks; volver a la copia de anoche")
    page.get_by_label("Escriba prod-db para confirmar").fill("prod-db")
    expect(page.get_by_role("button", name="Solicitar restauración (requiere aprobación)")).to_be_visible()
    screenshots.take(page, "restore-form", language="es")

    # The switcher wins over the browser's language, for the rest of the session.
    page.get_by_label("Idioma").select_option("en")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Restore backup #{history.prod_db_backup.pk} of prod-db")
    go_to(page, "Backups")
    expect(page.get_by_role("heading", level=1)).to_have_text("Backups")
    page.get_by_label("Language").select_option("es")
    expect(page.get_by_role("heading", level=1)).to_have_text("Copias de seguridad")


def fits_the_width(page: Page) -> bool:
    """No sideways scrolling of the page itself (a wide table may scroll inside its own box)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_pages_fit_a_phone(console: Console, screenshots: Screenshots) -> None:
    page = console.session(viewport=PHONE)
    page.goto("/")
    assert fits_the_width(page), "the login page scrolls sideways on a phone"
    console.log_in(page, "olga")
    screenshots.take(page, "dashboard-phone")
    assert fits_the_width(page), "the dashboard scrolls sideways on a phone"
    for name in ("prod-db", "staging-reports"):
        row = row_with_link(page, name)
        button = row.get_by_role("button", name="Back up now").bounding_box()
        assert button is not None and 0 <= button["x"] <= button["x"] + button["width"] <= PHONE["width"]
        expect(row.get_by_text("Last successful backup")).to_be_visible()  # each value says what it is

    history = console.history
    for path in (
        "/backups/",
        f"/backups/{history.prod_db_backup.pk}/",
        f"/restores/new/?artifact={history.prod_db_backup.pk}",
        f"/restores/{history.succeeded.pk}/",
        "/restores/",
        "/restores/approvals/",
        "/audit/",
    ):
        page.goto(path)
        assert fits_the_width(page), f"{path} scrolls sideways on a phone"
