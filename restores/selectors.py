"""Reads shared by the command line, the admin and (later) the pages."""

from __future__ import annotations

from typing import Any

from backups.selectors import iso
from restores.models import RestoreRun


def restore_run_summary(run: RestoreRun) -> dict[str, Any]:
    """One JSON-able object describing a restore run, for `--json` and scripts."""
    return {
        "id": run.pk,
        "kind": "restore",
        "artifact_id": run.artifact_id,
        "artifact_sha256": run.artifact_sha256,
        "status": run.status,
        "target_kind": run.target_kind,
        "target_datastore": run.target_datastore.name,
        "new_database": run.new_database_name or None,
        "target": str(run.target_label),
        "options": run.options,
        "reason": run.reason,
        "requested_by": run.triggered_by.get_username() if run.triggered_by else None,
        "required_approvals": run.required_approvals,
        "approvals": [
            {
                "approver": a.approver.get_username(),
                "decision": a.decision,
                "comment": a.comment,
                "at": iso(a.created_at),
            }
            for a in run.approvals.select_related("approver")
        ],
        "safety_backup_id": run.safety_backup_id,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "exit_code": run.exit_code,
        "checks": run.checks,
        "trigger": run.trigger,
        "error": run.error,
    }
