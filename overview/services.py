"""Objectives: does every datastore meet its RPO (its newest verified backup, from backups) and its RTO (its newest
drill, from drills)? A breach is opened, audited and told once when an objective is newly missed, and closed, audited
and told once when it is met again, however often the check runs (beat: overview.tasks.objectives_check_task).

The breach rows are drills.models.ObjectiveBreach (their table and their audit history stay where they were);
what decides them reads both job apps, so it lives here, above both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone, translation

from audit.models import AuditEvent
from audit.services import audit_record
from backups.selectors import RpoState
from dr_console.formatting import duration_short
from dr_console.notifications import alert_recipients, notify
from drills.models import ObjectiveBreach
from drills.selectors import RtoState
from inventory.models import Datastore
from overview.selectors import DatastoreDashboardRow, datastore_dashboard_rows


def objectives_check() -> tuple[int, int]:
    """Compare every datastore with its RPO and RTO targets; open a breach (and tell people) when one is newly
    missed, close it (and tell people) when it is met again. A breach that stays open is not told again, however
    often this runs. Returns (opened, closed)."""
    now = timezone.now()
    open_breaches = {
        (breach.datastore_id, breach.objective): breach
        for breach in ObjectiveBreach.objects.filter(closed_at__isnull=True)
    }
    opened = closed = 0
    for row in datastore_dashboard_rows(charts=False):
        for objective, reason in (
            (ObjectiveBreach.Objective.RPO, rpo_breach_reason(row)),
            (ObjectiveBreach.Objective.RTO, rto_breach_reason(row)),
        ):
            breach = open_breaches.get((row.datastore.pk, objective))
            if reason and breach is None:
                opened += _breach_open(row.datastore, objective, reason)
            elif not reason and breach is not None:
                closed += _breach_close(breach, row.datastore, now)
    return opened, closed


def rpo_breach_reason(row: DatastoreDashboardRow) -> str:
    """Why the datastore misses its RPO now, or "" when it does not. A new datastore has one RPO period to take
    its first verified backup."""
    datastore = row.datastore
    target = _duration_text(datastore.rpo_target)
    if row.rpo_state == RpoState.NEW:  # its first backup is not due yet
        return ""
    if row.rpo_state == RpoState.NONE:
        return f"{datastore.name} has no verified backup (RPO target {target})"
    if row.rpo_state in (RpoState.LATE, RpoState.VERY_LATE) and row.last_verified is not None:
        return (
            f"the newest verified backup of {datastore.name} (#{row.last_verified.pk}) is "
            f"{_duration_text(row.rpo_age)} old, over the RPO target of {target}"
        )
    return ""


def rto_breach_reason(row: DatastoreDashboardRow) -> str:
    """Why the datastore misses its RTO now (its newest drill failed or restored too slowly), or ""."""
    state = row.drills
    if state is None or state.last_drill is None or state.rto_ok:
        return ""
    drill = state.last_drill
    if state.rto_state == RtoState.FAILED:
        return f"drill #{drill.pk} of {row.datastore.name} failed: {drill.error}"
    return (
        f"drill #{drill.pk} of {row.datastore.name} restored in {_duration_text(drill.rto)}, over the RTO target "
        f"of {_duration_text(row.datastore.rto_target)}"
    )


def _duration_text(value: timedelta | None) -> str:
    """Durations in notifications and the audit log: the same words whatever a page's language."""
    with translation.override("en"):
        return duration_short(value)


def _breach_open(datastore: Datastore, objective: str, reason: str) -> int:
    try:
        with transaction.atomic():
            breach = ObjectiveBreach.objects.create(datastore=datastore, objective=objective, reason=reason)
            audit_record(
                action=AuditEvent.Action.OBJECTIVE_BREACHED,
                actor_label="console",
                obj=breach,
                details={"datastore": datastore.name, "objective": objective, "reason": reason},
            )
    except IntegrityError:  # another check opened it first: it tells people, not us
        return 0
    label = breach.get_objective_display()
    _notify_objective(
        datastore,
        subject=f"[DR Console] {datastore.name} misses its {label}",
        lines=[f"{datastore.name} ({datastore.environment.name}) misses its {label} objective:", reason],
    )
    return 1


def _breach_close(breach: ObjectiveBreach, datastore: Datastore, now: datetime) -> int:
    if not ObjectiveBreach.objects.filter(pk=breach.pk, closed_at__isnull=True).update(closed_at=now):
        return 0  # another check closed it first
    lasted = _duration_text(now - breach.opened_at)
    audit_record(
        action=AuditEvent.Action.OBJECTIVE_RECOVERED,
        actor_label="console",
        obj=breach,
        details={
            "datastore": datastore.name,
            "objective": breach.objective,
            "lasted_seconds": (now - breach.opened_at).total_seconds(),
        },
    )
    label = breach.get_objective_display()
    _notify_objective(
        datastore,
        subject=f"[DR Console] {datastore.name} meets its {label} again",
        lines=[
            f"{datastore.name} ({datastore.environment.name}) meets its {label} objective again after {lasted}.",
            f"It was: {breach.reason}",
        ],
    )
    return 1


def _notify_objective(datastore: Datastore, *, subject: str, lines: list[str]) -> None:
    notify(
        subject=subject,
        text="\n".join(lines),
        recipients=alert_recipients(),
        webhook_env=datastore.environment.webhook_url_env,
        about=f"the objectives of {datastore.name}",
    )
