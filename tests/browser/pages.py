"""Finding things on a page the way a person does: by role, by the text of a link or a cell."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page


def mark_page(page: Page) -> None:
    """Leave a mark in the loaded document: it is gone once the page is reloaded or left."""
    page.evaluate("window.drConsoleMark = true")


def still_marked(page: Page) -> bool:
    return bool(page.evaluate("window.drConsoleMark === true"))


def row_with_link(page: Page, name: str) -> Locator:
    """The table row holding the link `name` (a datastore's name, a backup's "#12")."""
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


def row_with_cell(scope: Page | Locator, text: str) -> Locator:
    """The table row (in `scope`) with a cell reading exactly `text`."""
    page = scope if isinstance(scope, Page) else scope.page
    return scope.get_by_role("row").filter(has=page.get_by_role("cell", name=text, exact=True))


def go_to(page: Page, name: str) -> None:
    """Follow the main navigation."""
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()


def number_in(locator: Locator, pattern: str) -> str:
    match = re.search(pattern, locator.inner_text())
    assert match is not None, f"{pattern!r} not in {locator.inner_text()!r}"
    return match[1]
