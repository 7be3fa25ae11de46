"""The fault tests' set-up: a real Celery worker in its own process (prefork, one pool child, both queues), so that a
test can SIGKILL the pool child, or the whole worker, in the middle of a job; and the checks every fault must pass
("ends cleanly": a terminal row, an audit event, a notification where failures notify, no process of the job left,
no temporary file left, the lock released, nothing listed as usable that is not).

The reapers run in the test's own process (the worker the test killed cannot run them), with a stale window of a
few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import psycopg
import pytest
import redis
from psycopg import sql

from tests.support.postgres import admin_connection
from tests.support.sampleapp import REPO_DIR
from tests.support.storage import stored_files

# The reapers' window in these tests (JOB_STALE_AFTER_SECONDS). The workers beat every second; a test reaps only
# once the worker of the job it reaps is dead, so the window need not leave room for a slow beat.
STALE_SECONDS = 1
TOOLS = ("pg_dump", "pg_restore")


# --- waiting -------------------------------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "", log: Callable[[], str] = str
) -> Any:
    """Poll `condition()` every 50 ms until it returns something true, and return that; fail after `timeout` s
    naming `what` (and the worker's log tail, when `log` is given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}; {log()}")
        time.sleep(0.05)


def wait_stale(model: Any, pk: int) -> None:
    """Wait until job `pk`'s heartbeat is older than the stale window (JOB_STALE_AFTER_SECONDS; its worker is dead:
    nothing refreshes it)."""
    from dr_console.jobs import stale_cutoff

    def stale() -> bool:
        beat = model._default_manager.values_list("heartbeat_at", flat=True).get(pk=pk)
        return beat is not None and beat < stale_cutoff()

    wait_until(stale, timeout=20, what=f"{model.__name__} #{pk} to go stale")


def wait_queued_stale(model: Any, pk: int) -> None:
    """Wait until a waiting job is older than the stale window (by its last change, or its creation)."""
    from dr_console.jobs import stale_cutoff

    def stale() -> bool:
        beat, created = model._default_manager.values_list("heartbeat_at", "created_at").get(pk=pk)
        return (beat or created) < stale_cutoff()

    wait_until(stale, timeout=20, what=f"{model.__name__} #{pk} to wait past the stale window")


# --- a real worker -------------------------------------------------------------------------------------------------


@dataclass
class Worker:
    """One `celery worker` process (prefork, concurrency 1) and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    seen: set[psutil.Process] = field(default_factory=set)  # every process of its tree the test looked at

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"worker {self.name} log: " + " | ".join(text.splitlines()[-lines:])

    def pool_child(self, timeout: float = 20.0) -> psutil.Process:
        """The prefork pool's one child process (it runs the jobs)."""

        def child() -> psutil.Process | None:
            try:
                children = psutil.Process(self.pid).children()
            except psutil.NoSuchProcess:
                return None
            return children[0] if len(children) == 1 else None

        found: psutil.Process = wait_until(child, timeout=timeout, what="the worker's pool child", log=self.log)
        self.seen.add(found)
        return found

    def tree(self) -> list[psutil.Process]:
        """The worker, its pool child and everything they started (the job's tools), remembered for teardown."""
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            processes = []
        self.seen.update(processes)
        return processes

    def tool(self, name: str, timeout: float = 30.0) -> psutil.Process:
        """A `name` process (pg_dump, pg_restore) the worker's pool child started."""

        def started() -> psutil.Process | None:
            return next((p for p in self.tree() if _name(p) == name), None)

        found: psutil.Process = wait_until(started, timeout=timeout, what=f"{name} to start", log=self.log)
        return found

    def kill_pool_child(self) -> tuple[list[psutil.Process], list[str]]:
        """SIGKILL the pool child (the OOM killer's way). Returns the job's tools (the processes the pool child
        started) and their names, as they were just before."""
        child = self.pool_child()
        tools = _named(child.children(recursive=True))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        return [process for process, _name in tools], [name for _process, name in tools]

    def kill(self) -> tuple[list[psutil.Process], list[str]]:
        """SIGKILL the worker and its pool child together. Returns the job's tools and their names, as they were."""
        parent = psutil.Process(self.pid)
        children = parent.children()
        tools = _named([p for child in children for p in child.children(recursive=True)])
        for process in (parent, *children):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        return [process for process, _name in tools], [name for _process, name in tools]

    def stop(self) -> None:
        """Teardown: SIGKILL the worker and everything it ever started that is still there."""
        self.tree()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for process in self.seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running():  # is_running also checks the create time: never a reused pid
                    process.kill()


def _named(processes: list[psutil.Process]) -> list[tuple[psutil.Process, str]]:
    """The processes still there, with their names (read now: psutil reads a name afresh each time)."""
    return [(process, name) for process in processes if (name := _name(process))]


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""


def test_database_url() -> str:
    """The pytest-django test database (the one the test's rows are in), as a URL for the worker."""
    from django.db import connection

    conf = connection.settings_dict
    auth = quote(conf["USER"] or "", safe="")
    if conf["PASSWORD"]:
        auth += ":" + quote(conf["PASSWORD"], safe="")
    return f"postgres://{auth}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}/{conf['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever its name


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The tests' own broker database (CELERY_BROKER_URL's number), empty before and after."""
    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    client.flushdb()  # only the tests' own broker database, never FLUSHALL
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def start_worker(
    transactional_db: None, settings: Any, artifact_dir: Path, tmp_path: Path, broker: redis.Redis
) -> Iterator[Callable[..., Worker]]:
    """`start_worker(**env)` starts a real worker on the test database, the test's artifact and scratch folders and
    the tests' broker, with the datastore variables the test has set, and waits until it consumes. Keyword
    arguments are more environment variables (CELERY_VISIBILITY_TIMEOUT="2"). Every worker started is killed,
    with everything it started, at teardown."""
    started: list[Worker] = []
    settings.JOB_STALE_AFTER_SECONDS = STALE_SECONDS
    settings.ALERT_EMAILS = ["oncall@example.test"]

    def start(**env: str) -> Worker:
        name = f"faults-{uuid.uuid4().hex[:8]}"
        log_path = tmp_path / f"{name}.log"
        child_env = {
            **os.environ,  # the datastores' URL variables the test set, the broker, PATH
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": test_database_url(),
            "DATABASE_CONN_MAX_AGE": "0",
            "ARTIFACT_DIR": str(artifact_dir),
            "DR_SCRATCH_DIR": settings.DR_SCRATCH_DIR,
            "JOB_HEARTBEAT_SECONDS": "1",
            "ALERT_EMAILS": "oncall@example.test",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "dr_console", "worker"),
                    *("--pool=prefork", "--concurrency=1", "-Q", f"celery,{settings.MAINTENANCE_QUEUE}"),
                    *("--without-heartbeat", "--without-mingle", "--without-gossip"),
                    *("--loglevel=INFO", "-n", f"{name}@%h"),
                ],
                cwd=REPO_DIR,
                env=child_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(name=name, process=process, log_path=log_path)
        started.append(worker)

        def ready() -> bool:
            assert process.poll() is None, f"the worker exited with {process.returncode}; {worker.log()}"
            return " ready." in log_path.read_text(errors="replace")

        wait_until(ready, timeout=30, what="the worker to be ready", log=worker.log)
        worker.pool_child()
        return worker

    yield start
    for worker in started:
        worker.stop()


# --- what "ends cleanly" checks ------------------------------------------------------------------------------------


def tools_of(*databases: str) -> list[psutil.Process]:
    """pg_dump/pg_restore processes (not zombies) working on one of `databases` (by PGDATABASE or --dbname)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "environ", "status"]):
        info = process.info
        if info["name"] not in TOOLS or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        environ = info["environ"] or {}
        cmdline = info["cmdline"] or []
        if environ.get("PGDATABASE") in databases or any(f"--dbname={name}" in cmdline for name in databases):
            found.append(process)
    return found


