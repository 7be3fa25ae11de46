"""Self-describing backups: next to every backup file, in every location, a small JSON manifest says what the file
is (datastore, kind, format, time, sizes, both checksums, row counts, versions, recipients) and carries its own
checksum. A console that lost its database rebuilds its catalog from them (`manage.py catalog rebuild`).

The manifest never holds a secret: the datastore's URL variable is named, never its value.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backups import artifacts
from backups.locations import Location
from backups.models import BackupArtifact

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "dr-console-manifest/1"


class ManifestInvalid(Exception):
    """A manifest that is not one, or whose checksum does not match its content."""


def manifest_key(storage_key: str) -> str:
    return storage_key + MANIFEST_SUFFIX


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def manifest_build(
    artifact: BackupArtifact, location: Location, *, key: str, sha256: str, size: int, recipients: list[str]
) -> dict[str, Any]:
    """The manifest of `artifact`'s file at `location` (its key, and the checksum of the bytes stored there)."""
    datastore = artifact.datastore
    body: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "backup_id": artifact.pk,
        "datastore": {
            "name": datastore.name,
            "kind": datastore.kind,
            "environment": datastore.environment.name,
            "url_env": datastore.url_env,
        },
        "artifact_format": artifact.format,
        "compression_level": artifact.compression_level,
        "created_at": _time(artifact.created_at),
        "taken_at": _time(artifact.taken_at),
        "finished_at": _time(artifact.finished_at),
        "location": location.name,
        "key": key,
        "stored": {"sha256": sha256, "size": size, "recipients": recipients},
        "content": {"sha256": artifact.content_sha256, "size": artifact.plaintext_size or artifact.size_bytes},
        "archive_entries": artifact.archive_entries,
        "row_counts": artifact.row_counts,
        "tool_version": artifact.tool_version,
        "server_version": artifact.server_version,
        "origin": artifact.origin,
        "trigger": artifact.trigger,
    }
    return {**body, "manifest_sha256": _digest(body)}


def manifest_write(
    artifact: BackupArtifact, location: Location, *, key: str, sha256: str, size: int, recipients: list[str]
) -> str:
    """Write the manifest next to `key` at `location` (published like a backup file, locked like it)."""
    manifest = manifest_build(artifact, location, key=key, sha256=sha256, size=size, recipients=recipients)
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    staged = artifacts.StagedWrite(
        location,
        manifest_key(key),
        artifact.pk,
        expected_bytes=len(data),
        retain_until=location.retain_until(artifact.taken_at),
    )
    try:
        staged.write(io.BytesIO(data))
        return staged.publish()
    except BaseException:
        staged.discard()
        raise


@dataclass
class Manifest:
    body: dict[str, Any]

    @property
    def backup_id(self) -> int:
        return int(self.body["backup_id"])


def manifest_parse(data: bytes, *, where: str) -> Manifest:
    """A manifest read from `where`; ManifestInvalid naming the problem when it is not a whole, unaltered one."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestInvalid(f"{where}: not a JSON manifest ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
        raise ManifestInvalid(f"{where}: not a DR Console manifest (format {MANIFEST_FORMAT} expected)")
    recorded = body.pop("manifest_sha256", None)
    if recorded != _digest(body):
        raise ManifestInvalid(f"{where}: its checksum does not match its content (altered or truncated)")
    return Manifest(body=body)
