"""Which file of a backup a restore, a drill or a verification reads: the primary file or one of its verified copies,
and falling back from one to the next when a location is unreachable, the file is missing, the key to open it is not
here, or it does not match its record. Each fallback is said (`ReadFile.fallbacks`), so the run's log tells which
copy was restored and why the others were not.

Every byte read is hashed twice: as stored (against the record of that location's file) and as content, after
decryption (against the backup's content checksum). A file that fails either is not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from backups import artifacts, encryption
from backups.locations import Location, LocationUnavailable, location_get
from backups.models import ArtifactCopy, BackupArtifact
from backups.object_store import ObjectStoreError
from backups.postgres import scratch_dir
from dr_console.jobs.processes import scratch_prefix


class SourceUnusable(Exception):
    """This file of the backup cannot be used here; the message says why. `corrupt`: the file is there and is not
    what was recorded (missing, altered), as opposed to a location or a key that is not available here now."""

    def __init__(self, message: str, *, corrupt: bool = False, content: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt
        self.content = content  # the stored bytes match their record; what they decode to does not


class NoUsableSource(Exception):
    """No file of the backup can be used; the message lists each one and why."""


@dataclass(frozen=True)
class ArtifactSource:
    """One stored file of a backup: its primary file, or a verified copy."""

    location_name: str
    key: str
    sha256: str
    size: int | None
    recipients: tuple[str, ...]
    copy_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.location_name} (copy #{self.copy_id})" if self.copy_id else f"{self.location_name} (primary)"


def artifact_sources(artifact: BackupArtifact, prefer: str | None = None) -> list[ArtifactSource]:
    """The backup's files that can be read, the preferred location's first, then the primary, then the copies."""
    sources: list[ArtifactSource] = []
    if artifact.storage_key and artifact.file_deleted_at is None:
        sources.append(
            ArtifactSource(
                location_name=artifact.location,
                key=artifact.storage_key,
                sha256=artifact.sha256,
                size=artifact.size_bytes,
                recipients=tuple(artifact.recipients or ()),
            )
        )
    for copy in artifact.copies.filter(status=ArtifactCopy.Status.VERIFIED).order_by("created_at", "pk"):
        sources.append(
            ArtifactSource(
                location_name=copy.location,
                key=copy.storage_key,
                sha256=copy.sha256,
                size=copy.size_bytes,
                recipients=tuple(copy.recipients or ()),
                copy_id=copy.pk,
            )
        )
    if prefer:
        sources.sort(key=lambda source: source.location_name != prefer)
    return sources


def artifact_reads_in_place(artifact: BackupArtifact) -> bool:
    """Whether a restore reads the primary file where it lies (a plain file in a local folder), without a copy."""
    if artifact.recipients or artifact.file_deleted_at is not None:
        return False
    try:
        return artifacts.local_path(artifact.storage_key, location_get(artifact.location).storage()) is not None
    except LocationUnavailable:
        return False


def artifact_location_names(artifact: BackupArtifact) -> list[str]:
    """Where the backup can be read from, for a restore form's choice."""
    return [source.location_name for source in artifact_sources(artifact)]


@dataclass
class ReadFile:
    """A backup's content, checked, as a local file (pg_restore --jobs needs a seekable one)."""

    path: str
    source: ArtifactSource
    fallbacks: list[str] = field(default_factory=list)

    def note(self) -> str:
        """What a run's log says about where it read the backup."""
        used = f"read from {self.source.label}"
        return f"{used}, after: " + "; ".join(self.fallbacks) if self.fallbacks else used


