"""The sample application, for real: its API process, its RQ worker process, its own PostgreSQL database and
Redis database. No Django involved (the app is not part of the console)."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from rq import Queue

from sampleapp.config import QUEUE_NAME
from tests.support.local import free_port
from tests.support.postgres import database_url, drop_database
from tests.support.redis import APP_REDIS_DB, redis_db_url
from tests.support.sampleapp import REPO_DIR, SampleApp

OTHER_WORKSPACE = str(uuid.uuid4())


def test_healthz_and_readyz_answer_ok(sampleapp: SampleApp) -> None:
    assert httpx.get(f"{sampleapp.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{sampleapp.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


def test_reprocess_needs_the_right_bearer_token(sampleapp: SampleApp) -> None:
    [(workspace_id, document_id)] = sampleapp.seed(1)
    url = sampleapp.reprocess_url(workspace_id, document_id)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {sampleapp.token}"}):
        response = httpx.post(url, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert sampleapp.accepted_counts() == {document_id: 0}
    assert sampleapp.statuses() == {document_id: "PENDING"}


def test_reprocess_of_an_unknown_document_or_another_workspaces_is_404(sampleapp: SampleApp) -> None:
    [(workspace_id, document_id)] = sampleapp.seed(1)
    for url in (
        sampleapp.reprocess_url(workspace_id, document_id + 1000),
        sampleapp.reprocess_url(OTHER_WORKSPACE, document_id),
        sampleapp.reprocess_url("not-a-uuid", document_id),
        sampleapp.reprocess_url(workspace_id, "abc"),  # type: ignore[arg-type]
    ):
        response = httpx.post(url, headers=sampleapp.headers)
        assert response.status_code == 404, url
        assert response.json() == {"error": "document not found in this workspace"}
    assert sampleapp.accepted_counts() == {document_id: 0}
    assert len(Queue(QUEUE_NAME, connection=sampleapp.redis())) == 0


def test_reprocess_is_accepted_queued_and_processed_to_ready(sampleapp: SampleApp) -> None:
    documents = sampleapp.seed(5, workspaces=2)
    workspace_id, document_id = documents[2]
    response = httpx.post(sampleapp.reprocess_url(workspace_id, document_id), headers=sampleapp.headers)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert (body["workspace_id"], body["document_id"]) == (workspace_id, document_id)
    statuses = _wait(lambda: sampleapp.statuses()[document_id] == "READY", sampleapp)
    assert statuses == {doc_id: "READY" if doc_id == document_id else "PENDING" for _, doc_id in documents}
    assert sampleapp.accepted_counts()[document_id] == 1
    # The job was a real RQ job, and its arguments carry the workspace and the document.
    from rq.job import Job

    job = Job.fetch(body["job_id"], connection=sampleapp.redis())
    assert job.func_name == "sampleapp.jobs.reprocess_document"
    assert job.args == (workspace_id, document_id)
    assert job.get_status() == "finished"


def test_documents_go_through_processing(sampleapp_factory) -> None:
    app = sampleapp_factory(job_seconds=1.0)
    [(workspace_id, document_id)] = app.seed(1)
    assert httpx.post(app.reprocess_url(workspace_id, document_id), headers=app.headers).status_code == 202
    _wait(lambda: app.statuses()[document_id] == "PROCESSING", app)
    app.wait_for_statuses("READY")


def test_sixteen_concurrent_requests_are_all_accepted_once(sampleapp: SampleApp) -> None:
    documents = sampleapp.seed(64, workspaces=4)
    with httpx.Client(limits=httpx.Limits(max_connections=16)) as client:

        def send(doc: tuple[str, int]) -> int:
            return client.post(sampleapp.reprocess_url(*doc), headers=sampleapp.headers).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(send, documents))
    assert codes == [202] * 64
    sampleapp.wait_for_statuses("READY")
    assert set(sampleapp.accepted_counts().values()) == {1}


def test_reprocess_after_the_queue_redis_was_flushed(sampleapp: SampleApp) -> None:
    """The runbook's case: Redis lost its jobs; reprocessing through the API queues them again and the running
    worker processes them."""
    sampleapp.stop_worker()
    documents = sampleapp.seed(3)
    for doc in documents:
        assert httpx.post(sampleapp.reprocess_url(*doc), headers=sampleapp.headers).status_code == 202
    sampleapp.redis().flushdb()  # the queued jobs are lost
    sampleapp.start_worker()
    assert set(sampleapp.statuses().values()) == {"PENDING"}
    sampleapp.redis().flushdb()  # and once more under the running worker
    for doc in documents:
        assert httpx.post(sampleapp.reprocess_url(*doc), headers=sampleapp.headers).status_code == 202
    sampleapp.wait_for_statuses("READY")
    assert set(sampleapp.accepted_counts().values()) == {2}


def test_a_job_for_a_deleted_document_fails_in_rq(sampleapp: SampleApp) -> None:
    from rq.registry import FailedJobRegistry

    sampleapp.stop_worker()
    [(workspace_id, document_id)] = sampleapp.seed(1)
    assert httpx.post(sampleapp.reprocess_url(workspace_id, document_id), headers=sampleapp.headers).status_code == 202
    with sampleapp.connect() as conn:
        conn.execute("DELETE FROM documents")
    sampleapp.start_worker()
    registry = FailedJobRegistry(QUEUE_NAME, connection=sampleapp.redis())
    _wait(lambda: registry.count == 1, sampleapp)
    [job] = [job for job in Queue(QUEUE_NAME, connection=sampleapp.redis()).failed_job_registry.get_job_ids()]
    from rq.job import Job

    assert "does not exist" in (Job.fetch(job, connection=sampleapp.redis()).latest_result().exc_string or "")


def test_readyz_is_503_naming_postgres_when_its_database_is_gone(sampleapp: SampleApp) -> None:
    drop_database(sampleapp.database_name)
    response = httpx.get(f"{sampleapp.url}/readyz", timeout=15)
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["postgres"]
    assert body["checks"]["redis"] == "ok"
    assert httpx.get(f"{sampleapp.url}/healthz").status_code == 200  # alive, not ready


def test_readyz_is_503_naming_redis_while_its_redis_is_down(sampleapp_factory, tmp_path: Path) -> None:
    """A private redis-server (not the shared one) is stopped under the running app, then started again."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: apt-get install -y redis-server (`make test` does)")
    port = free_port()
    redis_server = _start_redis(port, tmp_path)
    try:
        app = sampleapp_factory(worker=False)
        _restart_api(app, redis_url=f"redis://127.0.0.1:{port}/0")
        assert httpx.get(f"{app.url}/readyz").status_code == 200
        redis_server.terminate()
        redis_server.wait(timeout=10)
        response = httpx.get(f"{app.url}/readyz", timeout=15)
        assert response.status_code == 503
        assert response.json()["failed"] == ["redis"]
        [(workspace_id, document_id)] = app.seed(1)
        refused = httpx.post(app.reprocess_url(workspace_id, document_id), headers=app.headers, timeout=15)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert app.accepted_counts() == {document_id: 0}  # nothing recorded for a request not accepted
        redis_server = _start_redis(port, tmp_path)
        assert httpx.get(f"{app.url}/readyz").status_code == 200  # it recovers by itself
        assert httpx.post(app.reprocess_url(workspace_id, document_id), headers=app.headers).status_code == 202
    finally:
        redis_server.terminate()
        redis_server.wait(timeout=10)


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        ("SAMPLEAPP_TOKEN", "sampleapp: SAMPLEAPP_TOKEN not set"),
        ("SAMPLEAPP_DATABASE_URL", "sampleapp: SAMPLEAPP_DATABASE_URL not set"),
    ],
)
def test_missing_configuration_is_one_line(unset: str, message: str) -> None:
    env = {k: v for k, v in _offline_env().items() if k != unset}
    result = _run_command(["api", "--port", "0"], env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_services_are_one_line_without_the_password() -> None:
    port = free_port()
    env = {**_offline_env(), "SAMPLEAPP_DATABASE_URL": f"postgresql://app:hunter2@127.0.0.1:{port}/app"}
    result = _run_command(["worker"], env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"sampleapp: PostgreSQL at 127.0.0.1:{port}/app is unreachable")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
    env = {**_offline_env(), "SAMPLEAPP_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}
    result = _run_command(["worker"], env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"sampleapp: Redis at 127.0.0.1:{port}/0 is unreachable")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_seed_command_spreads_pending_documents_over_workspaces(sampleapp_factory) -> None:
    sampleapp = sampleapp_factory(worker=False)
    result = _run_command(["seed", "10", "--workspaces", "4"], sampleapp.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "created 10 PENDING documents over 4 workspaces"
    with sampleapp.connect() as conn:
        per_workspace = conn.execute("SELECT count(*) FROM documents GROUP BY workspace_id").fetchall()
    assert sorted(n for (n,) in per_workspace) == [2, 2, 3, 3]
    assert set(sampleapp.statuses().values()) == {"PENDING"}


# --- helpers -----------------------------------------------------------------------------------------------------


def _wait(condition, app: SampleApp, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; {app.log_tail()}")
        time.sleep(0.05)
    return app.statuses()


def _offline_env() -> dict[str, str]:
    """A complete configuration for commands that fail before they would use it."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SAMPLEAPP_DATABASE_URL": database_url("postgres"),
        "SAMPLEAPP_REDIS_URL": redis_db_url(APP_REDIS_DB),
        "SAMPLEAPP_TOKEN": "token",
    }


def _run_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sampleapp", *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=60
    )


def _start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _restart_api(app: SampleApp, *, redis_url: str) -> None:
    from tests.support.sampleapp import _start_api, _stop

    _stop(app.api_process)
    app.env = {**app.env, "SAMPLEAPP_REDIS_URL": redis_url}
    app.redis_url = redis_url
    _start_api(app)


def test_a_restore_under_the_running_app_leaves_it_working(sampleapp: SampleApp, tmp_path: Path) -> None:
    """What the DR drill does: pg_restore --clean over the app's database while its API and worker hold pooled
    connections. The app needs no restart (no server-side prepared statements survive a dropped table)."""
    documents = sampleapp.seed(4)
    for doc in documents[:2]:  # the pooled connections have run these statements before the restore
        for _ in range(3):
            assert httpx.post(sampleapp.reprocess_url(*doc), headers=sampleapp.headers).status_code == 202
    dump = tmp_path / "app.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), sampleapp.database_url], check=True)
    with sampleapp.connect() as conn:
        conn.execute("UPDATE documents SET status = 'FAILED'")
    subprocess.run(["pg_restore", "--clean", "--if-exists", "-d", sampleapp.database_url, str(dump)], check=True)
    assert "FAILED" not in sampleapp.statuses().values()
    assert httpx.get(f"{sampleapp.url}/readyz").status_code == 200
    for doc in documents:
        assert httpx.post(sampleapp.reprocess_url(*doc), headers=sampleapp.headers).status_code == 202
    sampleapp.wait_for_statuses("READY")
