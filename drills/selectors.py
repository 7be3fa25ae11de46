"""Reads of drills shared by the command line and the pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.db.models import Q, Subquery

from dr_console.formatting import iso
from dr_console.jobs import active_job_labels, newest_job_value
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


def rto_state(status: str | None, rto: timedelta | None, target: timedelta) -> RtoState:
    """From the newest finished drill's status and measured RTO (None, None: no drill has finished)."""
    if status is None:
        return RtoState.NONE
    if status != DrillRun.Status.SUCCEEDED:
        return RtoState.FAILED
    if rto is not None and rto > target:
        return RtoState.OVER
    return RtoState.OK


@dataclass(frozen=True)
class DrillStanding:
    """Where a datastore's drills stand, read with the datastore itself (drill_standing_annotations) for every
    datastore at once, without any drill row: the ids of its interesting drills and its RTO state."""

    last_drill_id: int | None  # the newest finished drill: it decides the RTO state
    last_measured_id: int | None  # the newest drill that measured an RTO (its restore finished)
    active_id: int | None
    rto_state: RtoState

    @property
    def rto_ok(self) -> bool:
        """No drill has failed or run over the RTO target (none yet counts as no breach)."""
        return self.rto_state in (RtoState.OK, RtoState.NONE)


def drill_standing_annotations() -> dict[str, Subquery]:
    """Annotations for a Datastore query: the ids of its interesting drills, each a walk down the drills'
    (datastore, -created_at) index that stops at the first match. drill_standings reads them back."""

    def newest(condition: Q) -> Subquery:
        return newest_job_value(DrillRun, condition)

    return {
        "last_drill_id": newest(Q(status__in=[DrillRun.Status.SUCCEEDED, DrillRun.Status.FAILED])),
        "last_measured_id": newest(Q(rto__isnull=False)),
        "active_drill_id": newest(Q(status__in=DrillRun.ACTIVE)),
    }


def drill_standings(datastores: Sequence[Any]) -> dict[int, DrillStanding]:
    """The standings of datastores read with drill_standing_annotations, by datastore id. The newest finished
    drills' status and RTO come in one more query, by id: cheaper than walking the index again for each field."""
    last_ids = {ds.last_drill_id for ds in datastores} - {None}
    outcome = (
        dict(
            (pk, (status, rto))
            for pk, status, rto in DrillRun.objects.filter(pk__in=last_ids).values_list("pk", "status", "rto")
        )
        if last_ids
        else {}
    )
    standings = {}
    for ds in datastores:
        status, rto = outcome.get(ds.last_drill_id, (None, None))
        standings[ds.pk] = DrillStanding(
            last_drill_id=ds.last_drill_id,
            last_measured_id=ds.last_measured_id,
            active_id=ds.active_drill_id,
            rto_state=rto_state(status, rto, ds.rto_target),
        )
    return standings


@dataclass
class DatastoreDrillState:
    """What the dashboard and the datastore page show about a datastore's drills and RTO."""

    standing: DrillStanding
    last_drill: DrillRun | None
    last_measured: DrillRun | None
    active: DrillRun | None

    @property
    def rto_state(self) -> RtoState:
        return self.standing.rto_state

    @property
    def rto_ok(self) -> bool:
        return self.standing.rto_ok

    @property
    def last_rto(self) -> timedelta | None:
        return self.last_measured.rto if self.last_measured else None


def datastore_drill_states(standings: Sequence[tuple[Datastore, DrillStanding]]) -> dict[int, DatastoreDrillState]:
    """The drills behind each standing, in one query whatever the number of datastores."""
    wanted = {i for _, st in standings for i in (st.last_drill_id, st.last_measured_id, st.active_id)} - {None}
    # Without their checks and tool output: the dashboard shows neither.
    drills = DrillRun.objects.defer("checks", "stderr_tail").in_bulk(wanted) if wanted else {}
    datastore_of = {ds.pk: ds for ds, _ in standings}
    for drill in drills.values():
        DrillRun.datastore.field.set_cached_value(drill, datastore_of[drill.datastore_id])  # no query for it
    return {
        ds.pk: DatastoreDrillState(
            standing=st,
            last_drill=drills.get(st.last_drill_id),
            last_measured=drills.get(st.last_measured_id),
            active=drills.get(st.active_id),
        )
        for ds, st in standings
    }


def drill_run_recent(datastore: Datastore, limit: int = 10) -> list[DrillRun]:
    return list(datastore.drill_runs.select_related("artifact").order_by("-created_at", "-pk")[:limit])


def datastore_active_drills(sender: object, *, datastore_id: int, **kwargs: object) -> list[str]:
    """inventory.signals.datastore_active_jobs."""
    return active_job_labels(DrillRun.objects.filter(datastore_id=datastore_id))
