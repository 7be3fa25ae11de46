"""Backup files in storage locations (backups.locations): written so that only a complete, checked file is ever
published, and read back as a stream. Checksums are computed on the fly: memory stays flat whatever the size.

A file is published only once its job has checked it (`StagedWrite`): a local folder gets a temporary key renamed
into place; an object store gets a multipart upload at the final key, completed only when the stream's end check
passed (`EndCheckedReader`: pg_dump exited 0, the archive's table of contents reads). A completed multipart upload
is atomic, so a bucket under Object Lock is never asked to overwrite or delete a temporary object.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, cast

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from backups import object_store
from backups.encryption import EncryptingReader
from backups.locations import Location
from backups.postgres import scratch_dir
from dr_console.jobs.processes import scratch_prefix

if TYPE_CHECKING:
    from backups.models import BackupArtifact

CHUNK_SIZE = 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


TMP_PREFIX = "tmp/"
EXTENSIONS = {"pg_custom": ".dump", "redis_snapshot": ".rsnap"}  # by BackupArtifact.Format


ENCRYPTED_SUFFIX = ".age"  # an age file: `age -d -i key.txt < F.dump.age | pg_restore ...`


@dataclass
class DumpOutcome:
    """What taking a backup produced, whatever its format: saved on the row when the job succeeds."""

    storage_key: str
    size_bytes: int
    sha256: str
    tool_version: str
    server_version: str
    archive_entries: int
    row_counts: dict[str, int]
    stderr_tail: str
    location: str = ""
    recipients: list[str] = field(default_factory=list)
    plaintext_sha256: str = ""
    plaintext_size: int | None = None
    retain_until: datetime | None = None

    def fields(self) -> dict[str, object]:
        """The backup row's fields this outcome sets."""
        return {
            "storage_key": self.storage_key,
            "size_bytes": self.size_bytes,
            "bytes_done": self.size_bytes,
            "sha256": self.sha256,
            "tool_version": self.tool_version,
            "server_version": self.server_version,
            "archive_entries": self.archive_entries,
            "row_counts": self.row_counts,
            "stderr_tail": self.stderr_tail,
            "location": self.location,
            "recipients": self.recipients,
            "plaintext_sha256": self.plaintext_sha256,
            "plaintext_size": self.plaintext_size,
            "retain_until": self.retain_until,
        }


def artifact_storage_key(artifact: BackupArtifact, *, encrypted: bool = False) -> str:
    """The file's key, the same path in every location (an encrypted file ends in .age)."""
    ds = artifact.datastore
    stamp = artifact.created_at
    extension = EXTENSIONS[artifact.format] + (ENCRYPTED_SUFFIX if encrypted else "")
    return f"{ds.environment.name}/{ds.name}/{stamp:%Y/%m}/{ds.name}-{stamp:%Y%m%dT%H%M%SZ}-{artifact.pk}{extension}"


def artifact_storage() -> Storage:
    """The built-in `default` location's storage (STORAGES["artifacts"])."""
    return storages["artifacts"]


