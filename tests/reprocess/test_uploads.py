"""Uploads too large for the console, sent over real HTTP to the real console (pytest-django's live server): the
upload is refused while it is read, the form says so with a 413, and nothing was kept: no batch, no file left in
the temporary folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from reprocess.models import ReprocessBatch
from tests.factories import EnvironmentFactory, user_in_groups

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 64 * 1024


@pytest.fixture
def upload_dir(settings: Any, tmp_path: Path) -> Path:
    """A small limit, and a temporary folder of the test's own where every accepted file is spooled."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    settings.UPLOAD_MAX_BYTES = LIMIT
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    settings.CSRF_COOKIE_SECURE = False  # the live server speaks plain HTTP
    return folder


def _operator_session(live_server: Any) -> httpx.Client:
    """An httpx client signed in as an operator, with the CSRF cookie the form's page sets."""
    client = Client()
    client.force_login(user_in_groups("olga", "operator"))
    http = httpx.Client(base_url=live_server.url, cookies={"sessionid": client.cookies["sessionid"].value})
    return http


def _post_csv(http: httpx.Client, content: bytes, environment: int) -> httpx.Response:
    url = reverse("reprocess:batch_create")
    page = http.get(url)
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    # The fields come before the file, as a browser sends the form's fields in their order.
    fields = {"csrfmiddlewaretoken": token.group(1), "environment": str(environment), "source": "csv"}
    return http.post(url, data=fields, files={"csv_file": ("lost.csv", content, "text/csv")}, timeout=60)


@pytest.mark.parametrize(
    ("size", "spooled"),
    [
        # Read until it passes the limit: the temporary file already begun is deleted.
        (LIMIT + 20 * 1024, True),
        # Content-Length says so at once: no byte of the file is read into anything. The temporary folder does
        # not even exist, so a file begun there would have failed the request.
        (40 * 2**20, False),
    ],
)
def test_a_too_large_csv_upload_is_refused_with_a_413_and_nothing_is_kept(
    live_server: Any, upload_dir: Path, settings: Any, size: int, spooled: bool
) -> None:
    if not spooled:
        upload_dir.rmdir()
    environment = EnvironmentFactory(name="prod")
    line = b"ws-1,1042\n"
    content = line * (size // len(line) + 1)

    with _operator_session(live_server) as http:
        response = _post_csv(http, content, environment.pk)

    assert response.status_code == 413
    assert "The file is larger than 64.0\xa0KB; nothing of it was kept. Split it." in response.text
    assert not ReprocessBatch.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="reprocess").exists()
    assert (list(upload_dir.iterdir()) == []) if spooled else not upload_dir.exists()


def test_a_csv_upload_within_the_limit_still_builds_a_batch(live_server: Any, upload_dir: Path) -> None:
    environment = EnvironmentFactory(name="prod")
    content = b"workspace_id,document_id\n" + b"".join(b"ws-1,%d\n" % i for i in range(3000))  # ~30 kB: on disk
    assert 1024 < len(content) < LIMIT

    with _operator_session(live_server) as http:
        response = _post_csv(http, content, environment.pk)

    assert response.status_code == 302, response.text[:500]  # to the batch's page
    batch = ReprocessBatch.objects.get()
    assert batch.total == 3000
    assert list(upload_dir.iterdir()) == []  # Django deletes the spooled file after the request
