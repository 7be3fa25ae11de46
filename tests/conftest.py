"""Test set-up: real PostgreSQL (the console's test database and the databases being backed up), real Redis as the
broker (its own database number), real pg_dump/pg_restore. Nothing here mocks them.
Environment defaults for the suite are in tests/settings.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from psycopg import sql

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Redis database numbers of the datastores tests back up and restore (the broker has its own, CELERY_BROKER_URL).
# Each is emptied with FLUSHDB on its own number, never FLUSHALL: other suites may share the server.


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail at once, in one line, when a service the suite needs is not there."""
    problems = []
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        problems.append(
            f"PostgreSQL is not reachable at {urlsplit(PG_ADMIN_URL).netloc} ({str(exc).strip().splitlines()[0]}); "
            "start it with: pg_ctlcluster --skip-systemctl-redirect 15 main start"
        )
    broker = os.environ["CELERY_BROKER_URL"]
    try:
        redis.Redis.from_url(broker, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        problems.append(
            f"Redis is not reachable at {urlsplit(broker).netloc} ({exc}); start it with: "
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        )
    for tool in ("pg_dump", "pg_restore"):
        if not shutil.which(tool):
            problems.append(f"{tool} is not installed: apt-get install -y postgresql-client")
    if problems:
        pytest.exit("; ".join(problems), returncode=2)


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _default_language() -> Iterator[None]:
    """Each test starts in the default language. The test client's LocaleMiddleware leaves the last request's
    language active in this thread, so after a Spanish page a later test got Spanish words from gettext."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def artifact_dir(settings: Any, tmp_path: Path) -> Path:
    """Each test gets its own artifact storage folder (a fresh local storage backend)."""
    location = tmp_path / "artifacts"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
        },
    }
    settings.DR_SCRATCH_DIR = str(tmp_path / "scratch")
    return location


@pytest.fixture(autouse=True)
def mail_dir(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where unsent email goes (no EMAIL_URL: Django's file backend), for the test and the manage.py processes it
    starts: its own folder, never var/mail. In the test's own process Django keeps mail in `mail.outbox`."""
    path = tmp_path / "mail"
    settings.EMAIL_FILE_PATH = str(path)
    monkeypatch.setenv("EMAIL_FILE_PATH", str(path))
    monkeypatch.delenv("EMAIL_URL", raising=False)
    return path


def stored_files(location: Path) -> list[str]:
    """Every file under the artifact storage, temporary ones included."""
    if not location.exists():
        return []
    return sorted(str(p.relative_to(location)) for p in location.rglob("*") if p.is_file())


@contextlib.contextmanager
def admin_connection(url: str = PG_ADMIN_URL) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def drop_database(name: str, url: str = PG_ADMIN_URL) -> None:
    with admin_connection(url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# A database with the kinds of data a document-processing product holds, to prove a round trip is exact.
SOURCE_SCHEMA = """
CREATE TYPE doc_status AS ENUM ('PENDING', 'PROCESSING', 'READY', 'FAILED');
CREATE TABLE workspaces (id uuid PRIMARY KEY, name text NOT NULL, settings jsonb, created_at timestamptz NOT NULL);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces(id),
    title text, status doc_status NOT NULL, size_bytes bigint, score numeric(12, 4),
    is_public boolean, raw bytea, tags text[], updated_at timestamptz DEFAULT now()
);
CREATE TABLE chunks (
    id bigserial PRIMARY KEY, document_id bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal int NOT NULL, body text NOT NULL, embedding float8[] NOT NULL
);
CREATE INDEX chunks_document_idx ON chunks (document_id, ordinal);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id serial PRIMARY KEY, at date, payload json, note varchar(40));
CREATE TABLE empty_table (id int);
CREATE VIEW ready_documents AS SELECT id, title FROM documents WHERE status = 'READY';
INSERT INTO workspaces
    SELECT md5('ws' || i)::uuid, 'Workspace ' || i || ' — ñandú ✓', jsonb_build_object('n', i, 'tags', ARRAY['a', 'b']),
           '2024-01-01'::timestamptz + i * interval '1 day'
    FROM generate_series(1, 5) i;
INSERT INTO documents (workspace_id, title, status, size_bytes, score, is_public, raw, tags, updated_at)
    SELECT md5('ws' || (1 + i % 5))::uuid,
           CASE WHEN i % 7 = 0 THEN NULL ELSE 'Doc ' || i || E' with \\t tab and ''quote''' END,
           (ARRAY['PENDING', 'PROCESSING', 'READY', 'FAILED'])[1 + i % 4]::doc_status,
           i * 1024::bigint, (i / 7.0)::numeric(12, 4), i % 2 = 0, decode(md5(i::text), 'hex'),
           ARRAY['t' || i % 3, 'x'], '2025-06-01'::timestamptz + i * interval '1 minute'
    FROM generate_series(1, 300) i;
INSERT INTO chunks (document_id, ordinal, body, embedding)
    SELECT 1 + i % 300, i, repeat(md5(i::text), 4), ARRAY[random(), random(), random(), -1.5e-10, 'NaN'::float8]
    FROM generate_series(1, 2000) i;
INSERT INTO audit.events (at, payload, note) SELECT '2025-01-01'::date + i, json_build_object('i', i), NULL
    FROM generate_series(1, 50) i;
"""


@dataclass
class SourceDb:
    name: str
    url_env: str
    url: str

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)


def database_url(name: str, base: str = PG_ADMIN_URL) -> str:
    parts = urlsplit(base)
    return parts._replace(path=f"/{name}").geturl()


def table_fingerprints(url: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 of every row's text form, per table: equal fingerprints mean equal content."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        result = {}
        for schema, table in tables:
            ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t"
                ).format(ident)
            ).fetchone()
            assert row is not None
            result[f"{schema}.{table}"] = (row[0], row[1])
    return result


