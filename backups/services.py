"""Backups: request one, take it (pg_dump, or a Redis snapshot, streamed into storage), verify it, reap jobs whose
worker died.

The BackupArtifact row is the source of truth. A task only works on an artifact it has claimed with a
compare-and-set transition, so a redelivered broker message never starts a second pg_dump and a finished
backup is never redone. What differs between datastore kinds (how to take the file, how to read it back) is one
`BackupMethod` per artifact format, at the end of this module; everything around it is shared.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from kombu.exceptions import OperationalError as KombuOperationalError

from audit.models import AuditEvent
from audit.services import audit_record
from backups import artifacts, redis_snapshot
from backups.models import BackupArtifact, Datastore, TargetLock
from backups.postgres import (
    PostgresError,
    archive_read_through,
    archive_toc,
    count_rows,
    describe_exit,
    first_line,
    list_dumped_tables,
    pg_connection_from_env,
    pg_tool,
    read_tail,
    server_version,
    start_process,
    stop_process,
    tool_version,
)
from backups.redis_snapshot import RedisDatastoreError, SnapshotCorrupt
from dr_console.jobs import (
    JobHeartbeat,
    JobModel,
    JobStopped,
    job_claim,
    job_fail,
    job_heartbeat,
    job_transition,
    jobs_reap_stale,
    stale_cutoff,
)
from dr_console.notifications import alert_recipients, notify

logger = logging.getLogger(__name__)
Status = BackupArtifact.Status
Verification = BackupArtifact.Verification
RUNNING_ONLY = frozenset({Status.RUNNING})


class BackupRefused(Exception):
    """A backup request that cannot be accepted; nothing was created."""


class BrokerUnavailable(Exception):
    """The job row exists but could not be handed to a worker; it has been marked failed."""


class JobFailed(Exception):
    """An expected failure of a job: recorded on the row as its error, with the tool's stderr tail."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


# Failures a job expects and records as its error (anything else is logged with its traceback as well).
EXPECTED_ERRORS = (JobFailed, PostgresError, RedisDatastoreError)


# --- requesting --------------------------------------------------------------------------------------------------


def backup_artifact_request(
    *,
    datastore: Datastore,
    trigger: str,
    triggered_by: User | None = None,
    enqueue: bool = True,
    client_ip: str | None = None,
) -> BackupArtifact:
    """Create a pending backup of `datastore` and hand it to a worker once the row is committed
    (`enqueue=False`: the caller runs it itself, e.g. `manage.py backup --inline`)."""
    datastore_check_not_broker(datastore)
    level = datastore.compression_level
    try:
        with transaction.atomic():
            running = datastore.artifacts.filter(status__in=BackupArtifact.ACTIVE).first()
            if running:
                raise BackupRefused(
                    _("a backup of %(datastore)s is already %(status)s (#%(id)s)")
                    % {"datastore": datastore.name, "status": running.get_status_display().lower(), "id": running.pk}
                )
            artifact = BackupArtifact.objects.create(
                datastore=datastore,
                format=FORMAT_BY_KIND[Datastore.Kind(datastore.kind)],
                compression_level=settings.BACKUP_DEFAULT_COMPRESSION if level is None else level,
                trigger=trigger[:120],
                triggered_by=triggered_by,
            )
            audit_record(
                action=AuditEvent.Action.BACKUP_REQUESTED,
                actor=triggered_by,
                actor_label="" if triggered_by else trigger,
                obj=artifact,
                details={"datastore": datastore.name, "trigger": trigger},
                client_ip=client_ip,
            )
            if enqueue:
                transaction.on_commit(lambda: _enqueue_backup(artifact.pk))
    except IntegrityError:  # another request won the race the check above could not see
        raise BackupRefused(_("a backup of %(datastore)s is already running") % {"datastore": datastore.name}) from None
    return artifact


