"""/readyz and `manage.py checkworker` against the real broker, a real worker, and a broker that is not there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _short_ping(settings: Any) -> None:
    settings.READYZ_WORKER_TIMEOUT = 0.5
    settings.READYZ_BROKER_TIMEOUT = 1


def readyz(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.content)


def test_readyz_is_503_naming_the_broker_when_redis_is_down(client: Client, broker_down: str) -> None:
    status, body = readyz(client)
    assert status == 503
    assert body["status"] == "not ready"
    assert body["failed"] == ["broker", "worker"]
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["artifact_storage"] == {"ok": True}
    assert "cannot be reached" in body["checks"]["broker"]["error"]
    assert "not checked" in body["checks"]["worker"]["error"]
    port = broker_down.rsplit(":", 1)[1].split("/")[0]
    assert port not in json.dumps(body) and "redis://" not in json.dumps(body)  # no URL, no host, no port


def test_readyz_is_503_naming_the_worker_when_no_worker_answers(client: Client) -> None:
    status, body = readyz(client)
    assert status == 503
    assert body["failed"] == ["worker"]
    assert body["checks"]["broker"] == {"ok": True}
    assert body["checks"]["worker"]["error"] == "no Celery worker answered a ping within 0.5 s"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_readyz_is_200_with_a_real_worker(client: Client, celery_worker_thread: None) -> None:
    status, body = readyz(client)
    assert status == 200, body
    assert body == {
        "status": "ready",
        "failed": [],
        "checks": {
            "database": {"ok": True},
            "broker": {"ok": True},
            "artifact_storage": {"ok": True},
            "worker": {"ok": True, "detail": "1 answering"},
        },
    }


def test_readyz_names_an_artifact_storage_it_cannot_write(client: Client, settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocker)}},
    }
    status, body = readyz(client)
    assert status == 503
    assert "artifact_storage" in body["failed"]
    assert str(tmp_path) not in json.dumps(body)


def test_readyz_leaves_no_probe_file_behind(client: Client, artifact_dir: Path) -> None:
    readyz(client)
    assert [p for p in artifact_dir.rglob("*") if p.is_file()] == []


def test_readyz_needs_no_login_and_refuses_post(client: Client) -> None:
    assert client.get("/readyz").status_code in (200, 503)  # not a redirect to the login page
    assert client.post("/readyz").status_code == 405


def test_checkworker_fails_in_one_line_when_no_worker_answers() -> None:
    with pytest.raises(CommandError, match=r"^no Celery worker answered a ping within 0.5 s$"):
        call_command("checkworker")


def test_checkworker_fails_when_the_broker_is_down(broker_down: str) -> None:
    with pytest.raises(CommandError, match="task broker cannot be reached"):
        call_command("checkworker")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_checkworker_succeeds_with_a_real_worker_and_names_a_missing_one(
    celery_worker_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("checkworker")
    assert capsys.readouterr().out.strip() == "ok: 1 answering"
    with pytest.raises(CommandError, match="no worker celery@nowhere answered"):
        call_command("checkworker", "--destination", "celery@nowhere")
