"""dr_console/schedules.py: cron checking, beat entries kept in step, fire times across time zones and DST."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from dr_console.schedules import (
    CronSchedule,
    InvalidSchedule,
    cron_schedule_parse,
    periodic_task_delete,
    periodic_task_sync,
)

MADRID = ZoneInfo("Europe/Madrid")


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("0 3 * *", "", "has 4 fields; a cron expression has 5: minute hour day-of-month month day-of-week"),
        ("0 3 * * * *", "", "has 6 fields"),
        ("", "", "has 0 fields"),
        ("61 3 * * *", "", "the minute field '61' is not valid"),
        ("0 25 * * *", "", "the hour field '25' is not valid"),
        ("x 3 * * *", "", "the minute field 'x' is not valid"),
        ("0 3 * * 7", "", "the day-of-week field '7' is not valid (Invalid end range: 7 > 6; use 0-6 (0 is Sunday)"),
        ("0 3 L * *", "", "the day-of-month field 'L' is not valid"),
        ("0 3 1 * mon", "", "restricts both day-of-month and day-of-week; restrict only one"),
        ("0 3 30 2 *", "", "day_of_month '30' never occurs in month_of_year '2'"),
        ("0 3 * * *", "Europe/Madird", "'Europe/Madird' is not an IANA time zone (e.g. UTC, Europe/Madrid"),
        ("0 3 * * *", "CEST", "'CEST' is not an IANA time zone"),
    ],
)
def test_a_bad_schedule_gets_one_message_naming_the_problem(expression: str, timezone: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        cron_schedule_parse(expression, timezone)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "timezone", "expected"),
    [
        ("0 3 * * *", "", CronSchedule("0 3 * * *", "UTC")),
        ("  0  3 * *   * ", "Europe/Madrid", CronSchedule("0 3 * * *", "Europe/Madrid")),
        ("*/15 8-18 * * mon-fri", "America/New_York", CronSchedule("*/15 8-18 * * mon-fri", "America/New_York")),
        ("30 2 1 jan,jul *", "UTC", CronSchedule("30 2 1 jan,jul *", "UTC")),
    ],
)
def test_a_good_schedule_is_normalised(expression: str, timezone: str, expected: CronSchedule) -> None:
    assert cron_schedule_parse(expression, timezone) == expected


def test_fire_times_follow_the_schedules_time_zone_across_daylight_saving() -> None:
    daily = cron_schedule_parse("0 3 * * *", "Europe/Madrid")
    # Madrid is UTC+1 in winter, UTC+2 from the last Sunday of March (2026-03-29).
    assert daily.next_fire(datetime(2026, 3, 28, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 3, 0, tzinfo=MADRID)
    assert daily.next_fire(datetime(2026, 3, 28, 12, 0, tzinfo=UTC)).astimezone(UTC) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )
    assert daily.next_fire(datetime(2026, 3, 29, 12, 0, tzinfo=UTC)).astimezone(UTC) == datetime(
        2026, 3, 30, 1, 0, tzinfo=UTC
    )
    assert daily.previous_fire(datetime(2026, 1, 10, 1, 59, tzinfo=UTC)) == datetime(2026, 1, 9, 3, 0, tzinfo=MADRID)
    # A run due exactly now is the previous expected one, not yesterday's.
    assert daily.previous_fire(datetime(2026, 1, 10, 2, 0, tzinfo=UTC)) == datetime(2026, 1, 10, 3, 0, tzinfo=MADRID)
    fires = daily.fires_between(datetime(2026, 1, 10, 2, 0, tzinfo=UTC), datetime(2026, 1, 13, 2, 0, tzinfo=UTC))
    assert [f.day for f in fires] == [11, 12, 13]
    assert len(daily.fires_between(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), limit=5)) == 5


@pytest.mark.django_db
def test_sync_creates_updates_and_disables_one_beat_entry() -> None:
    nightly = cron_schedule_parse("0 3 * * *", "Europe/Madrid")
    entry = periodic_task_sync(
        name="datastore 7: backup", task="backups.tasks.x", task_kwargs={"datastore_id": 7}, schedule=nightly
    )
    assert entry is not None
    entry.refresh_from_db()
    assert (entry.task, json.loads(entry.kwargs), entry.enabled) == ("backups.tasks.x", {"datastore_id": 7}, True)
    assert str(entry.crontab.timezone) == "Europe/Madrid"
    assert (entry.crontab.minute, entry.crontab.hour, entry.crontab.day_of_week) == ("0", "3", "*")

    marker = PeriodicTasks.last_change()
    same = periodic_task_sync(
        name="datastore 7: backup", task="backups.tasks.x", task_kwargs={"datastore_id": 7}, schedule=nightly
    )
    assert same is not None and same.date_changed == entry.date_changed  # nothing changed, nothing saved
    assert PeriodicTasks.last_change() == marker

    # Beat records a run; then the schedule changes: the entry restarts from now, the old crontab row goes.
    PeriodicTask.objects.filter(pk=entry.pk).update(last_run_at=datetime(2026, 1, 1, tzinfo=UTC))
    old_crontab = entry.crontab_id
    periodic_task_sync(
        name="datastore 7: backup",
        task="backups.tasks.x",
        task_kwargs={"datastore_id": 7},
        schedule=cron_schedule_parse("30 4 * * *", "UTC"),
    )
    entry.refresh_from_db()
    assert (entry.crontab.minute, entry.crontab.hour, str(entry.crontab.timezone)) == ("30", "4", "UTC")
    assert entry.last_run_at is None
    assert not CrontabSchedule.objects.filter(pk=old_crontab).exists()
    assert PeriodicTasks.last_change() != marker  # a running beat notices

    periodic_task_sync(name="datastore 7: backup", task="backups.tasks.x", task_kwargs={}, schedule=None)
    entry.refresh_from_db()
    assert entry.enabled is False

    periodic_task_delete(name="datastore 7: backup")
    assert not PeriodicTask.objects.filter(name="datastore 7: backup").exists()
    assert not CrontabSchedule.objects.filter(minute="30", hour="4").exists()
    periodic_task_delete(name="datastore 7: backup")  # already gone: nothing to do


@pytest.mark.django_db
def test_sync_without_schedule_and_without_entry_creates_nothing() -> None:
    assert periodic_task_sync(name="nothing", task="backups.tasks.x", task_kwargs={}, schedule=None) is None
    assert not PeriodicTask.objects.filter(name="nothing").exists()