def _enqueue_backup(artifact_id: int) -> None:
    from backups.tasks import backup_artifact_execute_task

    job_enqueue(
        backup_artifact_execute_task, BackupArtifact, pk=artifact_id, failed=Status.FAILED, artifact_id=artifact_id
    )


def job_enqueue(task: Any, model: type[JobModel], *, pk: int, failed: str, **kwargs: Any) -> None:
    """Hand a job to the workers (`task.apply_async(kwargs=...)`). A broker that cannot be reached fails the job
    row, so it does not wait forever, and raises BrokerUnavailable with a message that names no credentials."""
    try:
        task.apply_async(kwargs=kwargs, retry=True)
    except KombuOperationalError as exc:
        message = f"could not reach the task broker at {broker_label()}: {exc}"
        job_transition(model, pk=pk, to=failed, error=message)
        raise BrokerUnavailable(message) from None


def broker_label() -> str:
    """The broker URL without credentials, safe to show."""
    parts = urlsplit(settings.CELERY_BROKER_URL)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def datastore_check_not_broker(datastore: Datastore) -> None:
    """The console's broker must never be the Redis it protects: losing that Redis would lose the very jobs
    that recover it. Compares host, port and database number (one Redis server may serve both, on
    different database numbers)."""
    if datastore.kind != Datastore.Kind.REDIS:
        return
    import os

    url = os.environ.get(datastore.url_env, "")
    if url and redis_identity(url) == redis_identity(settings.CELERY_BROKER_URL):
        raise BackupRefused(
            _(
                "%(datastore)s (%(variable)s) is the console's own task broker; "
                "point CELERY_BROKER_URL at another Redis or database number"
            )
            % {"datastore": datastore.name, "variable": datastore.url_env}
        )


def redis_identity(url: str) -> tuple[str, int, int] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return None
    host = parts.hostname or "localhost"
    host = "127.0.0.1" if host in ("localhost", "::1") else host
    try:
        db = int((parts.path or "/0").strip("/") or 0)
    except ValueError:
        db = 0
    return host, parts.port or 6379, db


# --- target locks --------------------------------------------------------------------------------------------------


def datastore_target_key(datastore_id: int) -> str:
    return f"datastore:{datastore_id}"


def target_lock_acquire(*, target_key: str, holder: str) -> str:
    """Take the lock on a target database. Returns "" on success, else who holds it ("restore #3")."""
    try:
        with transaction.atomic():
            TargetLock.objects.create(target_key=target_key, holder=holder)
        return ""
    except IntegrityError:  # the unique key: another job got there first
        return TargetLock.objects.filter(target_key=target_key).values_list("holder", flat=True).first() or (
            "another job"
        )


def target_lock_release(*, target_key: str, holder: str) -> None:
    TargetLock.objects.filter(target_key=target_key, holder=holder).delete()


def target_locks_release_stale() -> int:
    """Release locks whose holder is no longer running (its worker died). Returns how many."""
    from restores.models import RestoreRun

    released = 0
    for lock in TargetLock.objects.all():
        kind, _separator, number = lock.holder.partition(" #")
        if kind == "backup":
            alive = BackupArtifact.objects.filter(pk=number, status=Status.RUNNING).exists()
        elif kind == "restore":
            alive = RestoreRun.objects.filter(pk=number, status__in=RestoreRun.RUNNING_STATES).exists()
        else:
            alive = False
        if not alive:
            released += TargetLock.objects.filter(pk=lock.pk).delete()[0]
    return released


# --- taking the backup ---------------------------------------------------------------------------------------------


@dataclass
class DumpOutcome:
    storage_key: str
    size_bytes: int
    sha256: str
    tool_version: str
    server_version: str
    archive_entries: int
    row_counts: dict[str, int]
    stderr_tail: str


