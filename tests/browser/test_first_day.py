"""A new user's first day (issue #11), in a real browser, in English and in Spanish: a datastore is configured
with a URL variable the workers do not have; *Back up now*; within seconds the dashboard shows the failed attempt
and the misconfiguration at the top, and the datastore page says the same. No green "on schedule" next to it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from inventory.config import config_apply
from tests.browser.conftest import JOB_TIMEOUT_MS, Console, Screenshots
from tests.browser.pages import row_with_link

pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)

WORDS = {
    "en": {
        "back_up": "Back up now",
        "attention": "Needs attention",
        "failed": re.compile(r"Last backup attempt #\d+ failed .*: environment variable NEWCO_DATABASE_URL is not set"),
        "unconfigured": re.compile(
            r"Not configured \(checked .* on .*\): (environment variable NEWCO_DATABASE_URL|the same cause as)"
        ),
        "summary": re.compile(r"\d+ of \d+ datastores needs? attention"),
        "health": "Health",
        "first_due": "First backup due",
    },
    "es": {
        "back_up": "Respaldar ahora",
        "attention": "Necesita atención",
        "failed": re.compile(
            r"El último intento de copia #\d+ falló .*: environment variable NEWCO_DATABASE_URL is not set"
        ),
        "unconfigured": re.compile(
            r"Sin configurar \(comprobado .* en .*\): (environment variable NEWCO_DATABASE_URL|la misma causa que la)"
        ),
        "summary": re.compile(r"\d+ de \d+ almacenes de datos necesitan? atención"),
        "health": "Salud",
        "first_due": "Primera copia prevista",
    },
}


@pytest.mark.worker
@pytest.mark.parametrize("language", ["en", "es"])
def test_first_day_a_datastore_without_its_variable_shows_at_the_top_within_seconds(
    console: Console, celery_worker_thread: None, screenshots: Screenshots, monkeypatch: Any, language: str
) -> None:
    words = WORDS[language]
    monkeypatch.delenv("NEWCO_DATABASE_URL", raising=False)
    page = console.session(locale="es-ES" if language == "es" else "en-US")
    page.goto("/")
    console.log_in(page, "olga", language=language)

    # loadconfig: the new datastore, whose first backup is not due yet: no red banner for it.
    config_apply(
        {
            "datastores": [
                {"name": "newco-db", "environment": "staging", "kind": "postgres", "url_env": "NEWCO_DATABASE_URL"}
            ]
        }
    )
    page.goto("/?q=newco")
    row = row_with_link(page, "newco-db")
    expect(row).to_contain_text(words["first_due"])

    # Back up now: the row follows the backup to its failure, then the dashboard lists it first.
    row.get_by_role("button", name=words["back_up"]).click()
    expect(row.locator(".last-attempt")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    page.goto("/")
    attention = page.locator("#attention")
    expect(attention.get_by_role("heading", level=2)).to_contain_text(words["attention"])
    expect(page.locator("#objectives-summary")).to_contain_text(words["summary"])
    problems = attention.locator("tr", has=page.get_by_role("link", name="newco-db", exact=True)).locator(".problems")
    expect(problems).to_contain_text(words["failed"])
    # The misconfiguration, found by a worker's health check (asked for when the datastore was configured and
    # again after the failed backup): a reload or two at most.
    for _attempt in range(10):
        if problems.get_by_text(words["unconfigured"]).count():
            break
        page.wait_for_timeout(1000)
        page.reload()
    expect(problems).to_contain_text(words["unconfigured"])
    # What needs attention comes before everything else on the page.
    assert page.evaluate(
        "document.querySelector('#attention').getBoundingClientRect().top"
        " < (document.querySelector('#healthy')?.getBoundingClientRect().top ?? Infinity)"
    )
    screenshots.take(page, "dashboard-first-day", language=language, of=attention)

    # Its page says the same, with the health check's details.
    attention.get_by_role("link", name="newco-db", exact=True).click()
    expect(page.locator("#attention")).to_contain_text(words["failed"])
    expect(page.locator("#health")).to_contain_text("NEWCO_DATABASE_URL")
    expect(page.locator("#health").get_by_role("heading", level=2)).to_have_text(words["health"])
    screenshots.take(page, "datastore-first-day", language=language)


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_header_fits_one_row_at_1280_px_and_the_chart_labels_are_readable(console: Console, language: str) -> None:
    page = console.session(locale="es-ES" if language == "es" else "en-US")
    page.goto("/")
    console.log_in(page, "olga", language=language)
    middles = page.evaluate(
        "['.topbar .brand', '.topbar nav a:last-child', '.topbar .session']"
        ".map(s => { const r = document.querySelector(s).getBoundingClientRect(); return (r.top + r.bottom) / 2; })"
    )
    assert max(middles) - min(middles) < 10, f"the header wraps at 1280 px: {middles}"
    page.goto("/datastores/prod-db/")
    label = page.locator("#chart .chart-label").first
    size = float(label.evaluate("e => parseFloat(getComputedStyle(e).fontSize) * e.getScreenCTM().a"))
    assert size >= 11, f"chart labels are {size:.1f} px"


def test_the_backups_list_reads_on_a_phone_without_scrolling_sideways(console: Console) -> None:
    from tests.browser.conftest import PHONE

    page = console.session(viewport=PHONE)
    page.goto("/backups/")
    console.log_in(page, "olga")
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth"), "the backups table scrolls sideways on a phone"
    row = page.locator("tbody tr").first
    expect(row.get_by_text("Size", exact=True)).to_be_visible()
    expect(row.get_by_text("Started", exact=True)).to_be_visible()
