"""Reads of drills shared by the command line and the pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.db.models import OuterRef, Q, Subquery

from dr_console.formatting import iso
from dr_console.jobs import active_job_labels
from drills.models import DrillRun
from inventory.models import Datastore


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


# --- the RTO objective: what the dashboard and the datastore page show about drills -----------------------------------


class RtoState(StrEnum):
    OK = "ok"  # the newest finished drill succeeded within the RTO target
    OVER = "over"  # it succeeded, but restoring took longer than the target
    FAILED = "failed"  # it failed
    NONE = "none"  # no drill has finished yet


def rto_state(last_drill: DrillRun | None, target: timedelta) -> RtoState:
    if last_drill is None:
        return RtoState.NONE
    if last_drill.status != DrillRun.Status.SUCCEEDED:
        return RtoState.FAILED
    if last_drill.rto is not None and last_drill.rto > target:
        return RtoState.OVER
    return RtoState.OK


@dataclass
class DatastoreDrillState:
    """What the dashboard and the datastore page show about a datastore's drills and RTO."""

    last_drill: DrillRun | None  # the newest finished drill: it decides the RTO state
    last_measured: DrillRun | None  # the newest drill that measured an RTO (its restore finished)
    active: DrillRun | None
    rto_state: RtoState

    @property
    def rto_ok(self) -> bool:
        """No drill has failed or run over the RTO target (none yet counts as no breach)."""
        return self.rto_state in (RtoState.OK, RtoState.NONE)

    @property
    def last_rto(self) -> timedelta | None:
        return self.last_measured.rto if self.last_measured else None


def datastore_drill_states(datastores: Sequence[Datastore]) -> dict[int, DatastoreDrillState]:
    """Per datastore, in two queries whatever the number of datastores and drills."""
    if not datastores:
        return {}

    def newest(condition: Q) -> Subquery:
        rows = DrillRun.objects.filter(condition, datastore=OuterRef("pk")).order_by("-created_at", "-pk")
        return Subquery(rows.values("pk")[:1])

    ids = (
        Datastore.objects.filter(pk__in=[ds.pk for ds in datastores])
        .annotate(
            last_drill_id=newest(Q(status__in=[DrillRun.Status.SUCCEEDED, DrillRun.Status.FAILED])),
            last_measured_id=newest(Q(rto__isnull=False)),
            active_drill_id=newest(Q(status__in=DrillRun.ACTIVE)),
        )
        .values_list("pk", "last_drill_id", "last_measured_id", "active_drill_id")
    )
    by_datastore = {pk: rest for pk, *rest in ids}
    drills = DrillRun.objects.in_bulk({i for rest in by_datastore.values() for i in rest} - {None})
    datastore_of = {ds.pk: ds for ds in datastores}
    for drill in drills.values():
        drill.datastore = datastore_of[drill.datastore_id]  # no query per drill for its datastore
    states = {}
    for ds in datastores:
        last_id, measured_id, active_id = by_datastore.get(ds.pk, (None, None, None))
        last = drills.get(last_id)
        states[ds.pk] = DatastoreDrillState(
            last_drill=last,
            last_measured=drills.get(measured_id),
            active=drills.get(active_id),
            rto_state=rto_state(last, ds.rto_target),
        )
    return states


def drill_run_recent(datastore: Datastore, limit: int = 10) -> list[DrillRun]:
    return list(datastore.drill_runs.select_related("artifact").order_by("-created_at", "-pk")[:limit])


def datastore_active_drills(sender: object, *, datastore_id: int, **kwargs: object) -> list[str]:
    """inventory.signals.datastore_active_jobs."""
    return active_job_labels(DrillRun.objects.filter(datastore_id=datastore_id))