def backup_artifact_execute(*, artifact_id: int, verify_after: bool | None = None, lock_held: bool = False) -> None:
    """Take the backup. Safe to call twice: only the caller that wins PENDING -> RUNNING does any work.

    The job holds its datastore's target lock while it runs, so no restore touches the database meanwhile;
    `lock_held=True` is for a restore taking its safety backup under its own lock.
    """
    if not job_claim(
        BackupArtifact,
        pk=artifact_id,
        to=Status.RUNNING,
        label=f"backup #{artifact_id}",
        fields={"started_at": timezone.now()},
    ):
        return
    artifact = BackupArtifact.objects.select_related("datastore__environment").get(pk=artifact_id)
    lock_key, holder = datastore_target_key(artifact.datastore_id), f"backup #{artifact_id}"
    if not lock_held:
        current = target_lock_acquire(target_key=lock_key, holder=holder)
        if current:
            _fail(artifact_id, f"{current} is running against {artifact.datastore.name}; try again when it ends")
            _audit_finished(artifact_id)
            return
    try:
        _backup_claimed(artifact, verify_after)
    finally:
        if not lock_held:
            target_lock_release(target_key=lock_key, holder=holder)
        _audit_finished(artifact_id)


def _audit_finished(artifact_id: int) -> None:
    """The audit event of a finished backup, and a notification if it failed."""
    artifact = BackupArtifact.objects.select_related("datastore__environment", "triggered_by").get(pk=artifact_id)
    audit_record(
        action=AuditEvent.Action.BACKUP_FINISHED,
        actor_label="console",
        obj=artifact,
        details={
            "status": artifact.status,
            "error": artifact.error,
            "size_bytes": artifact.size_bytes,
            "sha256": artifact.sha256,
            "duration_seconds": artifact.duration_seconds,
        },
    )
    if artifact.status == Status.FAILED:
        backup_artifact_notify_failed(artifact)


def backup_artifact_notify_failed(artifact: BackupArtifact) -> None:
    datastore = artifact.datastore
    who = artifact.triggered_by.email if artifact.triggered_by else ""
    notify(
        subject=f"[DR Console] Backup #{artifact.pk} of {datastore.name} failed",
        text="\n".join(
            [
                f"Backup #{artifact.pk} of {datastore.name} ({datastore.environment.name}) failed.",
                f"Started by: {artifact.trigger}",
                f"Error: {artifact.error}",
            ]
        ),
        recipients=alert_recipients(who),
        webhook_url=datastore.environment.webhook_url,
        about=f"backup #{artifact.pk}",
    )


def _backup_claimed(artifact: BackupArtifact, verify_after: bool | None) -> None:
    artifact_id = artifact.pk
    progress = {"bytes_done": 0}
    heartbeat = JobHeartbeat(
        lambda: job_heartbeat(BackupArtifact, pk=artifact_id, running_states=RUNNING_ONLY, **progress),
        interval=settings.JOB_HEARTBEAT_SECONDS,
    )
    method = BACKUP_METHODS[BackupArtifact.Format(artifact.format)]
    try:
        with heartbeat:
            outcome = method.take(artifact, heartbeat, progress)
    except JobStopped:
        logger.info("backup #%s stopped: its row left the running state", artifact_id)
        return
    except EXPECTED_ERRORS as exc:
        _fail(artifact_id, str(exc), getattr(exc, "stderr_tail", ""))
        return
    except SoftTimeLimitExceeded:
        _fail(artifact_id, f"time limit of {settings.BACKUP_TIME_LIMIT} s reached; the backup was stopped")
        return
    except OSError as exc:
        _fail(artifact_id, f"cannot write the artifact to storage: {exc}")
        return
    except Exception as exc:
        logger.exception("backup #%s failed unexpectedly", artifact_id)
        _fail(artifact_id, f"internal error: {type(exc).__name__}: {exc}")
        return

    finished = job_transition(
        BackupArtifact,
        pk=artifact_id,
        to=Status.SUCCEEDED,
        fields={
            "storage_key": outcome.storage_key,
            "size_bytes": outcome.size_bytes,
            "bytes_done": outcome.size_bytes,
            "sha256": outcome.sha256,
            "tool_version": outcome.tool_version,
            "server_version": outcome.server_version,
            "archive_entries": outcome.archive_entries,
            "row_counts": outcome.row_counts,
            "stderr_tail": outcome.stderr_tail,
        },
    )
    if not finished:  # reaped while we were finishing: the row says failed, so the file must not stay
        artifacts.delete_quietly(outcome.storage_key)
        return
    if settings.BACKUP_VERIFY_AFTER_DUMP if verify_after is None else verify_after:
        transaction.on_commit(lambda: _enqueue_verify(artifact_id, quiet=True))