class SourceReading:
    """The content of one source as chunks: stored bytes hashed, decrypted when encrypted, content hashed. `check()`
    after the last chunk raises SourceUnusable if either checksum or size differs from the record."""

    def __init__(
        self, artifact: BackupArtifact, source: ArtifactSource, checkpoint: Callable[[], None] | None = None
    ) -> None:
        self.artifact = artifact
        self.source = source
        self._checkpoint = checkpoint
        self.stored = hashlib.sha256()
        self.stored_size = 0
        self.content = hashlib.sha256()
        self.content_size = 0
        self._decrypting: encryption.DecryptingReader | None = None

    def _stored_chunks(self, location: Location) -> Iterator[bytes]:
        for chunk in artifacts.iter_chunks(self.source.key, location.storage()):
            if self._checkpoint:
                self._checkpoint()
            self.stored.update(chunk)
            self.stored_size += len(chunk)
            yield chunk

    def chunks(self) -> Iterator[bytes]:
        """The content, decrypted; SourceUnusable when the location, the key or the ciphertext fails."""
        yield from _reading(self)

    def _chunks(self) -> Iterator[bytes]:
        location = _location(self.source)
        stored = self._stored_chunks(location)
        if self.source.recipients:
            identities = _identities(location, self.source)
            self._decrypting = encryption.DecryptingReader(
                artifacts.HashingChunkReader(stored),
                identities,
                recipients=list(self.source.recipients),
                identity_env=location.identity_env,
            )
            plain: Iterator[bytes] = iter(lambda: self._decrypting.read(artifacts.CHUNK_SIZE), b"")  # type: ignore[union-attr]
        else:
            plain = stored
        try:
            for chunk in plain:
                self.content.update(chunk)
                self.content_size += len(chunk)
                yield chunk
        finally:
            if self._decrypting is not None:
                self._decrypting.close()

    def check(self) -> None:
        source, artifact = self.source, self.artifact
        if self.stored.hexdigest() != source.sha256:
            raise SourceUnusable(
                f"{source.label}: sha256 mismatch: the stored file hashes to {self.stored.hexdigest()}, the backup "
                f"recorded {source.sha256}",
                corrupt=True,
            )
        if source.size is not None and self.stored_size != source.size:
            raise SourceUnusable(
                f"{source.label}: size mismatch: {self.stored_size} bytes stored, {source.size} recorded", corrupt=True
            )
        if self.content.hexdigest() != artifact.content_sha256:
            raise SourceUnusable(
                f"{source.label}: checksum mismatch: its content hashes to {self.content.hexdigest()}, the backup "
                f"recorded {artifact.content_sha256}",
                corrupt=True,
                content=True,
            )


def _location(source: ArtifactSource) -> Location:
    try:
        location = location_get(source.location_name)
        storage = location.storage()
        exists = storage.exists(source.key)
    except LocationUnavailable as exc:
        raise SourceUnusable(f"{source.label}: {exc}") from None
    except (OSError, ObjectStoreError, Exception) as exc:  # noqa: BLE001 - a storage backend's own error, said
        raise SourceUnusable(f"{source.label}: unreachable ({type(exc).__name__}: {exc})") from None
    if not exists:
        raise SourceUnusable(f"{source.label}: the file {source.key} is missing", corrupt=True)
    return location


def _identities(location: Location, source: ArtifactSource) -> list[object]:
    try:
        if not location.identity_env:
            raise encryption.KeyUnavailable(
                f"the file is encrypted to {', '.join(map(encryption.short_recipient, source.recipients))}; storage "
                f"location {location.name} names no identity variable (identity_env) to open it"
            )
        return list(encryption.identities_from_env(location.identity_env))
    except encryption.EncryptionError as exc:
        raise SourceUnusable(f"{source.label}: {exc}") from None


@contextlib.contextmanager
def artifact_read_file(
    artifact: BackupArtifact, *, prefer: str | None = None, checkpoint: Callable[[], None] | None = None
) -> Iterator[ReadFile]:
    """A checked local file of the backup's content, from the first source that gives one.

    A plain file in a local folder is used in place, hashed where it lies; any other source is streamed to a
    scratch file (decrypted on the way), deleted afterwards. Raises NoUsableSource naming every source's problem.
    """
    fallbacks: list[str] = []
    for source in artifact_sources(artifact, prefer):
        try:
            with _source_file(artifact, source, checkpoint) as path:
                yield ReadFile(path=path, source=source, fallbacks=fallbacks)
                return
        except SourceUnusable as exc:
            fallbacks.append(str(exc))
    raise NoUsableSource(_none_usable(artifact, fallbacks))


