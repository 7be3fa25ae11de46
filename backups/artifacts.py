"""Where backup files live: any Django storage backend (STORAGES["artifacts"]), written atomically.

A file is streamed to a temporary key and promoted to its final key only once the job has succeeded, so an
interrupted or failed job never leaves something that looks like a backup. Checksums are computed on the fly:
memory stays flat whatever the size.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from backups.postgres import scratch_dir
from dr_console.jobs.processes import scratch_prefix

if TYPE_CHECKING:
    from backups.models import BackupArtifact

CHUNK_SIZE = 1024 * 1024
TMP_PREFIX = "tmp/"
EXTENSIONS = {"pg_custom": ".dump", "redis_snapshot": ".rsnap"}  # by BackupArtifact.Format


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


def artifact_storage_key(artifact: BackupArtifact) -> str:
    ds = artifact.datastore
    stamp = artifact.created_at
    extension = EXTENSIONS[artifact.format]
    return f"{ds.environment.name}/{ds.name}/{stamp:%Y/%m}/{ds.name}-{stamp:%Y%m%dT%H%M%SZ}-{artifact.pk}{extension}"


def artifact_storage() -> Storage:
    return storages["artifacts"]


class _Hashing:
    """sha256 and size of what went through, and `progress["bytes_done"]` for the job's heartbeat to report."""

    def __init__(self, progress: dict[str, int] | None) -> None:
        self._progress = progress if progress is not None else {}
        self.sha256 = hashlib.sha256()
        self.size = 0

    def _count(self, data: bytes) -> bytes:
        if data:
            self.sha256.update(data)
            self.size += len(data)
            self._progress["bytes_done"] = self.size
        return data

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

    def __init__(self, stream: IO[bytes], progress: dict[str, int] | None = None) -> None:
        super().__init__(progress)
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


class _StreamFile(File):
    """A Django File over a non-seekable stream, read in 1 MiB chunks."""

    DEFAULT_CHUNK_SIZE = CHUNK_SIZE

    def __init__(self, reader: HashingReader | HashingChunkReader, name: str) -> None:
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


def temporary_key(final_key: str, job_id: int) -> str:
    """Where a job writes before promotion. Starts with the job id so the reaper can tell orphans apart."""
    return f"{TMP_PREFIX}{job_id}-{uuid.uuid4().hex[:12]}-{Path(final_key).name}.partial"


def write_stream(key: str, reader: HashingReader | HashingChunkReader) -> str:
    """Stream `reader` to `key` (a temporary key). Returns the name the storage actually used."""
    return artifact_storage().save(key, _StreamFile(reader, key))


def promote(tmp_key: str, final_key: str) -> str:
    """Move a finished temporary file to its final key, atomically where the storage allows."""
    storage = artifact_storage()
    if not isinstance(storage, FileSystemStorage):
        # Object stores publish an object only when its upload completes, so copy-then-delete is safe there.
        with storage.open(tmp_key, "rb") as handle:
            name = storage.save(final_key, handle)
        storage.delete(tmp_key)
        return name
    tmp_path, final_path = storage.path(tmp_key), storage.path(final_key)
    os.makedirs(os.path.dirname(final_path), mode=0o700, exist_ok=True)
    os.replace(tmp_path, final_path)  # atomic on one filesystem
    return final_key


def delete_quietly(key: str) -> None:
    with contextlib.suppress(Exception):
        if key:
            artifact_storage().delete(key)


def iter_chunks(key: str) -> Iterator[bytes]:
    with artifact_storage().open(key, "rb") as handle:
        while data := handle.read(CHUNK_SIZE):
            yield data


def sha256_of(key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in iter_chunks(key):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def local_path(key: str) -> str | None:
    """The file's path when the storage is a local folder; None for remote storages."""
    storage = artifact_storage()
    return storage.path(key) if isinstance(storage, FileSystemStorage) else None


@contextlib.contextmanager
def local_copy(key: str) -> Iterator[tuple[str, str]]:
    """A seekable local file holding the artifact (pg_restore --jobs needs one), and its sha256 as read now.

    Local storage: the file itself, hashed in place. Remote storage: streamed to a scratch file while hashing,
    deleted afterwards.
    """
    path = local_path(key)
    if path is not None:
        digest, _size = sha256_of(key)
        yield path, digest
        return
    fd, scratch = tempfile.mkstemp(prefix=scratch_prefix("copy"), suffix=".dump", dir=scratch_dir())
    try:
        digest_obj = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter_chunks(key):
                digest_obj.update(chunk)
                out.write(chunk)
        yield scratch, digest_obj.hexdigest()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