def _fail(artifact_id: int, message: str, stderr_tail: str = "") -> None:
    job_fail(
        BackupArtifact,
        pk=artifact_id,
        to=Status.FAILED,
        label=f"backup #{artifact_id}",
        error=message,
        stderr_tail=stderr_tail,
    )


def artifact_storage_key(artifact: BackupArtifact) -> str:
    ds = artifact.datastore
    stamp = artifact.created_at
    extension = BACKUP_METHODS[BackupArtifact.Format(artifact.format)].extension
    return f"{ds.environment.name}/{ds.name}/{stamp:%Y/%m}/{ds.name}-{stamp:%Y%m%dT%H%M%SZ}-{artifact.pk}{extension}"


def _dump_postgres(artifact: BackupArtifact, heartbeat: JobHeartbeat, progress: dict[str, int]) -> DumpOutcome:
    """Stream pg_dump's custom-format output into storage, counting every table's rows in the same snapshot.

    1. Open a REPEATABLE READ transaction on the source and export its snapshot.
    2. Start pg_dump --snapshot=<it> in its own process group; stream its stdout to a temporary key while
       hashing, and meanwhile count rows in the exported snapshot on our connection (a second thread).
    3. On success check the archive's table of contents and promote the file to its final key. On any failure
       stop pg_dump and delete the temporary file: a failed job leaves no artifact behind.
    The heartbeat stops pg_dump if the row leaves `running` meanwhile (the reaper gave up on us).
    """
    target = pg_connection_from_env(artifact.datastore.url_env)
    pg_dump, pg_restore = pg_tool("pg_dump"), pg_tool("pg_restore")
    dump_version, dump_major = tool_version(pg_dump)
    final_key = artifact_storage_key(artifact)
    tmp_key = artifacts.temporary_key(final_key, artifact.pk)

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
        tables = list_dumped_tables(snapshot_conn)
        counter = _RowCounter(snapshot_conn, tables)
        args = [
            pg_dump,
            "--format=custom",
            f"--compress={artifact.compression_level}",
            f"--snapshot={snapshot_row[0]}",
            "--no-password",
        ]
        with target.subprocess_env() as env, tempfile.TemporaryFile() as stderr_file:
            proc = start_process(args, env=env, stdout=subprocess.PIPE, stderr=stderr_file)
            assert proc.stdout is not None
            heartbeat.on_stop(lambda: stop_process(proc))
            counter.start()
            reader = artifacts.HashingReader(proc.stdout, progress)
            written_key = ""
            try:
                written_key = artifacts.write_stream(tmp_key, reader)
                returncode = proc.wait()
                heartbeat.check()
                if returncode == 0:
                    counter.join()
                else:
                    counter.stop()  # its counts are useless now, and it may be waiting on the same lock
            except BaseException:
                stop_process(proc)
                counter.stop()
                artifacts.delete_quietly(written_key or tmp_key)
                raise
            finally:
                proc.stdout.close()
            stderr_tail = target.scrub(read_tail(stderr_file))
        if returncode != 0:
            artifacts.delete_quietly(written_key)
            detail = first_line(_last_error_line(stderr_tail)) if stderr_tail else ""
            raise JobFailed(f"{describe_exit('pg_dump', returncode)}{': ' + detail if detail else ''}", stderr_tail)
        if counter.error:
            artifacts.delete_quietly(written_key)
            raise JobFailed(f"counting rows in the dump's snapshot failed: {target.scrub(counter.error)}", stderr_tail)
    try:
        heartbeat.check()
        local = artifacts.local_path(written_key)
        toc = (
            archive_toc(pg_restore, path=local)
            if local
            else archive_toc(pg_restore, chunks=artifacts.iter_chunks(written_key))
        )
        storage_key = artifacts.promote(written_key, final_key)
    except BaseException:
        artifacts.delete_quietly(written_key)
        raise
    return DumpOutcome(
        storage_key=storage_key,
        size_bytes=reader.size,
        sha256=reader.sha256.hexdigest(),
        tool_version=dump_version,
        server_version=server_text,
        archive_entries=len(toc),
        row_counts=counter.counts,
        stderr_tail=stderr_tail,
    )


