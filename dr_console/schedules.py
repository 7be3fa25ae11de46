"""Cron schedules run by Celery beat (django-celery-beat's DatabaseScheduler).

One place to:
- check a cron expression and an IANA time zone, with one clear message naming what is wrong
  (`cron_schedule_parse`);
- keep one beat entry (a `PeriodicTask` row) in step with an object's schedule: create it, change it, disable it
  when the schedule is emptied, delete it with its object (`periodic_task_sync`, `periodic_task_delete`);
- compute the fire times a page compares against: the next run, the previous expected run, and the runs that
  should have happened between two instants (`CronSchedule.next_fire`, `previous_fire`, `fires_between`).

Beat runs the expression with Celery's `crontab`; the fire times shown are computed with croniter. Both read the
same five fields the same way once `cron_schedule_parse` has refused what they read differently (see there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from celery.schedules import crontab
from croniter import croniter
from croniter.croniter import CroniterError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

DEFAULT_TIMEZONE = "UTC"
CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
CRON_FIELD_HINTS = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31",
    "month": "1-12 or jan-dec",
    "day-of-week": "0-6 (0 is Sunday) or sun-sat",
}
# Celery's crontab keyword for each of the five cron fields, in cron order.
CELERY_CRONTAB_KEYS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


class InvalidSchedule(ValueError):
    """A cron expression or time zone that cannot be scheduled. The message names the problem in one line."""


@lru_cache(maxsize=1)
def _timezone_names() -> frozenset[str]:
    return frozenset(available_timezones())


@dataclass(frozen=True)
class CronSchedule:
    """A checked cron expression (five fields, single-spaced) and the IANA time zone it is read in."""

    expression: str
    timezone: str = DEFAULT_TIMEZONE

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def fields(self) -> dict[str, str]:
        """The expression as Celery crontab / django-celery-beat CrontabSchedule keywords."""
        return dict(zip(CELERY_CRONTAB_KEYS, self.expression.split(), strict=True))

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after `after` (aware, in the schedule's time zone)."""
        return croniter(self.expression, after.astimezone(self.zone)).get_next(datetime)

    def previous_fire(self, before: datetime) -> datetime:
        """The last fire time at or before `before` (a run due exactly now counts as due)."""
        start = before.astimezone(self.zone)
        if croniter.match(self.expression, start) and start.second == 0 and start.microsecond == 0:
            return start
        return croniter(self.expression, start).get_prev(datetime)

    def fires_between(self, start: datetime, end: datetime, limit: int = 1000) -> list[datetime]:
        """Fire times in (start, end], at most `limit` of them (the earliest)."""
        fires: list[datetime] = []
        iterator = croniter(self.expression, start.astimezone(self.zone))
        while len(fires) < limit:
            fire: datetime = iterator.get_next(datetime)
            if fire > end:
                break
            fires.append(fire)
        return fires


def timezone_check(name: str) -> str:
    """`name` if it is an IANA time zone, else InvalidSchedule."""
    if name not in _timezone_names():
        raise InvalidSchedule(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Madrid, America/New_York)")
    return name


