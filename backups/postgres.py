"""Talking to a protected PostgreSQL: connection details from an environment variable, the password handed to
pg_dump/pg_restore in a 0600 passfile, the client tools run in their own process group.

Secrets rule: the URL and its password never reach the console's database, a log line, an error message or a
command line (`ps` shows command lines to every user). Subprocesses get connection details through libpq's
PG* environment variables and PGPASSFILE; error text is scrubbed of the password before it is stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
from django.conf import settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from dr_console.jobs.errors import JobFailed
from dr_console.jobs.processes import (
    current_session_name,
    describe_exit,
    scratch_prefix,
    start_process,
    stop_process,
)
from dr_console.secrets import secret_env
from dr_console.text import untrusted_text

logger = logging.getLogger(__name__)


class PostgresError(JobFailed):
    """An expected failure talking to a protected PostgreSQL (unreachable, refused, missing tool...)."""


class DatastoreConfigError(PostgresError):
    """The datastore's URL variable is missing or malformed. The message names the variable, never its value."""


class ToolMissing(PostgresError):
    pass


# libpq connection keywords and the environment variables that carry them to pg_dump/pg_restore.
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcompression": "PGSSLCOMPRESSION",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "service": "PGSERVICE",
}
DEFAULT_CONNECT_TIMEOUT = "10"


@dataclass(frozen=True)
class PgConnection:
    """How to reach one PostgreSQL database. `repr` never shows the password."""

    url_env: str
    params: dict[str, str]
    password: str | None = field(default=None, repr=False)

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or "postgres"

    @property
    def server_label(self) -> str:
        """host:port, for messages. Safe to show: it holds no credentials."""
        return f"{self.params.get('host') or 'localhost'}:{self.params.get('port') or 5432}"

    def with_dbname(self, dbname: str) -> PgConnection:
        return PgConnection(self.url_env, {**self.params, "dbname": dbname}, self.password)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """Open a psycopg connection, turning failures into a PostgresError without the password."""
        params: dict[str, Any] = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT, **self.params, **kwargs}
        if session := current_session_name():  # a job's session: the reaper can find it (see session_name)
            params["application_name"] = session
        if self.password is not None:
            params["password"] = self.password
        try:
            return psycopg.connect(**params)
        except psycopg.Error as exc:
            raise PostgresError(
                f"cannot connect to database {self.dbname!r} at {self.server_label} "
                f"(from {self.url_env}): {self.scrub(first_line(str(exc)))}"
            ) from None

    def scrub(self, text: str) -> str:
        """Remove the password from text that came back from a server or a tool, just in case."""
        if self.password:
            text = text.replace(self.password, "********")
        return text

    @contextlib.contextmanager
    def subprocess_env(self) -> Iterator[dict[str, str]]:
        """Environment for pg_dump/pg_restore: PG* variables plus a 0600 passfile deleted on exit.

        The child gets a minimal environment on purpose: the variable holding the URL (and any other
        secret of the worker) is not inherited.
        """
        child_env = _tool_env()
        child_env["PGCONNECT_TIMEOUT"] = DEFAULT_CONNECT_TIMEOUT
        for key, value in self.params.items():
            child_env[LIBPQ_ENV[key]] = value
        if session := current_session_name():
            child_env["PGAPPNAME"] = session
        if self.password is None:
            yield child_env
            return
        fd, passfile = tempfile.mkstemp(prefix=scratch_prefix("pgpass"), dir=scratch_dir())  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"*:*:*:*:{_passfile_escape(self.password)}\n")
            child_env["PGPASSFILE"] = passfile
            yield child_env
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(passfile)


def pg_sessions_end(target: PgConnection, session: str, wait_seconds: float = 10.0) -> int:
    """Terminate the sessions named `session` (a job run's, dr_console.jobs.job_session_name) that are still
    running on the target's server, and wait until they are gone. What a killed pg_restore had asked for goes on in
    the server (a COPY waiting on a lock or in a slow CHECK does not notice its client is gone) until it is
    terminated. Returns how many it terminated; failures are logged, not raised (the reaper goes on)."""
    if not session:
        return 0
    query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
    try:
        with target.connect(autocommit=True) as conn:
            pids = [pid for (pid,) in conn.execute(query, (session,)).fetchall()]
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            deadline = time.monotonic() + wait_seconds
            while pids and conn.execute(query, (session,)).fetchone() and time.monotonic() < deadline:
                time.sleep(0.05)
    except (PostgresError, psycopg.Error) as exc:
        logger.warning("cannot end the sessions %s on %s: %s", session, target.server_label, first_line(str(exc)))
        return 0
    if pids:
        logger.info("ended %s session(s) %s left on %s", len(pids), session, target.server_label)
    return len(pids)