def _last_error_line(stderr_tail: str) -> str:
    """pg_dump's most telling line: the last one that says error, else the last one."""
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    return (errors or lines or [""])[-1].removeprefix("pg_dump: ").removeprefix("error: ")


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


def _take_redis_snapshot(artifact: BackupArtifact, heartbeat: JobHeartbeat, progress: dict[str, int]) -> DumpOutcome:
    """Stream a logical snapshot of the Redis database into storage (backups/redis_snapshot.py).

    Written to a temporary key and promoted once the end record is written; on any failure (Redis gone, a
    cancel noticed between batches, storage full) the temporary file is deleted: a failed job leaves no artifact.
    """
    target = redis_snapshot.redis_target_from_env(artifact.datastore.url_env)
    final_key = artifact_storage_key(artifact)
    tmp_key = artifacts.temporary_key(final_key, artifact.pk)
    client = target.client()
    try:
        version = redis_snapshot.server_version(client)
        info = client.info("keyspace")
    except redis.RedisError as exc:
        raise target.error("cannot read the Redis server", exc) from None
    database = client.connection_pool.connection_kwargs.get("db", 0)
    writer = redis_snapshot.SnapshotWriter(
        meta={
            "redis_version": version.removeprefix("Redis "),
            "db": database,
            "keys_at_start": (info.get(f"db{database}") or {}).get("keys", 0),
            "source": artifact.datastore.name,
        },
        compression_level=artifact.compression_level or 0,
    )
    reader = artifacts.HashingChunkReader(
        redis_snapshot.snapshot_chunks(client, writer, checkpoint=heartbeat.check), progress
    )
    written_key = ""
    try:
        written_key = artifacts.write_stream(tmp_key, reader)
        heartbeat.check()
        storage_key = artifacts.promote(written_key, final_key)
    except redis.RedisError as exc:
        artifacts.delete_quietly(written_key or tmp_key)
        raise target.error("the snapshot failed", exc) from None
    except BaseException:
        artifacts.delete_quietly(written_key or tmp_key)
        raise
    finally:
        client.close()
    stats = writer.stats
    notes = []
    if stats.vanished:
        notes.append(f"{stats.vanished} keys vanished during the scan (deleted or expired before DUMP): skipped")
    if stats.repeats:
        notes.append(f"{stats.repeats} repeated keys returned by SCAN were written once")
    return DumpOutcome(
        storage_key=storage_key,
        size_bytes=reader.size,
        sha256=reader.sha256.hexdigest(),
        tool_version=f"DR Console Redis snapshot format {redis_snapshot.FORMAT_VERSION} (redis-py {redis.__version__})",
        server_version=version,
        archive_entries=stats.keys,
        row_counts=stats.types(),
        stderr_tail="\n".join(notes),
    )


# --- verifying ------------------------------------------------------------------------------------------------------


