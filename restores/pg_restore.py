"""The restore primitive: pg_restore --clean --if-exists into a database, and the database checks after it.

restores/services.py decides when and whether a restore runs; this module only knows how.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from typing import Any

from psycopg import sql

from backups.postgres import (
    PgConnection,
    PostgresError,
    count_rows,
    first_line,
    read_tail,
    server_version,
    start_process,
    stop_process,
)
from backups.services import JobFailed
from dr_console.jobs import JobHeartbeat

logger = logging.getLogger(__name__)


def archive_major(version_text: str) -> int:
    match = re.search(r"(\d+)", version_text or "")
    return int(match.group(1)) if match else 0


def check_server_can_take(conn: Any, archive_major: int, target: PgConnection) -> None:
    _text, major = server_version(conn)
    if archive_major and major < archive_major:
        raise JobFailed(
            f"the target server {target.server_label} runs PostgreSQL {major}, older than the "
            f"PostgreSQL {archive_major} the backup was taken from; restore into a newer server"
        )


def create_database(target: PgConnection, name: str, archive_major: int) -> None:
    with target.connect(autocommit=True) as conn:
        check_server_can_take(conn, archive_major, target)
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise JobFailed(
                f"database {name} already exists on {target.server_label}; choose another name (to restore over "
                "an existing database, register it as a datastore and restore --into that datastore)"
            )
        try:
            # template0: a pristine database, so nothing added to template1 collides with the archive's objects.
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except Exception as exc:
            raise JobFailed(
                f"cannot create database {name} on {target.server_label}: {target.scrub(first_line(str(exc)))}"
            ) from None


def drop_database_quietly(target: PgConnection, name: str) -> bool:
    try:
        with target.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return True
    except Exception:
        logger.exception("could not drop database %s after a failed restore", name)
        return False


def pg_restore_run(
    *, pg_restore: str, database: PgConnection, path: str, jobs: int, no_owner: bool, heartbeat: JobHeartbeat
) -> tuple[int, str]:
    """Run pg_restore --clean --if-exists --jobs N from a seekable file. Returns (exit status, stderr tail).
    A non-zero status (pg_restore's "errors ignored on restore" included) is the caller's failure to report."""
    args = [pg_restore, "--clean", "--if-exists", "--no-password", f"--jobs={jobs}"]
    if no_owner:
        args += ["--no-owner", "--no-privileges"]
    args += [f"--dbname={database.dbname}", path]  # the name only; host, user and password come via PG* and PGPASSFILE
    with database.subprocess_env() as env, tempfile.TemporaryFile() as stderr_file:
        proc = start_process(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file)
        heartbeat.on_stop(lambda: stop_process(proc))  # a cancel stops pg_restore and the workers it forked
        try:
            returncode = proc.wait()
        except BaseException:
            stop_process(proc)
            raise
        return returncode, database.scrub(read_tail(stderr_file))


def restore_error_summary(stderr_tail: str) -> str:
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    ignored = next((line for line in reversed(lines) if "errors ignored on restore" in line), "")
    first_error = next((line for line in lines if "error:" in line), "")
    parts = [p.removeprefix("pg_restore: ") for p in (first_error, ignored) if p]
    return "; ".join(parts) or (lines[-1] if lines else "no output")


def run_checks(database: PgConnection, expected_counts: dict[str, int]) -> list[dict[str, Any]]:
    """The runbook's post-restore checks against the restored database, each a checklist item."""
    checks: list[dict[str, Any]] = []
    try:
        conn = database.connect()
    except PostgresError as exc:
        return [{"name": "connect", "ok": False, "detail": str(exc)}]
    with conn:
        row = conn.execute("SELECT 1").fetchone()
        checks.append({"name": "SELECT 1", "ok": bool(row and row[0] == 1), "detail": f"returned {row and row[0]}"})
        row = conn.execute("SELECT now()").fetchone()
        checks.append({"name": "SELECT now()", "ok": row is not None, "detail": f"returned {row and row[0]}"})
        mismatches = []
        for label, expected in sorted(expected_counts.items()):
            schema, _, table = label.partition(".")
            try:
                found = count_rows(conn, [(schema, table)])[label]
            except Exception as exc:
                conn.rollback()
                mismatches.append(f"{label}: expected {expected}, cannot count ({first_line(str(exc))})")
                continue
            if found != expected:
                mismatches.append(f"{label}: expected {expected}, found {found}")
        checks.append(
            {
                "name": "row counts",
                "ok": not mismatches,
                "detail": "; ".join(mismatches) if mismatches else f"{len(expected_counts)} tables match the dump",
            }
        )
    return checks
