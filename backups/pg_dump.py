"""PostgreSQL backups: pg_dump's custom format, taken in one exported snapshot with exact row counts, and read
back through pg_restore for verification. The backup job around it (claim, lock, heartbeat, audit) is
backups.services'; the primitives (connections, tools) are backups.postgres."""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from django.conf import settings
from psycopg import sql

from backups import artifacts
from backups.artifacts import DumpOutcome
from backups.locations import datastore_primary_location
from backups.models import BackupArtifact
from backups.postgres import (
    PostgresError,
    archive_read_through,
    archive_toc,
    count_rows,
    first_line,
    list_dumped_tables,
    pg_connection_from_env,
    pg_sessions_end,
    pg_tool,
    read_tail,
    server_version,
    tool_version,
)
from dr_console.jobs import JobContext, JobFailed, describe_exit, job_session_name, start_process, stop_process

logger = logging.getLogger(__name__)
# pg_dump's "Query was: LOCK TABLE public.documents IN ACCESS SHARE MODE" names the table it waited for.
LOCK_QUERY_RE = re.compile(r"LOCK TABLE (\S+) IN ")


def pg_backup_take(artifact: BackupArtifact, ctx: JobContext) -> DumpOutcome:
    """Stream pg_dump's custom-format output into the datastore's primary location, counting every table's rows in
    the same snapshot.

    1. Open a REPEATABLE READ transaction on the source and export its snapshot.
    2. Start pg_dump --snapshot=<it> in its own process group; stream its stdout (encrypted if the location says
       so) into the location while hashing, and meanwhile count rows in the exported snapshot on our connection
       (a second thread).
    3. At the stream's end, before anything is published: pg_dump exited 0, the counts are in, and the archive's
       table of contents reads (pg_restore --list on the stream's head). Only then is the file published (a local
       folder renames it; an object store completes the upload). On any failure pg_dump is stopped and nothing is
       left: a failed job leaves no artifact behind.
    The job's runner stops pg_dump if the row leaves `running` meanwhile (cancelled, or the reaper gave up on us).
    A table another session holds locked makes pg_dump (and the row counter) give up after
    BACKUP_LOCK_WAIT_TIMEOUT seconds, naming the table, instead of waiting until the time limit.
    """
    target = pg_connection_from_env(artifact.datastore.url_env)
    pg_dump, pg_restore = pg_tool("pg_dump"), pg_tool("pg_restore")
    dump_version, dump_major = tool_version(pg_dump)
    location = datastore_primary_location(artifact.datastore)
    toc: list[str] = []

    with target.connect() as snapshot_conn:
        server_text, server_major = server_version(snapshot_conn)
        if dump_major < server_major:
            raise JobFailed(
                f"{dump_version} cannot dump a PostgreSQL {server_major} server; install the "
                f"PostgreSQL {server_major} client on the worker or set PG_BIN_DIR"
            )
        snapshot_conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot_conn.read_only = True
        snapshot_row = snapshot_conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert snapshot_row is not None
        # The row counter waits for table locks like pg_dump does, and gives up as soon.
        lock_wait = settings.BACKUP_LOCK_WAIT_TIMEOUT
        snapshot_conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{lock_wait}s")))
        tables = list_dumped_tables(snapshot_conn)
        counter = _RowCounter(snapshot_conn, tables)
        args = [
            pg_dump,
            "--format=custom",
            f"--compress={artifact.compression_level}",
            f"--snapshot={snapshot_row[0]}",
            "--no-password",
            f"--lock-wait-timeout={lock_wait}s",
        ]
        with target.subprocess_env() as env, tempfile.TemporaryFile() as stderr_file:
            proc = start_process(args, env=env, stdout=subprocess.PIPE, stderr=stderr_file)
            assert proc.stdout is not None
            counter.start()
            reader = artifacts.HashingReader(proc.stdout, ctx.progress, keep_head=artifacts.HEAD_BYTES)

            def at_end() -> None:
                """The dump is whole and readable, or the file is not published."""
                returncode = proc.wait()
                ctx.check()
                if returncode != 0:
                    counter.stop()  # its counts are useless now, and it may be waiting on the same lock
                    tail = target.scrub(read_tail(stderr_file))
                    detail = dump_error_summary(tail, lock_wait)
                    raise JobFailed(f"{describe_exit('pg_dump', returncode)}{': ' + detail if detail else ''}", tail)
                counter.join()
                if counter.error:
                    raise JobFailed(
                        f"counting rows in the dump's snapshot failed: {target.scrub(counter.error)}",
                        target.scrub(read_tail(stderr_file)),
                    )
                try:
                    toc.extend(archive_toc(pg_restore, chunks=iter([bytes(reader.head)])))
                except PostgresError:
                    if reader.head_is_whole:
                        raise
                    # A table of contents longer than the head kept in memory: read from the file below.

            try:
                stored = artifacts.stream_to_location(
                    artifact, location, reader, at_end=at_end, expected_bytes=_expected_size(artifact)
                )
            except BaseException:
                stop_process(proc)
                counter.stop()
                raise
            finally:
                proc.stdout.close()
            stderr_tail = target.scrub(read_tail(stderr_file))
    try:
        ctx.check()
        if not toc and stored.staged.local_path and not stored.recipients:
            toc = archive_toc(pg_restore, path=stored.staged.local_path)
        storage_key = stored.staged.publish()
    except BaseException:
        stored.staged.discard()
        raise
    if not toc:
        stderr_tail = (stderr_tail + "\nthe table of contents is read through by the verification").strip()
    return DumpOutcome(
        storage_key=storage_key,
        tool_version=dump_version,
        server_version=server_text,
        archive_entries=len(toc),
        row_counts=counter.counts,
        stderr_tail=stderr_tail,
        **stored.outcome_fields(),  # type: ignore[arg-type]
    )