@contextlib.contextmanager
def _source_file(
    artifact: BackupArtifact, source: ArtifactSource, checkpoint: Callable[[], None] | None
) -> Iterator[str]:
    """The checked content of one source as a local path (SourceUnusable before yielding if it is not usable)."""
    reading = SourceReading(artifact, source, checkpoint)
    location = _location(source)
    in_place = None if source.recipients else artifacts.local_path(source.key, location.storage())
    if in_place is not None:
        for _chunk in _reading(reading):
            pass
        reading.check()
        yield in_place
        return
    fd, scratch = tempfile.mkstemp(prefix=scratch_prefix("copy"), suffix=".dump", dir=scratch_dir())
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _reading(reading):
                out.write(chunk)
        reading.check()
        yield scratch
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


def _reading(reading: SourceReading) -> Iterator[bytes]:
    """The chunks, with a storage or decryption failure said as this source's problem (a full scratch disk is not
    the source's fault: it propagates)."""
    try:
        yield from reading._chunks()
    except encryption.CiphertextCorrupt as exc:
        raise SourceUnusable(f"{reading.source.label}: {exc}", corrupt=True) from None
    except encryption.EncryptionError as exc:
        raise SourceUnusable(f"{reading.source.label}: {exc}") from None
    except ObjectStoreError as exc:
        raise SourceUnusable(f"{reading.source.label}: {exc}") from None


def artifact_source_choose(artifact: BackupArtifact, prefer: str | None = None) -> tuple[ArtifactSource, list[str]]:
    """The first source that is reachable, present, and whose key is here, for a reader that streams (a Redis
    restore reads the snapshot twice, and its records carry their own checksums)."""
    fallbacks: list[str] = []
    for source in artifact_sources(artifact, prefer):
        try:
            location = _location(source)
            if source.recipients:
                _identities(location, source)
            return source, fallbacks
        except SourceUnusable as exc:
            fallbacks.append(str(exc))
    raise NoUsableSource(_none_usable(artifact, fallbacks))


def artifact_stored_source(
    artifact: BackupArtifact, prefer: str | None = None
) -> tuple[ArtifactSource, Location, list[str]]:
    """The first file of the backup that is reachable and present, to hand out as it is stored (a download: no key
    is needed, an encrypted file stays encrypted). Raises NoUsableSource naming every source's problem."""
    fallbacks: list[str] = []
    for source in artifact_sources(artifact, prefer):
        try:
            return source, _location(source), fallbacks
        except SourceUnusable as exc:
            fallbacks.append(str(exc))
    raise NoUsableSource(_none_usable(artifact, fallbacks))


def stored_chunks_checked(source: ArtifactSource, location: Location) -> Iterator[bytes]:
    """The stored bytes of one source as they are (still encrypted), checked against the record of that file. The
    last chunk is held back until the whole file matched: a reader never gets all of a file that does not, so a
    download with a Content-Length ends short and the client says it failed. SourceUnusable at the end otherwise."""
    digest, size = hashlib.sha256(), 0
    held: bytes | None = None
    try:
        for chunk in artifacts.iter_chunks(source.key, location.storage()):
            digest.update(chunk)
            size += len(chunk)
            if held is not None:
                yield held
            held = chunk
    except ObjectStoreError as exc:
        raise SourceUnusable(f"{source.label}: {exc}") from None
    if digest.hexdigest() != source.sha256 or (source.size is not None and size != source.size):
        raise SourceUnusable(
            f"{source.label}: the stored file ({size} bytes, sha256 {digest.hexdigest()}) does not match its record "
            f"({source.size} bytes, sha256 {source.sha256})",
            corrupt=True,
        )
    if held is not None:
        yield held


def source_chunks(
    artifact: BackupArtifact, source: ArtifactSource, checkpoint: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """The content of one source, decrypted, as chunks; SourceUnusable (after the last chunk, for a checksum)
    when it cannot be read or is not what was recorded."""
    reading = SourceReading(artifact, source, checkpoint)
    yield from reading.chunks()
    reading.check()


def primary_source(artifact: BackupArtifact) -> ArtifactSource:
    return ArtifactSource(
        location_name=artifact.location,
        key=artifact.storage_key,
        sha256=artifact.sha256,
        size=artifact.size_bytes,
        recipients=tuple(artifact.recipients or ()),
    )


def _none_usable(artifact: BackupArtifact, problems: list[str]) -> str:
    if not problems:
        return f"backup #{artifact.pk} has no stored file left (expired or deleted) and no verified copy"
    return f"no file of backup #{artifact.pk} can be read: " + "; ".join(problems)