def _passfile_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pg_connection_from_env(url_env: str) -> PgConnection:
    """Read the datastore's connection URL from the environment variable named `url_env`."""
    value = secret_env(url_env)
    if not value:
        raise DatastoreConfigError(
            f"environment variable {url_env} is not set in the process that ran the job "
            f"(host {socket.gethostname()}); set it to the database URL "
            f"(postgresql://user:password@host:5432/dbname) in the worker's environment or .env, then restart it"
        )
    if not re.match(r"^postgres(ql)?://", value):
        raise DatastoreConfigError(
            f"environment variable {url_env} does not hold a PostgreSQL URL (expected postgresql://...)"
        )
    if not _unambiguous_url(value):
        # An unencoded / ? # or @ in the password moves its tail into the host, path or query, which our messages
        # would then show: refuse the URL without quoting any of it.
        raise DatastoreConfigError(
            f"environment variable {url_env} holds a malformed PostgreSQL URL: percent-encode special characters "
            "in the user name and password (/ as %2F, @ as %40, ? as %3F, # as %23, : as %3A)"
        )
    query_keys = {key for key, _ in parse_qsl(urlsplit(value).query, keep_blank_values=True)}
    unknown = sorted(query_keys - set(LIBPQ_ENV) - {"password", "passfile"})
    if unknown:
        raise DatastoreConfigError(
            f"environment variable {url_env}: unsupported connection parameter(s) {', '.join(unknown)}"
        )
    try:
        params = conninfo_to_dict(value)
    except psycopg.Error:
        raise DatastoreConfigError(f"environment variable {url_env} holds a malformed PostgreSQL URL") from None
    password = params.pop("password", None)
    params.pop("passfile", None)
    unknown = sorted(set(params) - set(LIBPQ_ENV))
    if unknown:
        raise DatastoreConfigError(
            f"environment variable {url_env}: unsupported connection parameter(s) {', '.join(unknown)}"
        )
    return PgConnection(url_env, {k: str(v) for k, v in params.items()}, None if password is None else str(password))


def _unambiguous_url(value: str) -> bool:
    """At most one '@', and only inside the authority part: then host, port and database are what they seem."""
    parts = urlsplit(value)
    if value.count("@") > 1 or "@" in parts.path or "@" in parts.query or parts.fragment:
        return False
    return not (value.count("@") == 1 and "@" not in parts.netloc)


def first_line(text: str) -> str:
    """The first non-blank line of a message from a server or a tool, safe to store and show (dr_console.text)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return untrusted_text(lines[0] if lines else text.strip())


# --- client tools ---------------------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """Absolute path of pg_dump/pg_restore, from PG_BIN_DIR or PATH."""
    if settings.PG_BIN_DIR:
        candidate = Path(settings.PG_BIN_DIR) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
        raise ToolMissing(f"{name} not found in PG_BIN_DIR={settings.PG_BIN_DIR}")
    found = shutil.which(name)
    if not found:
        raise ToolMissing(
            f"{name} is not installed on this worker: install the PostgreSQL client "
            f"(apt-get install postgresql-client) or set PG_BIN_DIR"
        )
    return found


def tool_version(path: str) -> tuple[str, int]:
    """('pg_dump (PostgreSQL) 15.20', 15)."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise ToolMissing(f"cannot tell the version of {path} (it printed {out[:80]!r})")
    return out, int(match.group(1))


def server_version(conn: psycopg.Connection[Any]) -> tuple[str, int]:
    """('PostgreSQL 15.20', 15)."""
    num = conn.info.server_version
    major = num // 10000
    minor = num % 10000 if major >= 10 else (num // 100) % 100
    return f"PostgreSQL {major}.{minor}", major


def scratch_dir() -> str:
    path = Path(settings.DR_SCRATCH_DIR)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(path)


def read_tail(handle: IO[bytes], limit: int = 4000) -> str:
    """The last `limit` characters a tool wrote to its stderr file, safe to store: its lines kept, NUL and other
    control characters escaped (a server's error quotes object names, and an identifier may hold any of them)."""
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit * 4))
    text = untrusted_text(handle.read(), multiline=True)
    return text[-limit:].strip()


# --- catalog queries --------------------------------------------------------------------------------------------