def _expected_size(artifact: BackupArtifact) -> int | None:
    """The previous backup's size: what an object store's part size is chosen from (None: the first one)."""
    previous = (
        BackupArtifact.objects.filter(
            datastore_id=artifact.datastore_id, status=BackupArtifact.Status.SUCCEEDED, size_bytes__isnull=False
        )
        .order_by("-created_at", "-pk")
        .values_list("size_bytes", flat=True)
        .first()
    )
    return int(previous) if previous else None


def dump_error_summary(stderr_tail: str, lock_wait_seconds: int) -> str:
    """pg_dump's most telling line (the last one that says error, else the last one); for a lock it could not get
    in time, which table and how long it waited."""
    if not stderr_tail:
        return ""
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    locked = LOCK_QUERY_RE.search(stderr_tail)
    if locked and ("lock timeout" in stderr_tail or "statement timeout" in stderr_tail):
        return (
            f"table {locked.group(1)} stayed locked by another session for more than {lock_wait_seconds} s "
            "(BACKUP_LOCK_WAIT_TIMEOUT); nothing was stored. See who holds it in pg_locks, then back up again"
        )
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    return first_line((errors or lines or [""])[-1].removeprefix("pg_dump: ").removeprefix("error: "))


class _RowCounter(threading.Thread):
    """Counts rows on the snapshot connection while pg_dump streams (so both see exactly the same data)."""

    def __init__(self, conn: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> None:
        super().__init__(name="row-counter", daemon=True)
        self.conn = conn
        self.tables = tables
        self.counts: dict[str, int] = {}
        self.error = ""

    def run(self) -> None:
        try:
            self.counts = count_rows(self.conn, self.tables)
        except psycopg.Error as exc:
            self.error = first_line(str(exc))

    def stop(self) -> None:
        if self.is_alive():
            self.conn.cancel_safe()
            self.join(timeout=30)


def pg_backup_reaped(artifact: BackupArtifact) -> None:
    """A backup whose worker died: end what the server still runs for it (pg_dump's queries, the row count, both
    perhaps waiting for a lock and then reading a whole table for nobody)."""
    try:
        source = pg_connection_from_env(artifact.datastore.url_env)
    except PostgresError as exc:
        logger.warning("backup #%s: cannot end its sessions: %s", artifact.pk, exc)
        return
    pg_sessions_end(source, job_session_name(artifact))


def pg_backup_read_through(artifact: BackupArtifact, chunks: Iterator[bytes]) -> None:
    """pg_restore reads every block of the archive (raises PostgresError if it cannot)."""
    for _chunk in archive_read_through(pg_tool("pg_restore"), chunks):
        pass