def assert_gone(processes: list[psutil.Process], *, timeout: float = 10.0) -> None:
    """Every one of `processes` has exited (a zombie waiting for its parent counts as exited)."""

    def alive() -> list[psutil.Process]:
        left = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(process)
            except psutil.NoSuchProcess:
                continue
        return left

    wait_until(lambda: not alive(), timeout=timeout, what=f"processes to exit: {alive()}")


def group_members(process_group: int) -> list[psutil.Process]:
    """The live processes (not zombies) of `process_group`."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == process_group:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def assert_group_gone(process_group: int | None) -> None:
    """The process group the job recorded for its tool has no live member left."""
    assert process_group is not None, "the job never recorded its tool's process group"
    assert group_members(process_group) == [], f"process group {process_group} is still alive"


def assert_no_temporary_files(artifact_dir: Path, scratch_dir: str) -> None:
    """No temporary key in the artifact storage, nothing in the scratch folder (passfiles, copies of backups)."""
    assert [name for name in stored_files(artifact_dir) if name.startswith("tmp/")] == []
    scratch = Path(scratch_dir)
    if scratch.exists():
        assert sorted(p.name for p in scratch.iterdir()) == []


def audit_actions(obj: Any) -> list[str]:
    from audit.models import AuditEvent

    return list(
        AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))
        .order_by("pk")
        .values_list("action", flat=True)
    )


def backends_of(database: str, *, url: str | None = None) -> list[tuple[int, str, str]]:
    """(pid, application_name, query) of the server sessions in `database`, other than our own."""
    with admin_connection(url) if url else admin_connection() as conn:
        return [
            (pid, app, query)
            for pid, app, query in conn.execute(
                "SELECT pid, application_name, query FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        ]


def database_exists(name: str) -> bool:
    with admin_connection() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


# --- a restore that hangs for real -------------------------------------------------------------------------------


@dataclass
class Gate:
    """A table whose CHECK constraint waits while a role exists: rows go in while the gate is open; once it is
    closed, the COPY of a restore of a backup of it waits in the server (pg_sleep), in whatever database it restores
    into, until the gate opens again. Roles are the cluster's, so the gate works across databases."""

    role: str

    def close(self) -> None:
        with admin_connection() as conn:
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(self.role)))

    def open(self) -> None:
        with admin_connection() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.role)))

    def install(self, url: str) -> None:
        """Add the gated table to the database at `url` (while the gate is open)."""
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    """
                    CREATE FUNCTION faults_gate() RETURNS boolean LANGUAGE plpgsql AS $body$
                    BEGIN
                        WHILE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {role}) LOOP
                            PERFORM pg_sleep(0.05);
                        END LOOP;
                        RETURN true;
                    END $body$;
                    CREATE TABLE gated (id int PRIMARY KEY, CHECK (faults_gate()));
                    INSERT INTO gated VALUES (1), (2), (3);
                    """
                ).format(role=sql.Literal(self.role))
            )

    def waiting_copies(self, database: str) -> list[tuple[int, str, str]]:
        """The server sessions of `database` waiting at the gate (a COPY sleeping in the CHECK)."""
        with admin_connection() as conn:
            return list(
                conn.execute(
                    "SELECT pid, application_name, query FROM pg_stat_activity "
                    "WHERE datname = %s AND wait_event = 'PgSleep' AND query ILIKE 'COPY %%'",
                    (database,),
                ).fetchall()
            )


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate(role=f"drt_gate_{uuid.uuid4().hex[:10]}")
    yield gate
    gate.open()  # whatever still waits at it goes on (and fails: its client is gone)


