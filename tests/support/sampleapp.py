"""The sample protected application (sampleapp/), run for real: its API and its RQ worker as processes of their
own, on a new PostgreSQL database and the queue Redis (TEST_APP_REDIS_DB), so the console recovers something that
behaves like production rather than a stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.support.postgres import create_database, database_url, drop_database
from tests.support.redis import APP_REDIS_DB, redis_db_url

REPO_DIR = Path(__file__).resolve().parents[2]


class SampleAppProcessError(Exception):
    pass


@dataclass
class SampleApp:
    """A running sample application (sampleapp/): its API process and its RQ worker process.

    url            base URL of the API, e.g. http://127.0.0.1:41234
    token          the bearer token it accepts (`headers` gives the Authorization header)
    database_name  its own PostgreSQL database (created for the test, dropped after)
    database_url   that database's URL
    redis_url      its queue Redis (database TEST_APP_REDIS_DB, emptied before and after)
    """

    url: str
    token: str
    database_name: str
    database_url: str
    redis_url: str
    log_dir: Path
    env: dict[str, str]
    api_process: subprocess.Popen[bytes] | None = None
    worker_process: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def reprocess_url(self, workspace_id: str, document_id: int) -> str:
        return f"{self.url}/workspaces/{workspace_id}/documents/{document_id}/reprocess"

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def seed(self, count: int, *, workspaces: int = 3, status: str = "PENDING") -> list[tuple[str, int]]:
        """Create `count` documents in `status`, round-robin over `workspaces` workspaces; (workspace_id,
        document_id) of each, by id."""
        from sampleapp.db import documents_seed

        with self.connect() as conn:
            return documents_seed(conn, count, workspaces=workspaces, status=status)

    def statuses(self) -> dict[int, str]:
        """Every document's status, by id."""
        with self.connect() as conn:
            return dict(conn.execute("SELECT id, status FROM documents ORDER BY id").fetchall())

    def accepted_counts(self) -> dict[int, int]:
        """How many reprocess requests the API accepted (answered 202) for each document, by id (0 included)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT d.id, count(r.id) FROM documents d LEFT JOIN reprocess_requests r ON r.document_id = d.id "
                "GROUP BY d.id ORDER BY d.id"
            ).fetchall()
        return {doc_id: count for doc_id, count in rows}

    def wait_for_statuses(self, status: str = "READY", timeout: float = 30.0) -> dict[int, str]:
        """Wait until every document is in `status` (the worker got there); the statuses, or AssertionError
        with the ones still missing after `timeout` seconds."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            current = self.statuses()
            if all(value == status for value in current.values()):
                return current
            if time.monotonic() > deadline:
                others = {doc_id: value for doc_id, value in current.items() if value != status}
                raise AssertionError(f"after {timeout}s, not {status}: {others}; worker log: {self.log_tail()}")
            time.sleep(0.05)

    def start_worker(self) -> None:
        """Start the RQ worker (the fixture starts one; after stop_worker this starts a new one)."""
        if self.worker_process is not None and self.worker_process.poll() is None:
            return
        log = (self.log_dir / "worker.log").open("ab")
        self.worker_process = subprocess.Popen(
            [sys.executable, "-m", "sampleapp", "worker", "--log-level", "INFO"],
            cwd=REPO_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_for_worker()

    def stop_worker(self) -> None:
        """Stop the worker (warm shutdown: it finishes the job in hand). Queued jobs then wait in Redis."""
        _stop(self.worker_process)
        self.worker_process = None

    def log_tail(self, lines: int = 30) -> str:
        text = []
        for name in ("api.log", "worker.log"):
            path = self.log_dir / name
            if path.exists():
                text.append(f"[{name}] " + " | ".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "; ".join(text)

    def _wait_for_worker(self, timeout: float = 20.0) -> None:
        import time

        from rq import Worker

        deadline = time.monotonic() + timeout
        connection = self.redis()
        try:
            while Worker.count(connection=connection) == 0:
                assert self.worker_process is not None
                if self.worker_process.poll() is not None or time.monotonic() > deadline:
                    raise SampleAppProcessError(f"the sampleapp worker did not start: {self.log_tail()}")
                time.sleep(0.05)
        finally:
            connection.close()


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _start_api(app: SampleApp, timeout: float = 20.0) -> None:
    """Start the API on a free port and read the port from its first line of output."""
    import selectors
    import time

    log = (app.log_dir / "api.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "sampleapp", "api", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO_DIR,
        env=app.env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    app.api_process = process
    assert process.stdout is not None
    waiting = selectors.DefaultSelector()
    waiting.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        if not waiting.select(timeout=max(0.0, deadline - time.monotonic())):
            raise SampleAppProcessError(f"the sampleapp API did not start in {timeout}s: {app.log_tail()}")
        chunk = os.read(process.stdout.fileno(), 1024)
        if not chunk:
            raise SampleAppProcessError(f"the sampleapp API exited: {app.log_tail()}")
        line += chunk
    waiting.close()
    # The API prints nothing else on stdout; the pipe stays open (unread) until the process ends.
    app.url = line.decode().strip().rsplit(" ", 1)[-1]


@pytest.fixture
def sampleapp_factory(tmp_path: Path) -> Iterator[Any]:
    """Start sample applications: `sampleapp_factory(worker=True, job_seconds=0.0)` returns a running SampleApp
    with its own new PostgreSQL database (schema created, no documents) and the empty Redis database
    TEST_APP_REDIS_DB. `job_seconds` makes each job stay PROCESSING that long. Everything is stopped, dropped
    and flushed after the test. Two apps in one test share the Redis database: start only one unless that is
    what the test wants."""
    import secrets

    started: list[SampleApp] = []

    def start(*, worker: bool = True, job_seconds: float = 0.0) -> SampleApp:
        name = f"drt_app_{uuid.uuid4().hex[:10]}"
        create_database(name)
        redis_url = redis_db_url(APP_REDIS_DB)
        redis.Redis.from_url(redis_url).flushdb()
        token = secrets.token_urlsafe(24)
        log_dir = tmp_path / f"sampleapp-{len(started)}"
        log_dir.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO_DIR),
            "SAMPLEAPP_DATABASE_URL": database_url(name),
            "SAMPLEAPP_REDIS_URL": redis_url,
            "SAMPLEAPP_TOKEN": token,
            "SAMPLEAPP_JOB_SECONDS": str(job_seconds),
        }
        app = SampleApp(
            url="",
            token=token,
            database_name=name,
            database_url=database_url(name),
            redis_url=redis_url,
            log_dir=log_dir,
            env=env,
        )
        started.append(app)
        _start_api(app)
        if worker:
            app.start_worker()
        return app

    yield start
    for app in started:
        app.stop_worker()
        _stop(app.api_process)
        drop_database(app.database_name)
    if started:
        redis.Redis.from_url(redis_db_url(APP_REDIS_DB)).flushdb()


@pytest.fixture
def sampleapp(sampleapp_factory: Any) -> SampleApp:
    """The sample application running with its worker, no documents yet (see SampleApp, sampleapp_factory)."""
    return sampleapp_factory()
