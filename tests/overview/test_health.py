"""/readyz and `manage.py checkworker` against the real broker, a real worker, and a broker that is not there."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from dr_console.health import check_worker

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
def test_readyz_is_200_with_a_real_worker(client: Client, settings: Any, celery_worker_thread: None) -> None:
    settings.READYZ_WORKER_TIMEOUT = 10  # room for the worker that has just started; the ping ends at its answer
    status, body = readyz(client)
    assert status == 200, body
    assert body == {
        "status": "ready",
        "failed": [],
        "checks": {
            "database": {"ok": True},
            "broker": {"ok": True},
            "artifact_storage": {"ok": True},
            "worker": {"ok": True, "detail": "a worker answered"},
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
    call_command("checkworker", "--timeout", "10")
    assert capsys.readouterr().out.strip() == "ok: a worker answered"
    with pytest.raises(CommandError, match="no worker celery@nowhere answered"):
        call_command("checkworker", "--destination", "celery@nowhere")


# --- the cost of /readyz is bounded: anyone can call it -----------------------------------------------------------


class CountingStorage(FileSystemStorage):
    """A real storage on disk that counts the files written through it (the readiness probe deletes its own)."""

    saved: list[str] = []  # noqa: RUF012 (one list for the test, reset by the fixture)

    def _save(self, name: str, content: Any) -> str:
        CountingStorage.saved.append(name)
        return super()._save(name, content)


@pytest.fixture
def counting_storage(settings: Any, tmp_path: Path) -> type[CountingStorage]:
    CountingStorage.saved = []
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": f"{__name__}.CountingStorage", "OPTIONS": {"location": str(tmp_path / "counted")}},
    }
    return CountingStorage


@pytest.fixture
def broker_pings() -> Iterator[list[str]]:
    """The control commands published on the real broker (Celery's pidbox fanout, a Redis PUBLISH each), read by a
    subscriber of our own: each entry is one ping that went out."""
    subscriber = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).pubsub(ignore_subscribe_messages=True)
    subscriber.psubscribe("*celery.pidbox*")
    seen: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = subscriber.get_message(timeout=0.1)
            if message is not None:
                body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
                seen.append(body["method"])

    listener = threading.Thread(target=listen)
    listener.start()
    yield seen
    stop.set()
    listener.join()
    subscriber.close()


def _until(condition: Any, *, attempts: int = 100) -> None:
    """Wait for something another thread does (a message to arrive), a bounded number of times."""
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)


def test_a_flood_of_probes_writes_the_storage_once_and_pings_once(
    settings: Any, counting_storage: type[CountingStorage], broker_pings: list[str]
) -> None:
    """Twenty probes at once and twenty more after them: the first runs the checks, the others wait for it (the
    ping has no worker to answer it, so it waits its whole timeout) and then read its answer."""
    settings.READYZ_CACHE_SECONDS = 300
    start = threading.Barrier(20)
    answers: list[tuple[int, dict[str, Any]]] = []

    def probe() -> None:
        try:
            start.wait()
            answers.append(readyz(Client()))
        finally:
            connection.close()

    probes = [threading.Thread(target=probe) for _ in range(20)]
    for thread in probes:
        thread.start()
    for thread in probes:
        thread.join()
    answers += [readyz(Client()) for _ in range(20)]

    assert len(answers) == 40 and all(answer == answers[0] for answer in answers)
    assert answers[0][1]["failed"] == ["worker"]  # no worker runs here: the failed answer is kept too
    assert len(counting_storage.saved) == 1
    _until(lambda: len(broker_pings) >= 1)
    time.sleep(0.3)  # a second ping, if there were one, would have been published by now
    assert broker_pings == ["ping"]


def test_the_answer_turns_to_failing_once_the_period_has_passed(
    settings: Any, client: Client, counting_storage: type[CountingStorage], tmp_path: Path, monkeypatch: Any
) -> None:
    settings.READYZ_CACHE_SECONDS = 5
    now = [1_000_000.0]  # the cache's clock, moved by hand
    clock = SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr("django.core.cache.backends.base.time", clock)
    monkeypatch.setattr("django.core.cache.backends.locmem.time", clock)

    status, body = readyz(client)
    assert body["checks"]["artifact_storage"] == {"ok": True}
    # The storage breaks: a file where its folder should be.
    broken = tmp_path / "broken"
    broken.write_text("not a folder")
    settings.STORAGES = {**settings.STORAGES, "artifacts": {**settings.STORAGES["artifacts"]}}
    settings.STORAGES["artifacts"]["OPTIONS"] = {"location": str(broken)}
    now[0] += 4
    assert readyz(client)[1]["checks"]["artifact_storage"] == {"ok": True}  # still the answer of 4 s ago
    now[0] += 2
    status, body = readyz(client)
    assert status == 503 and "artifact_storage" in body["failed"]
    assert body["checks"]["artifact_storage"]["error"] == "the artifact storage is not writable (NotADirectoryError)"
    assert len(counting_storage.saved) == 2  # one write a period: the second one failed


def test_no_cache_period_checks_every_time(settings: Any, counting_storage: type[CountingStorage]) -> None:
    settings.READYZ_CACHE_SECONDS = 0
    settings.READYZ_WORKER_TIMEOUT = 0.01
    for _ in range(3):
        readyz(Client())
    assert len(counting_storage.saved) == 3


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_worker_ping_ends_at_the_first_answer(celery_worker_thread: None) -> None:
    """With a minute to wait, the ping is back as soon as the worker answers. The bound is generous on purpose: a
    ping that listened for its whole timeout would take the full 60 s."""
    started = time.monotonic()
    result = check_worker(timeout=60)
    assert result.ok and result.detail == "a worker answered"
    assert time.monotonic() - started < 30
