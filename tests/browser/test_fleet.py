"""The backups list of a fleet (issue #11), in a real browser: its datastore filter is a field that suggests the
names that match as one types, not a list of every datastore, and choosing one filters the history."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from inventory.models import Environment
from tests.browser.conftest import Console
from tests.factories import DatastoreFactory

pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)


def test_the_datastore_filter_suggests_names_as_one_types_and_filters_the_history(console: Console) -> None:
    staging = Environment.objects.get(name="staging")
    for i in range(40):
        DatastoreFactory(environment=staging, name=f"fleet-{i:02}", url_env=f"FLEET_{i}_URL")
    page = console.session()
    page.goto("/backups/")
    console.log_in(page, "olga")
    options = page.locator("#datastore-options option")
    expect(page.locator("#artifact-results")).to_contain_text("prod-analytics")  # every datastore's backups
    assert page.locator("select#id_datastore").count() == 0  # no select of the whole fleet

    field = page.get_by_label("Datastore", exact=True)
    field.press_sequentially("prod-b", delay=30)
    expect(options).to_have_count(1)
    assert options.first.get_attribute("value") == "prod-billing"
    field.fill("")
    field.press_sequentially("fleet", delay=30)
    expect(options).to_have_count(20)  # at most 20 suggestions, whatever the fleet

    field.fill("prod-db")
    field.press("Enter")
    expect(page).to_have_url(re.compile(r"/backups/\?datastore=prod-db$"))
    results = page.locator("#artifact-results")
    expect(results).to_contain_text("prod-db")
    expect(results).not_to_contain_text("prod-analytics")

    field.fill("prod-nope")
    field.press("Enter")
    expect(page.get_by_text("No datastore is named “prod-nope”.")).to_be_visible()