class _Hashing:
    """sha256 and size of what went through, and `progress["bytes_done"]` for the job's heartbeat to report."""

    def __init__(self, progress: dict[str, int] | None, keep_head: int = 0) -> None:
        self._progress = progress if progress is not None else {}
        self.sha256 = hashlib.sha256()
        self.size = 0
        # The stream's first bytes, for a check at its end (a pg_dump archive's table of contents comes first).
        self.head = bytearray()
        self._keep_head = keep_head

    def _count(self, data: bytes) -> bytes:
        if data:
            self.sha256.update(data)
            self.size += len(data)
            self._progress["bytes_done"] = self.size
            if len(self.head) < self._keep_head:
                self.head += data[: self._keep_head - len(self.head)]
        return data

    @property
    def head_is_whole(self) -> bool:
        return self.size <= len(self.head)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class HashingReader(_Hashing):
    """File-like reader of a subprocess's output pipe that computes sha256 and size as it goes.

    pg_dump writes in small pieces; reading each as it arrives costs a wake-up per few KiB (100,000 for a
    1 GiB dump), CPU that the dump itself needs on a small machine. So after a short read, when the pipe is
    wide enough to buffer it, the reader naps 5 ms and lets the pipe fill: about ten times fewer, larger reads.
    A full read (a fast producer) never naps, so the producer never waits on us.
    """

    NAP_SECONDS = 0.005
    SHORT_READ = 256 * 1024

    def __init__(self, stream: IO[bytes], progress: dict[str, int] | None = None, keep_head: int = 0) -> None:
        super().__init__(progress, keep_head)
        self._fd = stream.fileno()
        self._nap = pipe_size(self._fd) >= 1 << 20

    def read(self, size: int = -1) -> bytes:
        data = os.read(self._fd, size if size and size > 0 else CHUNK_SIZE)
        if self._nap and 0 < len(data) < self.SHORT_READ:
            time.sleep(self.NAP_SECONDS)
        return self._count(data)


class HashingChunkReader(_Hashing):
    """File-like reader over bytes a generator produces (the Redis snapshot), hashing as it goes.
    `read(size)` returns `size` bytes until the end, as storages that upload in parts expect."""

    def __init__(self, chunks: Iterator[bytes], progress: dict[str, int] | None = None) -> None:
        super().__init__(progress)
        self._chunks = chunks
        self._pending = bytearray()

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else CHUNK_SIZE
        while len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return self._count(data)


class HashingFileReader(_Hashing):
    """File-like reader over another reader (an encrypting one), hashing what it passes on: the stored bytes."""

    def __init__(self, source: Readable, progress: dict[str, int] | None = None) -> None:
        super().__init__(progress)
        self._source = source

    def read(self, size: int = -1) -> bytes:
        return self._count(self._source.read(size if size and size > 0 else CHUNK_SIZE))


class EndCheckedReader:
    """Passes `source` through; at its end, before saying so, calls `at_end`, which raises if the file must not be
    published (pg_dump exited non-zero, the archive does not read). A writer that publishes at the end of the stream
    (a multipart upload's completion) thus never publishes a bad file."""

    def __init__(self, source: Readable, at_end: Callable[[], None]) -> None:
        self._source = source
        self._at_end: Callable[[], None] | None = at_end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if not data and self._at_end is not None:
            at_end, self._at_end = self._at_end, None
            at_end()
        return data


class _StreamFile(File):
    """A Django File over a non-seekable stream, read in 1 MiB chunks."""

    DEFAULT_CHUNK_SIZE = CHUNK_SIZE

    def __init__(self, reader: Readable, name: str) -> None:
        super().__init__(cast(IO[bytes], reader), name=name)
        self.reader = reader

    @property
    def size(self) -> int:  # storages that ask for a size get "unknown"; S3 multipart handles streams
        return 0

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        while data := self.reader.read(chunk_size or self.DEFAULT_CHUNK_SIZE):
            yield data


def pipe_size(fd: int) -> int:
    """The pipe's buffer size (Linux), or 0 when it is not a pipe or cannot be told."""
    try:
        return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
    except (AttributeError, OSError):
        return 0


KEY_BACKUP_ID = re.compile(r"-(\d+)\.(?:dump|rsnap)(?:\.age)?\Z")


def backup_id_of_key(key: str) -> str:
    """The backup a file's key belongs to ("" when it is not a backup's): a final key ends in -<id>.<extension>,
    a temporary one starts with tmp/<id>-."""
    name = key.removeprefix(TMP_PREFIX)
    if name != key:
        return name.split("-", 1)[0]
    found = KEY_BACKUP_ID.search(key)
    return found.group(1) if found else ""


def temporary_key(final_key: str, job_id: int) -> str:
    """Where a job writes before promotion. Starts with the job id so the reaper can tell orphans apart."""
    return f"{TMP_PREFIX}{job_id}-{uuid.uuid4().hex[:12]}-{Path(final_key).name}.partial"