# --- the application's reprocess endpoint, slow on demand --------------------------------------------------------


@dataclass
class SlowApi:
    """A real HTTP server on 127.0.0.1 standing in for the application: POST answers 202, or, while `hold` is set,
    only once it is cleared (a slow application). `calls` counts the POSTs received."""

    url: str = ""
    token: str = "faults-token-3c9d"
    hold: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    calls: int = 0


@pytest.fixture
def slow_api() -> Iterator[SlowApi]:
    api = SlowApi()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            api.calls += 1
            if api.hold.is_set():
                api.released.wait(timeout=60)
            status = 202 if self.headers.get("Authorization") == f"Bearer {api.token}" else 401
            body = b'{"status": "queued"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may be gone (its worker was killed)
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    api.released.set()
    server.shutdown()
    server.server_close()


# --- datastores ----------------------------------------------------------------------------------------------------


def pathless_storage_env(artifact_dir: Path) -> dict[str, str]:
    """Worker settings for the artifact folder seen as an object store (tests/faults/storage.py)."""
    import json

    return {
        "ARTIFACT_STORAGE_BACKEND": "tests.faults.storage.PathlessStorage",
        "ARTIFACT_STORAGE_OPTIONS": json.dumps({"location": str(artifact_dir)}),
    }


def with_password(url: str) -> str:
    """The URL with a password: the shared server trusts everyone and ignores it, but the job writes a passfile."""
    return url.replace("postgresql://postgres@", "postgresql://postgres:faults-pw@", 1)


