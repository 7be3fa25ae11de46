"""Reads of drills shared by the command line and the pages."""

from __future__ import annotations

from typing import Any

from backups.selectors import iso
from drills.models import DrillRun


def drill_run_summary(run: DrillRun) -> dict[str, Any]:
    """One JSON-able object describing a drill, for `--json` and scripts."""
    return {
        "id": run.pk,
        "kind": "drill",
        "datastore": run.datastore.name,
        "status": run.status,
        "artifact": run.artifact_id,
        "rto_seconds": run.rto_seconds,
        "rto_target_seconds": run.datastore.rto_target.total_seconds(),
        "scratch_database": run.scratch_database,
        "scratch_dropped": run.scratch_dropped,
        "checks": run.checks,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "trigger": run.trigger,
        "error": run.error,
    }


def drill_run_describe(run: DrillRun) -> str:
    """One line saying where a drill is or how it ended."""
    name = run.datastore.name
    if run.status == DrillRun.Status.SUCCEEDED:
        passed = ", ".join(check["name"] for check in run.checks)
        return (
            f"drill #{run.pk} of {name} succeeded: backup #{run.artifact_id} restored in {run.rto_seconds or 0:.1f} s "
            f"(RTO target {run.datastore.rto_target.total_seconds():g} s); checks passed: {passed}; "
            f"scratch database {run.scratch_database} dropped"
        )
    if run.status in DrillRun.TERMINAL:
        return f"drill #{run.pk} of {name} {run.status}: {run.error}"
    return f"drill #{run.pk} of {name} is {run.get_status_display().lower()}"