def write_stream(key: str, reader: Readable, storage: Storage | None = None) -> str:
    """Stream `reader` to `key` (a temporary key). Returns the name the storage actually used."""
    return (storage or artifact_storage()).save(key, _StreamFile(reader, key))


def promote(tmp_key: str, final_key: str, storage: Storage | None = None) -> str:
    """Move a finished temporary file to its final key: atomically in a local folder (one filesystem)."""
    storage = storage or artifact_storage()
    if not isinstance(storage, FileSystemStorage):
        # Another kind of storage (not an object store, which StagedWrite publishes by completing the upload):
        # copy, then delete the temporary file.
        with storage.open(tmp_key, "rb") as handle:
            name = storage.save(final_key, handle)
        storage.delete(tmp_key)
        return name
    tmp_path, final_path = storage.path(tmp_key), storage.path(final_key)
    os.makedirs(os.path.dirname(final_path), mode=0o700, exist_ok=True)
    os.replace(tmp_path, final_path)  # atomic on one filesystem
    return final_key


class StagedWrite:
    """One file being written to one location, published only by `write()` reaching the end of a checked stream
    and `publish()`. On any failure `discard()` leaves nothing at the location (an aborted multipart upload has no
    parts left; the sweep of orphan uploads catches one whose abort could not reach the endpoint).

    Local folder: the stream goes to a temporary key (its job id first, for the reaper), renamed by `publish()`.
    Object store: a multipart upload at the final key with the location's Object Lock date; the stream's end check
    runs before the upload completes, and `publish()` has nothing left to do.
    """

    def __init__(
        self,
        location: Location,
        final_key: str,
        job_id: int,
        *,
        expected_bytes: int | None = None,
        retain_until: datetime | None = None,
    ) -> None:
        self.location = location
        self.final_key = final_key
        self.storage = location.storage()
        self._object_store = object_store.is_object_store(self.storage)
        self._tmp_key = "" if self._object_store else temporary_key(final_key, job_id)
        self._written = ""
        self._expected = expected_bytes
        self.retain_until = retain_until

    def write(self, reader: Readable, progress: dict[str, int] | None = None) -> None:
        if self._object_store:
            object_store.multipart_write(
                self.storage,
                self.final_key,
                reader,
                expected_bytes=self._expected,
                lock_mode=self.location.object_lock.upper() if self.location.is_locked else None,
                retain_until=self.retain_until,
                progress=progress,
            )
            self._written = self.final_key
        else:
            self._written = write_stream(self._tmp_key, reader, self.storage)

    @property
    def local_path(self) -> str | None:
        """The written file's path before it is published (local folders only)."""
        if self._object_store or not self._written:
            return None
        return str(self.storage.path(self._written))

    def publish(self) -> str:
        if self._object_store:
            return self.final_key
        key = promote(self._written, self.final_key, self.storage)
        self._written = ""
        return key

    def discard(self) -> None:
        if self._object_store:
            return  # nothing was published: the upload was aborted by multipart_write itself
        delete_quietly(self._written or self._tmp_key, self.storage)


class FileLocked(Exception):
    """The storage refused to delete a file still under Object Lock: it can go on `until`, not before (None: a
    legal hold, until someone lifts it)."""

    def __init__(self, until: datetime | None, mode: str) -> None:
        when = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "by a legal hold"
        super().__init__(f"locked {when} ({mode})")
        self.until = until
        self.mode = mode


def _delete(storage: Storage, key: str) -> None:
    """Delete a stored file for good: in an object store every version of it (a plain delete on a versioned bucket
    only hides the data behind a delete marker). object_store.ObjectLocked, deleting nothing, when it is locked."""
    if object_store.is_object_store(storage):
        object_store.object_delete(storage, key)
    else:
        storage.delete(key)


