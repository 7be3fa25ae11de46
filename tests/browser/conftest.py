"""Browser tests: Playwright drives Debian's Chromium against the real console (pytest-django's live_server, a
thread of this process), a real Celery worker and real PostgreSQL.

Playwright's sync API keeps an asyncio loop "running" in this thread while a browser is open. Meanwhile Django
refuses ORM calls from the test unless DJANGO_ALLOW_ASYNC_UNSAFE is set, and keeps this thread's database
connections apart from the ones it uses otherwise. So the browser lives as long as this package's tests only,
the variable is set only meanwhile, and the connections opened meanwhile are closed before the loop stops.

DR_SCREENSHOTS=FOLDER (`make screenshots`) saves a PNG of each page the tests visit into FOLDER (Spanish ones
into FOLDER/es).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from PIL import Image
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    expect,
    sync_playwright,
)

from tests.browser.history import History, console_history, password_of
from tests.support.http import HttpStub
from tests.support.postgres import SourceDb

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MAX_SCREENSHOT_HEIGHT = 1400
SECTION_MARGIN = 16  # around the part of a page a screenshot shows
# How long a page may take to show what a worker did: a poll every 3 s, a backup or a restore of a small database.
JOB_TIMEOUT_MS = 60_000


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for all the browser tests; each test opens its own contexts (sessions) in it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-deps` (apt-get install -y chromium)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        playwright = sync_playwright().start()
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
        finally:
            connections.close_all()  # the ones opened while the loop ran; pytest-django does not see them
            playwright.stop()


# The login page's words in each language the console speaks.
LOGIN_WORDS = {
    "en": ("User name", "Password", "Log in", "Log out"),
    "es": ("Nombre de usuario", "Contraseña", "Iniciar sesión", "Cerrar sesión"),
}


@dataclass
class Screenshots:
    """Saves a PNG of the page (down to MAX_SCREENSHOT_HEIGHT) when DR_SCREENSHOTS names a folder; does nothing
    otherwise."""

    folder: Path | None

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def take(self, page: Page, name: str, *, language: str = "en", of: Locator | None = None) -> None:
        """The top of the page, or (`of`) the part of it where that element is, the page's whole width."""
        if self.folder is None:
            return
        folder = self.folder if language == "en" else self.folder / language
        folder.mkdir(parents=True, exist_ok=True)
        page.wait_for_load_state("networkidle")
        page.mouse.move(0, 0)  # no hover effect on whatever the last click left the pointer over
        # The top of a long page is what a reader looks at; the whole of it would only make the PNG heavy.
        top, height = 0.0, float(page.evaluate("document.documentElement.scrollHeight"))
        if of is not None:
            box = of.bounding_box()
            assert box is not None, f"{of} is not on the page"
            top = max(0.0, box["y"] + float(page.evaluate("window.scrollY")) - SECTION_MARGIN)
            height = box["height"] + 2 * SECTION_MARGIN
        width = page.viewport_size["width"] if page.viewport_size else DESKTOP["width"]
        clip = {"x": 0, "y": top, "width": width, "height": min(height, MAX_SCREENSHOT_HEIGHT)}
        png = page.screenshot(full_page=True, clip=clip, animations="disabled", caret="hide")  # type: ignore[arg-type]
        # 256 colours look the same for flat pages of text and make the committed files about a third the size.
        image = Image.open(io.BytesIO(png)).convert("RGB")
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            folder / f"{name}.png", optimize=True
        )


@pytest.fixture(scope="package")
def screenshots() -> Screenshots:
    folder = os.environ.get("DR_SCREENSHOTS", "")
    return Screenshots(Path(settings.BASE_DIR, folder) if folder else None)


@dataclass
class Console:
    """The running console with its history, and browser sessions on it."""

    url: str
    browser: Browser
    history: History
    contexts: list[BrowserContext] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # script errors and failed requests, on any page

    def session(self, *, locale: str = "en-US", viewport: dict[str, int] = DESKTOP) -> Page:
        """A fresh browser session (its own cookies), in `locale`, in the timezone of the team."""
        context = self.browser.new_context(
            base_url=self.url,
            locale=locale,
            timezone_id="Europe/Madrid",
            viewport=viewport,  # type: ignore[arg-type]
        )
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: script error: {error}"))
        page.on("console", lambda message: self._console_message(page, message))
        page.on("response", lambda response: self._response(response))
        return page

    def _console_message(self, page: Page, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"{page.url}: console error: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.request.method} {response.url}: HTTP {response.status}")

    def log_in(self, page: Page, username: str, *, language: str = "en") -> None:
        """Through the login page, as a person does: the page any URL redirects to before a login."""
        user_name, password, log_in, log_out = LOGIN_WORDS[language]
        page.get_by_label(user_name).fill(username)
        page.get_by_label(password).fill(password_of(username))
        page.get_by_role("button", name=log_in).click()
        expect(page.get_by_role("button", name=log_out)).to_be_visible()

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def history_language() -> str:
    """The language of what people typed in the history; a test parametrizes it to change it."""
    return "en"


@pytest.fixture
def console(
    request: pytest.FixtureRequest, live_server: Any, browser: Browser, http_stub: HttpStub, history_language: str
) -> Iterator[Console]:
    """The console with a week of history; prod's application answers /healthz and /readyz from `http_stub`.
    prod-db is the real database of `source_db` when the test asks for one (the others only read pages, and
    save creating a database)."""
    url_env = "PROD_DATABASE_URL"
    if "source_db" in request.fixturenames:
        source_db: SourceDb = request.getfixturevalue("source_db")
        url_env = source_db.url_env
    history = console_history(prod_db_url_env=url_env, api_url=http_stub.url, language=history_language)
    console = Console(url=live_server.url, browser=browser, history=history)
    yield console
    console.close()
    assert not console.problems, "the pages had problems:\n" + "\n".join(console.problems)