@pytest.fixture
def source_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[SourceDb]:
    """A real PostgreSQL database full of varied data, its URL in an environment variable (as in production)."""
    name = f"drt_src_{uuid.uuid4().hex[:10]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SOURCE_SCHEMA)
    url_env = f"TEST_{name.upper()}_URL"
    monkeypatch.setenv(url_env, url)
    yield SourceDb(name=name, url_env=url_env, url=url)
    drop_database(name)


def backup_taken(url_env: str, **datastore_fields: Any) -> Any:
    """A succeeded backup of the database in `url_env`, taken for real, of a new datastore."""
    from backups.models import BackupArtifact
    from backups.services import backup_artifact_execute, backup_artifact_request
    from tests.factories import DatastoreFactory

    datastore = DatastoreFactory(url_env=url_env, **datastore_fields)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error
    return artifact


@pytest.fixture
def new_database_name() -> Iterator[str]:
    """A database name nobody uses yet; dropped after the test whatever happened."""
    name = f"drt_new_{uuid.uuid4().hex[:10]}"
    yield name
    drop_database(name)


# --- a PostgreSQL that checks passwords (the shared one trusts everyone) -----------------------------------------


@dataclass
class PasswordServer:
    port: int
    password: str

    def url(self, password: str | None = None, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:{password or self.password}@127.0.0.1:{self.port}/{dbname}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def password_server() -> Iterator[PasswordServer]:
    """A private PostgreSQL cluster with scram-sha-256 authentication, started for the session."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        pytest.fail("initdb not found under /usr/lib/postgresql: apt-get install -y postgresql")
    bindir = str(candidates[-1].parent)
    base = Path(tempfile.mkdtemp(prefix="drt-pwpg-"))
    base.chmod(0o755)
    password = "s3cret:Pa\\ss-" + uuid.uuid4().hex[:8]  # a ':' and a '\' prove the passfile escaping
    (base / "pw").write_text(password + "\n")
    port = _free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(base, "postgres")
        shutil.chown(base / "pw", "postgres")
    data = base / "data"
    subprocess.run(
        as_postgres
        + [
            f"{bindir}/initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={base / 'pw'}",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_postgres
        + [
            f"{bindir}/pg_ctl",
            "-D",
            str(data),
            "-w",
            "-l",
            str(base / "log"),
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield PasswordServer(port=port, password=password)
    finally:
        subprocess.run(
            as_postgres + [f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


# --- Redis datastores ------------------------------------------------------------------------------------------


def redis_fill_all_types(client: redis.Redis) -> None:
    """15 keys of every type, in their small and large encodings, some with a TTL."""
    client.set("s:plain", "hello")
    client.set("s:ttl", "bye", px=600_000)
    client.set(b"s:bin\xff\x00", b"\x00\x01\xfe")
    client.set("s:int", 12345)
    client.set("s:long", "x" * 5000)  # DUMP compresses it
    client.set("s:utf8 ñandú ✓", "ü")
    client.rpush("l:small", "a", "b", "c")
    client.rpush("l:big", *[f"item{i}" for i in range(2000)])
    client.expire("l:big", 3600)
    client.hset("h:small", mapping={"a": "1", "b": "2"})
    client.hset("h:big", mapping={f"f{i}": "v" * 100 for i in range(600)})
    client.sadd("set:ints", *range(100))
    client.sadd("set:strs", "x", "y", "z")
    client.zadd("z:small", {"a": 1.5, "b": -2})
    client.zadd("z:big", {f"m{i}": i for i in range(300)})
    client.xadd("st:events", {"k": "v1"})
    client.xadd("st:events", {"k": "v2"})
    client.xgroup_create("st:events", "workers", id="0")
    client.pexpire("st:events", 900_000)


def redis_contents(client: redis.Redis) -> dict[bytes, tuple[bytes, Any]]:
    """Every key's type and value, compared as values (DUMP bytes of a hash or a set depend on insertion order)."""
    readers: dict[bytes, Any] = {
        b"string": client.get,
        b"list": lambda key: client.lrange(key, 0, -1),
        b"hash": client.hgetall,
        b"set": client.smembers,
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"stream": lambda key: (client.xrange(key), client.xinfo_groups(key)),
    }
    contents = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        contents[key] = (kind, readers[kind](key))
    return contents


def _reset_connection_pools() -> None:
    from dr_console.celery import app

    app._pool = None
    app.amqp._producer_pool = None
    app.control.mailbox.__dict__.pop("producer_pool", None)  # the broadcast mailbox caches its own


@pytest.fixture
def broker_down(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The broker setting points at a port nobody listens on. Celery reads CELERY_BROKER_URL from the
    environment before its configuration, so both change; the connection pools made for the real broker go."""
    url = f"redis://127.0.0.1:{_free_port()}/0"
    settings.CELERY_BROKER_URL = url
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    _reset_connection_pools()
    yield url
    monkeypatch.undo()
    _reset_connection_pools()


# --- a real Celery worker --------------------------------------------------------------------------------------


@pytest.fixture
def celery_worker_thread(settings: Any) -> Iterator[None]:
    """A real Celery worker consuming from the real Redis broker (its own database number), in a thread of
    this process so it sees the test's settings and storage."""
    from celery.contrib.testing.worker import start_worker

    from dr_console.celery import app

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()  # only the tests' own broker database
    queues = ["celery", settings.MAINTENANCE_QUEUE]  # the jobs and the periodic tasks, as `make run` runs them
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING", queues=queues
    ):
        yield


def wait_for(condition: Any, timeout: float = 120) -> None:
    """Poll `condition()` until it is true (a worker finishing a job), failing the test after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def start_thread(target: Any, **kwargs: Any) -> Any:
    """Run `target(**kwargs)` in a thread, as a second worker would, closing its own database connections after."""
    import threading

    from django.db import connections

    def run() -> None:
        try:
            target(**kwargs)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def operator(db: None) -> Any:
    """Olga, in the operator group the roles migration creates."""
    from tests.factories import user_in_groups

    return user_in_groups("olga", "operator")


@pytest.fixture
def approver(db: None) -> Any:
    """Abel, an approver who is also an operator (the usual set-up)."""
    from tests.factories import user_in_groups

    return user_in_groups("abel", "approver", "operator")


# --- a real HTTP server on 127.0.0.1: the protected application's health endpoints and a webhook receiver -------


@dataclass
class HttpStub:
    url: str
    statuses: dict[str, int]
    posts: list[tuple[str, bytes]]
    gets: list[str]
    bodies: dict[str, bytes] = field(default_factory=dict)  # path -> the body to answer instead of the default


@pytest.fixture
def http_stub() -> Iterator[HttpStub]:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stub = HttpStub(url="", statuses={"/healthz": 200, "/readyz": 200}, posts=[], gets=[])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.gets.append(self.path)
            status = stub.statuses.get(self.path, 404)
            body = stub.bodies.get(self.path) or (
                b'{"status": "ok"}' if status < 400 else b'{"status": "redis unreachable"}'
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            stub.posts.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


# --- Redis databases of the protected application, and the sample application (sampleapp/) ----------------------
# Each number comes from the environment so that several test runs on one Redis never share a database.
APP_REDIS_DB = int(os.environ.get("TEST_APP_REDIS_DB", "14"))  # the application's queue Redis
SECOND_REDIS_DB = int(os.environ.get("TEST_SECOND_REDIS_DB", "13"))  # a second, independent Redis


def redis_db_url(db_number: int) -> str:
    """A Redis URL on the broker's server, with database `db_number`."""
    return urlsplit(os.environ["CELERY_BROKER_URL"])._replace(path=f"/{db_number}").geturl()


@dataclass
class AppRedis:
    """One Redis database of the protected application, its URL in an environment variable (as in production)."""

    url: str
    url_env: str
    client: redis.Redis


def _app_redis(monkeypatch: pytest.MonkeyPatch, db_number: int, url_env: str) -> Iterator[AppRedis]:
    url = redis_db_url(db_number)
    assert url != os.environ["CELERY_BROKER_URL"], f"Redis database {db_number} is the tests' broker: choose another"
    client = redis.Redis.from_url(url)
    client.flushdb()  # only this test run's own database number
    monkeypatch.setenv(url_env, url)
    yield AppRedis(url=url, url_env=url_env, client=client)
    client.flushdb()
    client.close()


@pytest.fixture
def app_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppRedis]:
    """The application's queue Redis (database TEST_APP_REDIS_DB), empty, its URL in TEST_APP_REDIS_URL."""
    yield from _app_redis(monkeypatch, APP_REDIS_DB, "TEST_APP_REDIS_URL")


@pytest.fixture
def second_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppRedis]:
    """Another Redis database (TEST_SECOND_REDIS_DB), empty, its URL in TEST_SECOND_REDIS_URL."""
    yield from _app_redis(monkeypatch, SECOND_REDIS_DB, "TEST_SECOND_REDIS_URL")


REPO_DIR = Path(__file__).resolve().parent.parent


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
        with admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
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