def backup_artifact_verify_request(
    *, artifact: BackupArtifact, requested_by: User | None = None, trigger: str = "", client_ip: str | None = None
) -> None:
    if artifact.status != Status.SUCCEEDED:
        raise BackupRefused(
            _("backup #%(id)s is %(status)s; only a succeeded backup can be verified")
            % {"id": artifact.pk, "status": artifact.get_status_display().lower()}
        )
    if artifact.verification == Verification.VERIFYING:
        raise BackupRefused(_("backup #%(id)s is already being verified") % {"id": artifact.pk})
    audit_record(
        action=AuditEvent.Action.VERIFY_REQUESTED,
        actor=requested_by,
        actor_label="" if requested_by else trigger,
        obj=artifact,
        client_ip=client_ip,
    )
    transaction.on_commit(lambda: _enqueue_verify(artifact.pk))


def _enqueue_verify(artifact_id: int, quiet: bool = False) -> None:
    from backups.tasks import backup_artifact_verify_task

    try:
        backup_artifact_verify_task.apply_async(kwargs={"artifact_id": artifact_id}, retry=True)
    except KombuOperationalError as exc:
        if quiet:  # the backup itself succeeded; the verification can be asked for again
            logger.warning("could not queue verification of backup #%s: %s", artifact_id, exc)
            return
        raise BrokerUnavailable(f"could not reach the task broker at {broker_label()}: {exc}") from None


def backup_artifact_verify(*, artifact_id: int) -> str:
    """Re-read the stored file: its sha256 and size must match the record and pg_restore must read every block.

    Returns the verification state it recorded. A mismatch or an unreadable archive marks the artifact corrupt;
    a storage that cannot be read right now leaves it unverified with the reason.
    """
    claimed = (
        BackupArtifact.objects.filter(pk=artifact_id, status=Status.SUCCEEDED)
        .exclude(verification=Verification.VERIFYING)
        .update(verification=Verification.VERIFYING, verification_heartbeat_at=timezone.now())
    )
    if not claimed:
        logger.info("backup #%s: not verifiable now (missing, not succeeded, or being verified)", artifact_id)
        return ""
    artifact = BackupArtifact.objects.get(pk=artifact_id)
    verifying = BackupArtifact.objects.filter(pk=artifact_id, verification=Verification.VERIFYING)
    heartbeat = JobHeartbeat(
        lambda: verifying.update(verification_heartbeat_at=timezone.now()) == 1,
        interval=settings.JOB_HEARTBEAT_SECONDS,
    )
    result: str
    error: str
    try:
        with heartbeat:
            result, error = _verify_stored_file(artifact, heartbeat)
    except JobStopped:
        logger.info("verification of backup #%s was taken away (reaped); not recording", artifact_id)
        return ""
    except SoftTimeLimitExceeded:
        result, error = Verification.UNVERIFIED, "verification stopped: time limit reached"
    except Exception as exc:
        logger.exception("verification of backup #%s failed unexpectedly", artifact_id)
        result, error = Verification.UNVERIFIED, f"internal error: {type(exc).__name__}: {exc}"
    verifying.update(
        verification=result, verification_error=error, verified_at=timezone.now(), verification_heartbeat_at=None
    )
    logger.info("backup #%s verification: %s %s", artifact_id, result, error)
    return str(result)


def _verify_stored_file(artifact: BackupArtifact, heartbeat: JobHeartbeat) -> tuple[str, str]:
    """Hash the whole stored file while the format's reader checks it; the checksum always covers every byte,
    even when the reader gave up early."""
    import hashlib

    storage = artifacts.artifact_storage()
    try:
        exists = storage.exists(artifact.storage_key)
    except OSError as exc:
        return Verification.UNVERIFIED, f"cannot reach the artifact storage: {exc}"
    if not exists:
        return Verification.CORRUPT, f"the stored file {artifact.storage_key} is missing"
    digest, size = hashlib.sha256(), 0

    def hashed_chunks() -> Iterator[bytes]:
        nonlocal size
        for chunk in artifacts.iter_chunks(artifact.storage_key):
            heartbeat.check()
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    chunks = hashed_chunks()
    unreadable = ""
    try:
        BACKUP_METHODS[BackupArtifact.Format(artifact.format)].read_through(artifact, chunks)
    except (PostgresError, SnapshotCorrupt) as exc:
        unreadable = str(exc)
    except OSError as exc:
        return Verification.UNVERIFIED, f"cannot read the stored file: {exc}"
    try:
        for _chunk in chunks:  # what the reader left unread still counts for the checksum
            pass
    except OSError as exc:
        return Verification.UNVERIFIED, f"cannot read the stored file: {exc}"
    if digest.hexdigest() != artifact.sha256:
        return Verification.CORRUPT, (
            f"sha256 mismatch: the stored file hashes to {digest.hexdigest()}, the backup recorded {artifact.sha256}"
        )
    if size != artifact.size_bytes:
        return Verification.CORRUPT, f"size mismatch: {size} bytes stored, {artifact.size_bytes} recorded"
    if unreadable:
        return Verification.CORRUPT, unreadable
    return Verification.VERIFIED, ""