def delete_file(location: Location, key: str) -> None:
    """Delete one file at `location` (a missing file is no error). FileLocked when the object is under Object Lock;
    any other failure propagates as the storage raised it."""
    try:
        _delete(location.storage(), key)
    except object_store.ObjectLocked as exc:
        raise FileLocked(exc.until, str(exc.mode or location.object_lock).lower()) from exc


def delete_quietly(key: str, storage: Storage | None = None) -> None:
    """Delete a file the job is abandoning, if it can (a locked one stays until its date; retention sees to it)."""
    with contextlib.suppress(Exception):
        if key:
            _delete(storage or artifact_storage(), key)


def iter_chunks(key: str, storage: Storage | None = None) -> Iterator[bytes]:
    storage = storage or artifact_storage()
    if object_store.is_object_store(storage):
        yield from object_store.object_chunks(storage, key, CHUNK_SIZE)
        return
    with storage.open(key, "rb") as handle:
        while data := handle.read(CHUNK_SIZE):
            yield data


def sha256_of(key: str, storage: Storage | None = None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in iter_chunks(key, storage):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def local_path(key: str, storage: Storage | None = None) -> str | None:
    """The file's path when the storage is a local folder; None for remote storages."""
    storage = storage or artifact_storage()
    return storage.path(key) if isinstance(storage, FileSystemStorage) else None


@contextlib.contextmanager
def local_copy(key: str, storage: Storage | None = None) -> Iterator[tuple[str, str]]:
    """A seekable local file holding the artifact (pg_restore --jobs needs one), and its sha256 as read now.

    Local storage: the file itself, hashed in place. Remote storage: streamed to a scratch file while hashing,
    deleted afterwards.
    """
    path = local_path(key, storage)
    if path is not None:
        digest, _size = sha256_of(key, storage)
        yield path, digest
        return
    fd, scratch = tempfile.mkstemp(prefix=scratch_prefix("copy"), suffix=".dump", dir=scratch_dir())
    try:
        digest_obj = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter_chunks(key, storage):
                digest_obj.update(chunk)
                out.write(chunk)
        yield scratch, digest_obj.hexdigest()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


HEAD_BYTES = 16 * 1024 * 1024  # enough for the table of contents of an archive of tens of thousands of tables


@dataclass
class StoredStream:
    """A backup stream written (not yet published) to its primary location."""

    staged: StagedWrite
    plain: _Hashing
    stored: _Hashing
    recipients: list[str]

    def outcome_fields(self) -> dict[str, object]:
        return {
            "size_bytes": self.stored.size,
            "sha256": self.stored.sha256.hexdigest(),
            "location": self.staged.location.name,
            "recipients": self.recipients,
            "plaintext_sha256": self.plain.sha256.hexdigest(),
            "plaintext_size": self.plain.size,
            "retain_until": self.staged.retain_until,
        }


def stream_to_location(
    artifact: BackupArtifact,
    location: Location,
    plain: HashingReader | HashingChunkReader,
    *,
    at_end: Callable[[], None],
    expected_bytes: int | None = None,
) -> StoredStream:
    """Write a backup's stream to `location`: encrypted to its recipients if it has any, hashed before and after,
    with `at_end` run before an object store's upload completes. The caller publishes it (`staged.publish()`)
    or discards it (`staged.discard()`)."""
    recipients = list(location.recipients)
    staged = StagedWrite(
        location,
        artifact_storage_key(artifact, encrypted=bool(recipients)),
        artifact.pk,
        expected_bytes=expected_bytes,
        retain_until=location.retain_until(artifact.started_at or artifact.created_at),
    )
    checked = EndCheckedReader(plain, at_end)
    stored: _Hashing = plain
    source: Readable = checked
    if recipients:
        encrypting = EncryptingReader(checked, recipients)
        stored = encrypting  # type: ignore[assignment]  # it hashes the ciphertext it hands over
        source = encrypting
    try:
        staged.write(source)
    except BaseException:
        staged.discard()
        raise
    finally:
        if recipients:
            encrypting.close()
    return StoredStream(staged=staged, plain=plain, stored=stored, recipients=recipients)