def cron_schedule_parse(expression: str, timezone: str = "") -> CronSchedule:
    """Check a five-field cron expression and an IANA time zone (empty: UTC). Raises InvalidSchedule.

    Refused although cron would take them:
    - both day-of-month and day-of-week restricted: cron runs on either day, Celery only on days matching both,
      so the schedule would not mean what it says;
    - `7` for Sunday, `L`, `?`, `@daily` and other extensions Celery's crontab does not read.
    """
    timezone = timezone_check(timezone.strip() or DEFAULT_TIMEZONE)
    parts = expression.split()
    if len(parts) != len(CRON_FIELDS):
        raise InvalidSchedule(
            f"{expression.strip()!r} has {len(parts)} field{'s' if len(parts) != 1 else ''}; a cron expression has "
            f"5: {' '.join(CRON_FIELDS)} (e.g. '0 3 * * *' for 03:00 every day)"
        )
    for label, key, value in zip(CRON_FIELDS, CELERY_CRONTAB_KEYS, parts, strict=True):
        try:
            crontab(**{key: value})
        except ValueError as exc:
            raise InvalidSchedule(
                f"{expression.strip()!r}: the {label} field {value!r} is not valid "
                f"({_first_sentence(exc)}; use {CRON_FIELD_HINTS[label]}, *, ranges a-b, steps */n, lists a,b)"
            ) from None
    if parts[2] != "*" and parts[4] != "*":
        raise InvalidSchedule(
            f"{expression.strip()!r} restricts both day-of-month and day-of-week; restrict only one "
            "(cron would run on either day, Celery only on days matching both)"
        )
    normalized = " ".join(parts)
    try:
        crontab(**dict(zip(CELERY_CRONTAB_KEYS, parts, strict=True)))
        croniter(normalized)
    except (ValueError, CroniterError) as exc:  # e.g. '0 3 30 2 *': a day that never comes
        raise InvalidSchedule(f"{expression.strip()!r}: {_first_sentence(exc)}") from None
    return CronSchedule(expression=normalized, timezone=timezone)


def _first_sentence(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__


@transaction.atomic
def periodic_task_sync(
    *,
    name: str,
    task: str,
    task_kwargs: dict[str, Any],
    schedule: CronSchedule | None,
    description: str = "",
) -> PeriodicTask | None:
    """Make beat's entry `name` run `task(**task_kwargs)` on `schedule`.

    1. No schedule: the entry, if any, is disabled (kept, so its last run stays known); returns it or None.
    2. A new entry, a changed schedule, or a disabled entry enabled again starts counting from now: beat runs it
       at the next fire time, not at once for the fire times that passed meanwhile.
    3. Saving the PeriodicTask (never a queryset update) bumps django-celery-beat's change marker, so a running
       beat picks the change up within its sync interval.
    """
    entry = PeriodicTask.objects.select_related("crontab").filter(name=name).first()
    if schedule is None:
        if entry is not None and entry.enabled:
            entry.enabled = False
            entry.no_changes = False  # beat sets it after each run; False makes save() bump the change marker
            entry.save()
        return entry
    crontab_row, _ = CrontabSchedule.objects.get_or_create(**schedule.fields, timezone=schedule.zone)
    kwargs_json = json.dumps(task_kwargs, sort_keys=True)
    if entry is None:
        entry = PeriodicTask(name=name)
    restarted = not entry.pk or not entry.enabled or entry.crontab_id != crontab_row.pk
    wanted = {
        "task": task,
        "kwargs": kwargs_json,
        "crontab": crontab_row,
        "interval": None,
        "solar": None,
        "clocked": None,
        "enabled": True,
        "one_off": False,
        "description": description,
    }
    changed = restarted or any(getattr(entry, key) != value for key, value in wanted.items())
    if not changed:
        return entry
    old_crontab_id = entry.crontab_id
    for key, value in wanted.items():
        setattr(entry, key, value)
    if restarted:
        entry.last_run_at = None  # beat then counts from the entry's change time: the next fire, no catch-up
    entry.no_changes = False
    entry.save()
    if old_crontab_id and old_crontab_id != crontab_row.pk:
        _crontab_delete_unused(old_crontab_id)
    return entry


def periodic_task_delete(*, name: str) -> None:
    """Remove beat's entry `name` (its object is gone)."""
    entry = PeriodicTask.objects.filter(name=name).first()
    if entry is None:
        return
    crontab_id = entry.crontab_id
    entry.delete()
    if crontab_id:
        _crontab_delete_unused(crontab_id)


def _crontab_delete_unused(crontab_id: int) -> None:
    CrontabSchedule.objects.filter(pk=crontab_id, periodictask__isnull=True).delete()