def _read_through_pg_archive(artifact: BackupArtifact, chunks: Iterator[bytes]) -> None:
    """pg_restore reads every block of the archive (raises PostgresError if it cannot)."""
    for _chunk in archive_read_through(pg_tool("pg_restore"), chunks):
        pass


def _read_through_redis_snapshot(artifact: BackupArtifact, chunks: Iterator[bytes]) -> None:
    """Every record's checksum, and the end record's count against the keys the backup recorded."""
    redis_snapshot.snapshot_check(chunks, expected_keys=artifact.archive_entries)


# --- what differs by format -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupMethod:
    """How one artifact format is taken and read back. The job around it (claim, lock, heartbeat, temporary key,
    promotion, audit, verification's checksum) is the same for every format."""

    take: Callable[[BackupArtifact, JobHeartbeat, dict[str, int]], DumpOutcome]
    read_through: Callable[[BackupArtifact, Iterator[bytes]], None]
    extension: str


BACKUP_METHODS: dict[BackupArtifact.Format, BackupMethod] = {
    BackupArtifact.Format.PG_CUSTOM: BackupMethod(
        take=_dump_postgres, read_through=_read_through_pg_archive, extension=".dump"
    ),
    BackupArtifact.Format.REDIS_SNAPSHOT: BackupMethod(
        take=_take_redis_snapshot, read_through=_read_through_redis_snapshot, extension=".rsnap"
    ),
}
FORMAT_BY_KIND = {
    Datastore.Kind.POSTGRES: BackupArtifact.Format.PG_CUSTOM,
    Datastore.Kind.REDIS: BackupArtifact.Format.REDIS_SNAPSHOT,
}


# --- reaping jobs whose worker died ---------------------------------------------------------------------------------


def backup_artifacts_reap_stale() -> int:
    """Fail backups whose worker stopped heartbeating, give back stuck verifications, delete orphan
    temporary files. Returns how many backups it failed."""
    cutoff = stale_cutoff(settings.JOB_STALE_AFTER_SECONDS)
    reaped = jobs_reap_stale(
        BackupArtifact,
        running_states=RUNNING_ONLY,
        to=Status.FAILED,
        error="worker lost: no heartbeat; the backup did not finish",
    )
    BackupArtifact.objects.filter(verification=Verification.VERIFYING, verification_heartbeat_at__lt=cutoff).update(
        verification=Verification.UNVERIFIED,
        verification_error="verification interrupted: worker lost",
        verification_heartbeat_at=None,
    )
    target_locks_release_stale()
    _delete_orphan_temporary_files()
    return reaped


def _delete_orphan_temporary_files() -> None:
    storage = artifacts.artifact_storage()
    try:
        _dirs, names = storage.listdir(artifacts.TMP_PREFIX.rstrip("/"))
    except (OSError, NotImplementedError):
        return
    active = {
        str(pk) for pk in BackupArtifact.objects.filter(status__in=BackupArtifact.ACTIVE).values_list("pk", flat=True)
    }
    for name in names:
        if name.split("-", 1)[0] not in active:
            artifacts.delete_quietly(f"{artifacts.TMP_PREFIX}{name}")
