"""Copies: every succeeded backup is copied to each copy location of its datastore (3-2-1: a second medium, off
site). This is where a copy happens.

Each copy is a job row (ArtifactCopy) run by the job framework, like a backup: a redelivered message never copies
twice, a killed worker's copy ends failed and its upload is swept. The copy streams the primary file to the copy
location, hashing the source as it reads it (a primary that no longer matches its record is not copied), encrypting
it to the location's recipients when they differ from the primary's, and publishing it only at the end of the
stream (artifacts.StagedWrite). It is then read back *from that location* and hashed again: only a copy whose bytes
there match what was written is VERIFIED. Restores fall back to verified copies (backups.sources).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import queue
import threading
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_job_finished, audit_record
from backups import artifacts, encryption
from backups.locations import Location, LocationUnavailable, location_get
from backups.manifests import manifest_write
from backups.models import ArtifactCopy, BackupArtifact
from backups.object_store import ObjectStoreError
from dr_console.jobs import (
    BrokerUnavailable,
    JobContext,
    JobFailed,
    JobOutcome,
    JobType,
    job_cancel,
    job_enqueue,
    job_run,
    jobs_reap,
)
from dr_console.notifications import notify_job_failed

logger = logging.getLogger(__name__)
Status = ArtifactCopy.Status


class CopyRefused(Exception):
    """A copy that cannot be asked for; nothing was created."""


def artifact_copies_request(
    *,
    artifact_id: int,
    trigger: str,
    requested_by: User | None = None,
    locations: list[str] | None = None,
    client_ip: str | None = None,
    enqueue: bool = True,
) -> list[ArtifactCopy]:
    """Queue a copy of a succeeded backup to each of its datastore's copy locations (or to `locations`) that has no
    verified or running copy of it. A broker out of reach fails the copy (it can be asked for again); it does not
    raise, because the backup itself succeeded."""
    artifact = BackupArtifact.objects.select_related("datastore").get(pk=artifact_id)
    if artifact.status != BackupArtifact.Status.SUCCEEDED:
        raise CopyRefused(f"backup #{artifact.pk} is {artifact.status}; only a succeeded backup can be copied")
    names = locations if locations is not None else artifact.datastore.copy_location_names
    created: list[ArtifactCopy] = []
    for name in names:
        if name == artifact.location:
            raise CopyRefused(f"backup #{artifact.pk} is already written to {name}, its primary location")
        if artifact.copies.filter(location=name, status__in=[*ArtifactCopy.ACTIVE, Status.VERIFIED]).exists():
            continue
        try:
            with transaction.atomic():
                copy = ArtifactCopy.objects.create(
                    artifact=artifact,
                    location=name,
                    trigger=(trigger or (f"web:{requested_by.get_username()}" if requested_by else ""))[:120],
                    triggered_by=requested_by,
                )
                audit_record(
                    action=AuditEvent.Action.COPY_REQUESTED,
                    actor=requested_by,
                    actor_label="" if requested_by else trigger,
                    obj=artifact,
                    details={"copy": copy.pk, "location": name},
                    client_ip=client_ip,
                )
                if enqueue:
                    transaction.on_commit(functools.partial(_enqueue, copy.pk))
        except IntegrityError:  # another request queued it meanwhile
            continue
        created.append(copy)
    return created


def _enqueue(copy_id: int) -> None:
    from backups.tasks import artifact_copy_execute_task

    try:
        job_enqueue(artifact_copy_execute_task, ArtifactCopy, pk=copy_id, copy_id=copy_id)
    except BrokerUnavailable as exc:
        logger.warning("copy #%s not handed to a worker: %s", copy_id, exc)


def artifact_copy_execute(*, copy_id: int) -> None:
    job_run(COPY_JOB, pk=copy_id)


def artifact_copy_cancel(*, copy_id: int, cancelled_by: User | None, client_ip: str | None = None) -> bool:
    who = cancelled_by.get_username() if cancelled_by else "the console"
    cancelled = job_cancel(COPY_JOB, pk=copy_id, who=who)
    if cancelled:
        copy = ArtifactCopy.objects.select_related("artifact").get(pk=copy_id)
        audit_record(
            action=AuditEvent.Action.COPY_CANCELLED,
            actor=cancelled_by,
            obj=copy.artifact,
            details={"copy": copy_id, "location": copy.location},
            client_ip=client_ip,
        )
    return cancelled


# --- copying ------------------------------------------------------------------------------------------------------


class _SourceClosed(Exception):
    """Raised by a read of a source reader that was closed (the copy already failed), to end the thread reading."""


_END = object()  # the end of the primary file, in _SourceReader's queue


class _SourceReader:
    """Reads the primary file's chunks, hashing them; at the end, a source that does not match the backup's record
    stops the copy before anything is published.

    The chunks are read in a thread of their own ("copy-source") and handed over through a small queue, which
    read() waits on in short slices: a primary storage that stalls in the middle of a read (a hung mount, an object
    store that stops sending) never holds the copy, whichever thread reads (the job's, or an encryption helper).
    read() raises JobStopped as soon as the row is cancelled or reaped, and _SourceClosed once close() was called
    (a time limit, a failed write), so that the encryption helpers reading from it end too. The fetching thread
    ends when its read returns; it then closes the file."""

    WAIT_SECONDS = 0.1
    JOIN_SECONDS = 1.0

    def __init__(self, chunks: Iterator[bytes], ctx: JobContext) -> None:
        self._chunks = chunks
        self._ctx = ctx
        self._pending = b""
        self._queue: queue.Queue[object] = queue.Queue(maxsize=2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._fetch, name="copy-source", daemon=True)
        self._started = False
        self._ended = False
        self.sha256 = hashlib.sha256()
        self.size = 0

    def _fetch(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as exc:  # raised in the reading thread by read()
            self._put(exc)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()  # a generator's close() closes the file it opened

    def _put(self, item: object) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=self.WAIT_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _next(self) -> bytes | None:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            if self._closed.is_set():
                raise _SourceClosed("the copy's source reader was closed")
            self._ctx.check()
            try:
                item = self._queue.get(timeout=self.WAIT_SECONDS)
            except queue.Empty:
                continue
            if item is _END:
                self._ended = True
                return None
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            assert isinstance(item, bytes)
            return item

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else artifacts.CHUNK_SIZE
        while len(self._pending) < size and not self._ended:
            chunk = self._next()
            if chunk is None:
                break
            self.sha256.update(chunk)
            self.size += len(chunk)
            self._ctx.progress["bytes_done"] = self.size
            self._pending += chunk
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def close(self) -> None:
        """Stop handing out chunks; wait a moment for the fetching thread (it may be blocked in a stalled read, and
        then ends when that read returns)."""
        self._closed.set()
        if self._started:
            self._thread.join(self.JOIN_SECONDS)
            if self._thread.is_alive():
                logger.warning("copy: the primary storage is still stalled in a read; its thread ends when it returns")


def _copy(ctx: JobContext) -> JobOutcome:
    copy: ArtifactCopy = ctx.job
    artifact = BackupArtifact.objects.select_related("datastore__environment").get(pk=copy.artifact_id)
    if artifact.status != BackupArtifact.Status.SUCCEEDED:
        raise JobFailed(f"backup #{artifact.pk} is {artifact.status}; only a succeeded backup can be copied")
    ctx.progress["bytes_done"] = 0
    try:
        source = location_get(artifact.location)
        target = location_get(copy.location)
        source_storage = source.storage()
        target_storage = target.storage()
        if not source_storage.exists(artifact.storage_key):
            raise JobFailed(f"the backup's file {artifact.storage_key} is missing from {source.name}; nothing copied")
        written = _stream(artifact, source, target, ctx)
        key, size, digest = written
        ctx.check()
        stored_digest, stored_size = artifacts.sha256_of(key, target_storage)
    except (LocationUnavailable, ObjectStoreError, encryption.EncryptionError) as exc:
        raise JobFailed(f"{exc}; nothing was copied") from None
    except OSError as exc:
        raise JobFailed(f"cannot copy to {copy.location}: {exc}") from None
    if (stored_digest, stored_size) != (digest, size):
        artifacts.delete_quietly(key, target_storage)
        raise JobFailed(
            f"read back from {target.name}, the copy hashes to {stored_digest} ({stored_size} bytes), not the "
            f"{digest} ({size} bytes) that was written; it is not counted as a copy"
        )
    recipients = list(target.recipients) if target.recipients else list(artifact.recipients)
    retain_until = target.retain_until(artifact.taken_at)
    try:
        manifest_write(artifact, target, key=key, sha256=digest, size=size, recipients=recipients)
    except (OSError, ObjectStoreError, LocationUnavailable) as exc:
        logger.warning("copy #%s: no manifest written at %s: %s", copy.pk, target.name, exc)
    return JobOutcome(
        fields={
            "storage_key": key,
            "size_bytes": size,
            "bytes_done": size,
            "sha256": digest,
            "recipients": recipients,
            "retain_until": retain_until,
            "verified_at": timezone.now(),
        },
        on_lost=lambda: artifacts.delete_quietly(key, target_storage),
    )


def _stream(artifact: BackupArtifact, source: Location, target: Location, ctx: JobContext) -> tuple[str, int, str]:
    """Stream the primary file to `target`. Bytes pass as they are when both hold the same encryption (or none);
    a plain primary is encrypted to the target's recipients; an encrypted primary going to a location with other
    recipients is opened with the primary location's identity first (the copy then says which key it needs)."""
    reader = _SourceReader(artifacts.iter_chunks(artifact.storage_key, source.storage()), ctx)

    def source_matches() -> None:
        if reader.sha256.hexdigest() != artifact.sha256 or reader.size != artifact.size_bytes:
            raise JobFailed(
                f"the backup's file at {source.name} hashes to {reader.sha256.hexdigest()} ({reader.size} bytes), "
                f"not the {artifact.sha256} recorded; it was not copied. Verify the backup"
            )

    checked: artifacts.Readable = artifacts.EndCheckedReader(reader, source_matches)
    closing: list[encryption.EncryptingReader | encryption.DecryptingReader] = []
    wanted = sorted(target.recipients) if target.recipients else sorted(artifact.recipients)
    stream: artifacts.Readable = checked
    if wanted != sorted(artifact.recipients):
        if artifact.recipients:
            identities = _source_identities(source, list(artifact.recipients))
            decrypting = encryption.DecryptingReader(
                stream, identities, recipients=list(artifact.recipients), identity_env=source.identity_env
            )
            closing.append(decrypting)
            stream = decrypting
        if target.recipients:
            encrypting = encryption.EncryptingReader(stream, list(target.recipients))
            closing.append(encrypting)
            stream = encrypting
    hashed = artifacts.HashingFileReader(stream)
    staged = artifacts.StagedWrite(
        target,
        artifacts.artifact_storage_key(artifact, encrypted=bool(wanted)),
        artifact.pk,
        expected_bytes=artifact.size_bytes,
        retain_until=target.retain_until(artifact.taken_at),
    )
    try:
        staged.write(hashed)
        ctx.check()
        key = staged.publish()
    except BaseException:
        staged.discard()
        raise
    finally:
        reader.close()  # first: an encryption helper blocked reading from it ends, and its close() returns at once
        for reader_to_close in closing:
            reader_to_close.close()
    return key, hashed.size, hashed.sha256.hexdigest()


def _source_identities(source: Location, recipients: list[str]) -> list[object]:
    if not source.identity_env:
        raise encryption.KeyUnavailable(
            f"the backup is encrypted to {', '.join(map(encryption.short_recipient, recipients))} and the copy "
            f"location wants other recipients; storage location {source.name} names no identity variable "
            "(identity_env) to open it"
        )
    return list(encryption.identities_from_env(source.identity_env))


def _copy_finished(copy_id: int) -> None:
    copy = ArtifactCopy.objects.select_related("artifact__datastore__environment").get(pk=copy_id)
    audit_job_finished(
        action=AuditEvent.Action.COPY_FINISHED,
        job=copy,
        about=copy.artifact,
        copy=copy.pk,
        location=copy.location,
        sha256=copy.sha256,
    )
    if copy.status in (Status.FAILED, Status.ERRORED):
        datastore = copy.artifact.datastore
        notify_job_failed(
            noun=f"copy to {copy.location}", job=copy, datastore_name=datastore.name, environment=datastore.environment
        )


def _copy_reaped(copy: object) -> None:
    """A copy whose worker died: the temporary file or the multipart upload it left goes."""
    from backups.services import backup_artifacts_delete_orphans

    backup_artifacts_delete_orphans()


COPY_JOB = JobType(
    name="copy",
    model=ArtifactCopy,
    work=_copy,
    running=Status.RUNNING,
    succeeded=Status.VERIFIED,
    time_limit=lambda: settings.BACKUP_TIME_LIMIT,
    time_limit_message="time limit of {seconds} s reached; the copy was stopped",
    stale_message="worker lost: no heartbeat; the copy did not finish",
    lost_message="the broker lost the message that hands this copy to a worker; ask for it again",
    on_finished=_copy_finished,
    on_reaped=_copy_reaped,
)


def artifact_copies_reap_stale() -> int:
    return jobs_reap(COPY_JOB)


def artifact_copies_run_inline(*, artifact_id: int, trigger: str = "inline") -> list[ArtifactCopy]:
    """Copy a backup to its copy locations in this process (`manage.py backup --inline`, tests, benchmarks): the
    copies it asked for after the backup, still queued, are run here (a broker message that arrives later finds
    them claimed), and any copy location still missing one is asked for now."""
    artifact_copies_request(artifact_id=artifact_id, trigger=trigger, enqueue=False)
    queued = list(
        ArtifactCopy.objects.filter(artifact_id=artifact_id, status=Status.QUEUED).values_list("pk", flat=True)
    )
    for pk in queued:
        artifact_copy_execute(copy_id=pk)
    return list(ArtifactCopy.objects.filter(artifact_id=artifact_id).order_by("location", "-pk"))
