"""Real PostgreSQL, never mocked: the shared server the suite backs up from and restores into (TEST_PG_ADMIN_URL),
a source database full of varied data, fingerprints that prove a round trip exact, a backup taken for real, and a
private cluster that checks passwords (the shared one trusts everyone)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from tests.support.local import free_port

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def admin_connection(url: str = PG_ADMIN_URL) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def drop_database(name: str, url: str = PG_ADMIN_URL) -> None:
    with admin_connection(url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database(name: str, url: str = PG_ADMIN_URL) -> None:
    with admin_connection(url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_exists(name: str, url: str = PG_ADMIN_URL) -> bool:
    with admin_connection(url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


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


# A function of the application's that writes (the source database has none until a test adds it): a configured
# query must not be able to write by calling it.
WRITING_FUNCTION = """
CREATE FUNCTION mark_all_ready() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE documents SET status = 'READY', title = 'pwned';
    RETURN true;
END $$;
"""

# Configured queries that try to write, each with the words its refusal must hold (the console's and the server's).
QUERY_ATTACKS = [
    pytest.param(
        "SELECT id FROM documents; COMMIT; UPDATE documents SET title = 'pwned'",
        "holds more than one statement",
        id="select-commit-update",
    ),
    pytest.param(
        "WITH gone AS (DELETE FROM documents RETURNING id) SELECT count(*) FROM gone",
        "tried to write or to lock rows (cannot execute SELECT in a read-only transaction)",
        id="data-modifying-cte",
    ),
    pytest.param(
        "SELECT id FROM documents FOR UPDATE",
        "tried to write or to lock rows (cannot execute SELECT FOR UPDATE in a read-only transaction)",
        id="select-for-update",
    ),
    pytest.param(
        "SELECT set_config('transaction_read_only', 'off', true), mark_all_ready()",
        "tried to make its transaction read-write (transaction read-write mode must be set before any query)",
        id="set-config-then-write",
    ),
    pytest.param(
        "WITH rw AS MATERIALIZED (SELECT set_config('transaction_read_only', 'off', true) AS v), "
        "up AS (UPDATE documents SET title = 'pwned' RETURNING id) SELECT v, (SELECT count(*) FROM up) FROM rw",
        "tried to write or to lock rows (cannot execute SELECT in a read-only transaction)",  # checked before any row
        id="set-config-cte-then-update",
    ),
    pytest.param(
        "SET TRANSACTION READ WRITE",
        "tried to make its transaction read-write (transaction read-write mode must be set before any query)",
        id="set-transaction-read-write",
    ),
    pytest.param(
        "SELECT mark_all_ready()",
        "tried to write or to lock rows (cannot execute UPDATE in a read-only transaction)",
        id="writing-function",
    ),
    pytest.param(
        "DO $$ BEGIN UPDATE documents SET title = 'pwned'; END $$",
        "tried to write or to lock rows (cannot execute UPDATE in a read-only transaction)",
        id="do-block",
    ),
    pytest.param(
        "COMMIT",
        "ended the console's read-only transaction (COMMIT)",
        id="commit",
    ),
]


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
    create_database(name)
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
    port = free_port()
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