@dataclass
class Database:
    name: str
    url: str
    url_env: str


@pytest.fixture
def empty_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """An empty PostgreSQL database, its URL (with a password) in an environment variable; dropped after the test."""
    from tests.support.postgres import database_url, drop_database

    name = f"drt_tgt_{uuid.uuid4().hex[:10]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url_env = f"TEST_{name.upper()}_URL"
    monkeypatch.setenv(url_env, with_password(database_url(name)))
    yield Database(name=name, url=database_url(name), url_env=url_env)
    drop_database(name)


# --- copies: a local primary, an encrypted copy location, a primary file that stalls ---------------------------------


@dataclass
class CopyLocations:
    """The `local` primary location and the `offsite` copy location (encrypted to a real age key) of the copy tests;
    a datastore whose backups go to `local` only, so that no copy is asked for behind the test's back."""

    local: Path
    offsite: Path
    recipient: str


@pytest.fixture
def copy_locations(transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CopyLocations:
    from inventory.models import StorageLocation
    from tests.support.age import age_keypair

    recipient, text = age_keypair(tmp_path / "key.txt")
    monkeypatch.setenv("OFFSITE_AGE_IDENTITY", text)
    local, offsite = tmp_path / "local", tmp_path / "offsite"
    StorageLocation.objects.create(
        name="local",
        role="primary",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(local)},
    )
    StorageLocation.objects.create(
        name="offsite",
        role="copy",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(offsite)},
        recipients=[recipient],
        identity_env="OFFSITE_AGE_IDENTITY",
    )
    return CopyLocations(local=local, offsite=offsite, recipient=recipient)


def large_backup_taken(source_db: Any) -> Any:
    """A succeeded backup to `local` of a few MiB (hex that compresses only by half): more than two of the copy's
    1 MiB reads, so that half of it is some of the copy done, and far more than a tiny disk holds."""
    from tests.support.postgres import backup_taken

    with psycopg.connect(source_db.url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE filler AS SELECT g AS id, "
            "(SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 32) AS s) AS x "
            "FROM generate_series(1, 6000) AS g"
        )
    artifact = backup_taken(source_db.url_env, storage_locations=["local"])
    assert artifact.size_bytes > 3 * 1024 * 1024, artifact.size_bytes
    return artifact


@dataclass
class StalledFile:
    """A backup's file replaced by a FIFO fed its first half, after which the storage stalls (a hung mount):
    `half_read` once the reader took that half; `release()` ends the stall (the reader then sees the file end)
    and puts the whole file back."""

    path: Path
    content: bytes
    half_read: threading.Event = field(default_factory=threading.Event)
    _stalled: threading.Event = field(default_factory=threading.Event)
    _feeder: threading.Thread | None = None

    def start(self) -> None:
        self.path.unlink()
        os.mkfifo(self.path, 0o600)

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError), open(self.path, "wb") as fifo:
                fifo.write(self.content[: len(self.content) // 2])
                fifo.flush()
                self.half_read.set()  # a FIFO's write returns once the reader has taken all but a pipe's worth
                self._stalled.wait(timeout=120)

        self._feeder = threading.Thread(target=feed, daemon=True)
        self._feeder.start()

    def release(self) -> None:
        self._stalled.set()
        if self._feeder is not None:
            self._feeder.join(timeout=10)
            assert not self._feeder.is_alive(), "the FIFO's feeder did not end"
        self.path.unlink()
        self.path.write_bytes(self.content)


@pytest.fixture
def stalled_file() -> Iterator[Callable[[Path], StalledFile]]:
    """`stalled_file(path)` makes the file at `path` stall half-way; released at teardown whatever happened."""
    made: list[StalledFile] = []

    def make(path: Path) -> StalledFile:
        stalled = StalledFile(path=path, content=path.read_bytes())
        stalled.start()
        made.append(stalled)
        return stalled

    yield make
    for stalled in made:
        if not stalled._stalled.is_set():
            stalled.release()


def assert_nothing_copied(location: Path) -> None:
    """No temporary file, no partial or final copy at a copy location (its manifests neither)."""
    assert stored_files(location, manifests=True) == []
