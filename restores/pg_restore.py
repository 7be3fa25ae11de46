"""The restore primitive: pg_restore --clean --if-exists into a database, and the database checks after it.

restores/services.py decides when and whether a restore runs; this module only knows how.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from typing import TYPE_CHECKING, Any

import psycopg
from django.conf import settings
from django.db import models
from django.template.defaultfilters import filesizeformat
from psycopg import sql

from backups.postgres import (
    PgConnection,
    PostgresError,
    count_rows,
    first_line,
    pg_connection_from_env,
    pg_sessions_end,
    pg_tool,
    read_tail,
    scratch_dir,
    server_version,
    start_process,
    stop_process,
    tool_version,
)
from backups.readonly import ConfiguredQueryError, QueryAudit, read_only_query, read_only_session
from backups.sources import artifact_reads_in_place
from dr_console.jobs import JobContext, JobFailed, describe_exit, job_session_name
from dr_console.notes import Note, check_item
from dr_console.text import untrusted_text
from restores.models import RestoreRun

if TYPE_CHECKING:
    from backups.models import BackupArtifact

logger = logging.getLogger(__name__)
# A probe is a question about the restored data, answered quickly: a slow or locked one fails, it does not hang.
PROBE_TIMEOUT_MS = 30_000


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


def restore_preflight(artifact: BackupArtifact, target: PgConnection) -> tuple[str, int]:
    """What must hold before anything is touched: this worker's pg_restore reads the archive, a remote artifact's
    temporary copy fits in the scratch folder, and the target server answers and is not older than the archive's.
    Returns pg_restore's path and the archive's PostgreSQL major version."""
    pg_restore = pg_tool("pg_restore")
    _text, restore_major = tool_version(pg_restore)
    major = archive_major(artifact.server_version)
    if major and restore_major < major:
        raise JobFailed(
            f"pg_restore {restore_major} on this worker cannot read an archive made by "
            f"PostgreSQL {major}; install a newer client or set PG_BIN_DIR"
        )
    check_room_for_copy(artifact)
    with target.connect() as conn:  # reachable, and a server that can take the archive
        check_server_can_take(conn, major, target)
    return pg_restore, major


def check_room_for_copy(artifact: BackupArtifact) -> None:
    """A remote artifact is copied to the scratch folder first: make sure it fits, before touching anything."""
    if artifact_reads_in_place(artifact):
        return
    needed = int((artifact.size_bytes or 0) * 1.05) + 64 * 1024 * 1024
    free = shutil.disk_usage(scratch_dir()).free
    if free < needed:
        raise JobFailed(
            f"not enough room for a temporary copy in DR_SCRATCH_DIR ({settings.DR_SCRATCH_DIR}): "
            f"{filesizeformat(needed)} needed, {filesizeformat(free)} free; nothing was restored"
        )


def database_exists_message(name: str, server_label: str) -> str:
    return (
        f"database {name} already exists on {server_label}; choose another name (to restore over an existing "
        "database, register it as a datastore and restore --into that datastore)"
    )


def database_exists(url_env: str, name: str) -> str:
    """The server's label when a database `name` already exists on the server in `url_env`; "" when it does not,
    or when this process cannot tell (no such variable here, server unreachable): the run checks again."""
    try:
        target = pg_connection_from_env(url_env)
        with target.connect(autocommit=True, connect_timeout=str(EXISTS_CHECK_TIMEOUT)) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    except (PostgresError, psycopg.Error):
        return ""
    return target.server_label if found else ""


EXISTS_CHECK_TIMEOUT = 3  # seconds: a request waits this long at most for the answer


def create_database(target: PgConnection, name: str, archive_major: int) -> None:
    with target.connect(autocommit=True) as conn:
        check_server_can_take(conn, archive_major, target)
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise JobFailed(database_exists_message(name, target.server_label))
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
        logger.exception("could not drop database %s on %s", name, target.server_label)
        return False


def pg_restore_run(*, pg_restore: str, database: PgConnection, path: str, jobs: int, no_owner: bool) -> tuple[int, str]:
    """Run pg_restore --clean --if-exists --jobs N from a seekable file. Returns (exit status, stderr tail).
    A non-zero status (pg_restore's "errors ignored on restore" included) is the caller's failure to report.
    The job's runner stops pg_restore, and the workers it forked, when the row is cancelled or reaped."""
    args = [pg_restore, "--clean", "--if-exists", "--no-password", f"--jobs={jobs}"]
    if no_owner:
        args += ["--no-owner", "--no-privileges"]
    args += [f"--dbname={database.dbname}", path]  # the name only; host, user and password come via PG* and PGPASSFILE
    with database.subprocess_env() as env, tempfile.TemporaryFile() as stderr_file:
        proc = start_process(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file)
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
        return [check_item(False, name=Note("check_connect"), detail=str(exc))]
    with conn:
        row = conn.execute("SELECT 1").fetchone()
        checks.append(check_item(bool(row and row[0] == 1), name="SELECT 1", detail=_returned(row and row[0])))
        row = conn.execute("SELECT now()").fetchone()
        checks.append(check_item(row is not None, name="SELECT now()", detail=_returned(row and row[0])))
        mismatches = []
        for label, expected in sorted(expected_counts.items()):
            schema, _, table = label.partition(".")
            shown = untrusted_text(label)  # an identifier may hold any character but NUL
            try:
                found = count_rows(conn, [(schema, table)])[label]
            except Exception as exc:
                conn.rollback()
                mismatches.append(f"{shown}: expected {expected}, cannot count ({first_line(str(exc))})")
                continue
            if found != expected:
                mismatches.append(f"{shown}: expected {expected}, found {found}")
        matched = Note("tables_match", {"count": str(len(expected_counts))})
        checks.append(
            check_item(not mismatches, name=Note("check_row_counts"), detail="; ".join(mismatches) or matched)
        )
    return checks


def run_probes(database: PgConnection, probes: list[str], *, about: models.Model | None = None) -> list[dict[str, Any]]:
    """Configured SQL probes against the restored database, each a checklist item: a probe passes when it returns
    one row whose first column is true. Each runs as every configured query does (backups/readonly.py): one
    statement, read-only, with a statement timeout, so a probe can neither change the restored data nor hang the
    job. `about`: the run the audit log files a refused probe under."""
    if not probes:
        return []
    checks: list[dict[str, Any]] = []
    audit = QueryAudit(purpose="drill probe", about=about)
    try:
        with read_only_session(database) as conn:
            for probe in probes:
                try:
                    result = read_only_query(conn, probe, database=database, timeout_ms=PROBE_TIMEOUT_MS, audit=audit)
                except ConfiguredQueryError as exc:
                    checks.append(check_item(False, name=_probe(probe), detail=exc.detail))
                    continue
                row = result.rows[0] if result.rows else None
                if row is None:
                    checks.append(check_item(False, name=_probe(probe), detail=Note("returned_no_row")))
                else:
                    checks.append(check_item(row[0] is True, name=_probe(probe), detail=_returned(repr(row[0]))))
    except PostgresError as exc:
        done = len(checks)
        return checks + [check_item(False, name=_probe(probe), detail=str(exc)) for probe in probes[done:]]
    return checks


def _probe(probe: str) -> Note:
    return Note("check_probe", {"probe": probe})


def _returned(value: Any) -> Note:
    return Note("returned", {"value": str(value)})


# --- the restore of a PostgreSQL backup (restores.methods) ---------------------------------------------------------


def pg_restore_execute(run: RestoreRun, ctx: JobContext) -> None:
    """Preconditions first, each with its own message; then the safety backup, pg_restore and the checks.
    A new database this run created is dropped again if the run fails (or, if its worker dies, by the reaper),
    so a retry can use the same name."""
    from restores import steps

    steps.check_artifact_unchanged(run)
    artifact = run.artifact
    target = pg_connection_from_env(run.target_datastore.url_env)
    pg_restore, major = restore_preflight(artifact, target)

    database = target
    created = False
    try:
        with steps.read_backup(run, ctx) as read:
            path = read.path
            ctx.check()
            if run.target_kind == RestoreRun.TargetKind.NEW_DATABASE:
                database = target.with_dbname(run.new_database_name)
                create_database(target, run.new_database_name, major)
                created = True
                ctx.update(database_created=True)
            elif run.target_datastore.environment.takes_safety_backup:
                steps.take_safety_backup(run)
                ctx.check()
            exit_code, stderr_tail = pg_restore_run(
                pg_restore=pg_restore,
                database=database,
                path=path,
                jobs=int(run.options.get("jobs", 1)),
                no_owner=bool(run.options.get("no_owner")),
            )
        ctx.check()
        ctx.update(exit_code=exit_code, stderr_tail=stderr_tail)
        if exit_code != 0:
            summary = restore_error_summary(stderr_tail)
            raise JobFailed(f"{describe_exit('pg_restore', exit_code)}: {summary}", stderr_tail)
        ctx.advance(RestoreRun.Status.VERIFYING)
        steps.record_checks(run, run_checks(database, run.artifact.row_counts))
    except BaseException as exc:
        if created:
            dropped = drop_database_quietly(target, run.new_database_name)
            if dropped:
                ctx.update(database_created=False)
            if dropped and isinstance(exc, JobFailed):
                raise JobFailed(
                    f"{exc} (the new database {run.new_database_name} was dropped)", exc.stderr_tail
                ) from None
        raise


def pg_restore_reaped(run: RestoreRun) -> None:
    """A restore whose worker died: end what the server still runs for its pg_restore (a COPY goes on after its
    client is killed), then drop the new database it created (it is not a restore anyone can use). Raises when it
    cannot: the run's target stays locked and the reaper tries again."""
    target = pg_connection_from_env(run.target_datastore.url_env)
    pg_sessions_end(target, job_session_name(run))
    if run.database_created:
        if not drop_database_quietly(target, run.new_database_name):
            raise JobFailed(f"cannot drop database {run.new_database_name} on {target.server_label} yet")
        RestoreRun.objects.filter(pk=run.pk).update(database_created=False)