# Ordinary tables (and partitions) whose rows pg_dump writes: user schemas only, not tables owned by extensions.
DUMPED_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def table_label(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def count_rows(conn: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> dict[str, int]:
    """Exact row count of each table, in the connection's current transaction (and so its snapshot)."""
    counts: dict[str, int] = {}
    for schema, table in tables:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
        counts[table_label(schema, table)] = int(row[0]) if row else 0
    return counts


def list_dumped_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(schema, table) for schema, table in conn.execute(DUMPED_TABLES_SQL).fetchall()]


def archive_toc(pg_restore: str, *, path: str | None = None, chunks: Iterator[bytes] | None = None) -> list[str]:
    """The entries of a custom-format archive (`pg_restore --list`), from a local file or a stream of chunks.

    Raises PostgresError naming what pg_restore said when the archive is unreadable.
    """
    lines = _archive_list(pg_restore, path=path, chunks=chunks)
    return [line for line in lines if line.strip() and not line.startswith(";")]


@dataclass(frozen=True)
class ArchiveListing:
    """What `pg_restore --list` says of an archive: its entries and the header's fields (`Format: CUSTOM`,
    `Dumped from database version: 15.4`, `Dumped by pg_dump version: 15.4`, ...), as the file wrote them."""

    entries: list[str]
    header: dict[str, str]

    @property
    def format(self) -> str:
        return self.header.get("Format", "")

    @property
    def dumped_from(self) -> str:
        return self.header.get("Dumped from database version", "")

    @property
    def dumped_by(self) -> str:
        return self.header.get("Dumped by pg_dump version", "")


HEADER_FIELD_RE = re.compile(r"^;\s+([A-Za-z][A-Za-z_ ]*?):\s*(.*?)\s*$")


def archive_listing(pg_restore: str, path: str) -> ArchiveListing:
    """The entries and header of the archive at `path`. PostgresError when pg_restore cannot read it (a plain-SQL
    dump, anything else)."""
    lines = _archive_list(pg_restore, path=path, chunks=None)
    header: dict[str, str] = {}
    for line in lines:
        if found := HEADER_FIELD_RE.match(line):
            header.setdefault(found.group(1), found.group(2))
    return ArchiveListing(entries=[line for line in lines if line.strip() and not line.startswith(";")], header=header)


def _archive_list(pg_restore: str, *, path: str | None, chunks: Iterator[bytes] | None) -> list[str]:
    with tempfile.TemporaryFile() as stderr_file, tempfile.TemporaryFile() as stdout_file:
        args = [pg_restore, "--list"] + ([path] if path else [])
        proc = start_process(
            args,
            env=_tool_env(),
            stdin=subprocess.PIPE if path is None else subprocess.DEVNULL,
            stdout=stdout_file,
            stderr=stderr_file,
        )
        if path is None:
            _feed(proc, chunks or iter(()))
        returncode = proc.wait()
        if returncode != 0:
            detail = first_line(read_tail(stderr_file)) or describe_exit("pg_restore", returncode)
            raise PostgresError(f"the archive is unreadable: {detail}")
        stdout_file.seek(0)
        return stdout_file.read().decode("utf-8", "replace").splitlines()


def archive_read_through(pg_restore: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass `chunks` through while pg_restore reads the whole archive (every data block decompressed, output
    discarded). Raises PostgresError at the end if pg_restore could not read it."""
    with tempfile.TemporaryFile() as stderr_file:
        proc = start_process(
            [pg_restore, "--file=/dev/null"],
            env=_tool_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
        assert proc.stdin is not None
        broken = False
        try:
            for chunk in chunks:
                if not broken:
                    try:
                        proc.stdin.write(chunk)
                    except BrokenPipeError:
                        broken = True  # pg_restore gave up; keep reading so the checksum still covers the file
                yield chunk
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            returncode = proc.wait()
        except BaseException:
            stop_process(proc)
            raise
        if returncode != 0:
            detail = first_line(read_tail(stderr_file)) or describe_exit("pg_restore", returncode)
            raise PostgresError(f"the archive is unreadable: {detail}")


def _feed(proc: subprocess.Popen[bytes], chunks: Iterator[bytes]) -> None:
    assert proc.stdin is not None
    try:
        for chunk in chunks:
            proc.stdin.write(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the tool read what it needed (--list stops after the table of contents)


def _tool_env() -> dict[str, str]:
    """A minimal environment for a client tool: no inherited secrets, English messages (we store and show them)."""
    child_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "TZ")}
    child_env["LC_ALL"] = child_env["LANG"] = "C.UTF-8"
    return child_env
