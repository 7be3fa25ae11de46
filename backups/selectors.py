"""Reads shared by the command line, the admin and (later) the pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backups.models import BackupArtifact


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def backup_artifact_summary(artifact: BackupArtifact) -> dict[str, Any]:
    """One JSON-able object describing a backup, for `--json` and scripts."""
    return {
        "id": artifact.pk,
        "kind": "backup",
        "datastore": artifact.datastore.name,
        "environment": artifact.datastore.environment.name,
        "status": artifact.status,
        "verification": artifact.verification,
        "verification_error": artifact.verification_error,
        "verified_at": iso(artifact.verified_at),
        "format": artifact.format,
        "compression_level": artifact.compression_level,
        "sha256": artifact.sha256,
        "size_bytes": artifact.size_bytes,
        "storage_key": artifact.storage_key,
        "created_at": iso(artifact.created_at),
        "started_at": iso(artifact.started_at),
        "finished_at": iso(artifact.finished_at),
        "duration_seconds": artifact.duration_seconds,
        "tool_version": artifact.tool_version,
        "server_version": artifact.server_version,
        "archive_entries": artifact.archive_entries,
        "row_counts": artifact.row_counts,
        "trigger": artifact.trigger,
        "error": artifact.error,
    }
