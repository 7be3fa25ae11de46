"""Scheduled backups: beat's DatabaseScheduler fires them on a real worker; overlaps are skipped and recorded;
fire times that passed with no firing (beat down) are counted and shown."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from audit.models import AuditEvent
from backups.models import BackupArtifact, ScheduledBackup
from backups.scheduling import (
    backup_schedule_fire,
    backup_schedule_task_name,
    datastore_schedule_state,
    datastore_schedule_sync,
)
from dr_console.celery import app as celery_app
from inventory.models import Datastore
from tests.factories import BackupArtifactFactory, DatastoreFactory
from tests.support.local import wait_for
from tests.support.postgres import SourceDb

MADRID = ZoneInfo("Europe/Madrid")


def scheduled_datastore(expression: str, timezone: str = "UTC", **fields: Any) -> Datastore:
    datastore = DatastoreFactory(backup_schedule=expression, backup_schedule_timezone=timezone, **fields)
    datastore_schedule_sync(datastore=datastore)
    datastore.refresh_from_db()
    return datastore


def beat_ticks(scheduler: DatabaseScheduler, count: int = 6) -> None:
    """A few turns of beat's loop: each tick looks at the entry due first (the reaper's is there too)."""
    for _ in range(count):
        scheduler.tick()


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_beat_fires_the_scheduled_backup_at_its_local_time_on_a_real_worker(
    celery_worker_thread: None, source_db: SourceDb
) -> None:
    # 03:00 in Madrid is 02:00 UTC in March (before the change to summer time).
    with time_machine.travel(datetime(2026, 3, 10, 1, 59, 50, tzinfo=UTC), tick=True) as clock:
        datastore = scheduled_datastore("0 3 * * *", "Europe/Madrid", url_env=source_db.url_env)
        scheduler = DatabaseScheduler(app=celery_app)
        try:
            assert "reap-stale-backups" in scheduler.schedule  # CELERY_BEAT_SCHEDULE's entries are there too
            beat_ticks(scheduler)
            time.sleep(1)
            assert not ScheduledBackup.objects.exists()  # 02:59:5x in Madrid: not yet

            clock.move_to(datetime(2026, 3, 10, 2, 0, 1, tzinfo=UTC))
            beat_ticks(scheduler)
        finally:
            scheduler.close()
        wait_for(lambda: BackupArtifact.objects.filter(status=BackupArtifact.Status.SUCCEEDED).exists())

    run = ScheduledBackup.objects.get()
    assert run.outcome == ScheduledBackup.Outcome.STARTED
    assert run.expected_at == datetime(2026, 3, 10, 3, 0, tzinfo=MADRID)
    assert run.missed_before == 0 and run.task_id
    artifact = BackupArtifact.objects.get()
    assert (artifact.pk, artifact.datastore_id, artifact.trigger) == (run.artifact_id, datastore.pk, "schedule")
    assert PeriodicTask.objects.get(name=backup_schedule_task_name(datastore.pk)).total_run_count == 1


@pytest.mark.django_db
def test_a_firing_while_the_previous_backup_runs_starts_nothing_and_is_recorded() -> None:
    datastore = scheduled_datastore("*/30 * * * *")
    running = BackupArtifactFactory(datastore=datastore, running=True)

    run = backup_schedule_fire(datastore_id=datastore.pk, task_id="t-1")

    assert run is not None and run.outcome == ScheduledBackup.Outcome.SKIPPED
    assert run.message == f"backup #{running.pk} was still running"
    assert list(BackupArtifact.objects.all()) == [running]
    event = AuditEvent.objects.get(action=AuditEvent.Action.BACKUP_SKIPPED)
    assert (event.actor_label, event.details["running"]) == ("schedule", running.pk)


@pytest.mark.django_db
def test_a_redelivered_firing_is_handled_once(django_capture_on_commit_callbacks: Any) -> None:
    datastore = scheduled_datastore("0 * * * *")
    with django_capture_on_commit_callbacks(execute=False):  # no broker needed: the backup is not queued
        first = backup_schedule_fire(datastore_id=datastore.pk, task_id="same-task")
        again = backup_schedule_fire(datastore_id=datastore.pk, task_id="same-task")
    assert first is not None and first.outcome == ScheduledBackup.Outcome.STARTED
    assert again is None
    assert ScheduledBackup.objects.count() == 1 and BackupArtifact.objects.count() == 1


@pytest.mark.django_db
def test_a_datastore_that_cannot_be_backed_up_records_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Redis datastore that is the console's own broker: every backup of it is refused.
    monkeypatch.setenv("TEST_BROKER_AS_DATASTORE_URL", os.environ["CELERY_BROKER_URL"])
    datastore = scheduled_datastore("0 * * * *", kind=Datastore.Kind.REDIS, url_env="TEST_BROKER_AS_DATASTORE_URL")
    run = backup_schedule_fire(datastore_id=datastore.pk)
    assert run is not None and run.outcome == ScheduledBackup.Outcome.REFUSED
    assert "broker" in run.message


@pytest.mark.django_db
def test_fire_times_with_no_firing_are_missed_until_the_next_firing_counts_them(
    django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.SCHEDULE_MISSED_AFTER_SECONDS = 600
    with time_machine.travel(datetime(2026, 5, 1, 10, 0, tzinfo=UTC), tick=False) as clock:
        datastore = scheduled_datastore("0 3 * * *", "UTC")
        # Set at 10:00: today's 03:00 was before the schedule existed, so nothing is missed.
        assert datastore_schedule_state(datastore, None).missed == []

        clock.move_to(datetime(2026, 5, 2, 3, 0, 2, tzinfo=UTC))
        with django_capture_on_commit_callbacks(execute=False):
            on_time = backup_schedule_fire(datastore_id=datastore.pk, task_id="a")
        assert on_time is not None and on_time.missed_before == 0
        BackupArtifact.objects.update(status=BackupArtifact.Status.SUCCEEDED)

        # Within the grace period after a fire time, it is not missed yet.
        clock.move_to(datetime(2026, 5, 3, 3, 5, tzinfo=UTC))
        assert datastore_schedule_state(datastore, on_time).missed == []
        # Beat was down for three nights.
        clock.move_to(datetime(2026, 5, 5, 9, 12, tzinfo=UTC))
        state = datastore_schedule_state(datastore, on_time)
        assert state is not None and state.overdue
        assert [fire.day for fire in state.missed] == [3, 4, 5]
        assert state.next_run == datetime(2026, 5, 6, 3, 0, tzinfo=UTC)

        # Beat is back and catches up once: the firing answers today's 03:00 and counts the two nights before.
        with django_capture_on_commit_callbacks(execute=False):
            late = backup_schedule_fire(datastore_id=datastore.pk, task_id="b")
        assert late is not None
        assert (late.expected_at, late.missed_before) == (datetime(2026, 5, 5, 3, 0, tzinfo=UTC), 2)
        assert late.late_by == timedelta(hours=6, minutes=12)
        assert datastore_schedule_state(datastore, late).missed == []


@pytest.mark.django_db
def test_changing_the_schedule_restarts_its_count_and_emptying_it_disables_the_entry() -> None:
    with time_machine.travel(datetime(2026, 5, 1, 10, 0, tzinfo=UTC), tick=False) as clock:
        datastore = scheduled_datastore("0 3 * * *")
        assert datastore.backup_schedule_since == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
        clock.move_to(datetime(2026, 5, 1, 11, 0, tzinfo=UTC))
        datastore_schedule_sync(datastore=datastore)  # unchanged: still counts from 10:00
        assert datastore.backup_schedule_since == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
        datastore.backup_schedule = "0 4 * * *"
        datastore.save()
        datastore_schedule_sync(datastore=datastore)
        assert Datastore.objects.get().backup_schedule_since == datetime(2026, 5, 1, 11, 0, tzinfo=UTC)

    datastore.backup_schedule = ""
    datastore.save()
    datastore_schedule_sync(datastore=datastore)
    entry = PeriodicTask.objects.get(name=backup_schedule_task_name(datastore.pk))
    assert not entry.enabled
    assert datastore_schedule_state(datastore, None) is None
    assert backup_schedule_fire(datastore_id=datastore.pk) is None  # a firing already queued does nothing


# --- configuration: loadconfig and the admin -------------------------------------------------------------------


def write_config(tmp_path: Path, extra: str) -> Path:
    config = tmp_path / "console.toml"
    config.write_text(
        '[environments.prod]\n[[datastores]]\nname = "prod-db"\nenvironment = "prod"\nkind = "postgres"\n'
        f'url_env = "PROD_DATABASE_URL"\n{extra}'
    )
    return config


@pytest.mark.django_db
def test_loadconfig_sets_changes_and_removes_a_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("loadconfig", str(write_config(tmp_path, 'schedule = "0 3 * * *"\n')))
    datastore = Datastore.objects.get(name="prod-db")
    entry = PeriodicTask.objects.get(name=backup_schedule_task_name(datastore.pk))
    assert (entry.task, json.loads(entry.kwargs), entry.enabled) == (
        "backups.tasks.backup_scheduled_task",
        {"datastore_id": datastore.pk},
        True,
    )
    assert (entry.crontab.hour, str(entry.crontab.timezone)) == ("3", "UTC")

    call_command(
        "loadconfig",
        str(write_config(tmp_path, 'schedule = "30  2 * * *"\nschedule_timezone = "Europe/Madrid"\n')),
    )
    datastore.refresh_from_db()
    assert (datastore.backup_schedule, datastore.backup_schedule_timezone) == ("30 2 * * *", "Europe/Madrid")
    entry.refresh_from_db()
    assert (entry.crontab.minute, entry.crontab.hour, str(entry.crontab.timezone)) == ("30", "2", "Europe/Madrid")

    capsys.readouterr()
    call_command(
        "loadconfig", str(write_config(tmp_path, 'schedule = "30 2 * * *"\nschedule_timezone = "Europe/Madrid"\n'))
    )
    assert "datastore prod-db: unchanged" in capsys.readouterr().out

    call_command("loadconfig", str(write_config(tmp_path, "")))  # absent: no schedule
    entry.refresh_from_db()
    assert not entry.enabled
    assert Datastore.objects.get().backup_schedule == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('schedule = "0 3 * *"\n', "datastores[0] (prod-db).schedule: '0 3 * *' has 4 fields; a cron expression has 5"),
        ('schedule = "0 24 * * *"\n', "datastores[0] (prod-db).schedule: '0 24 * * *': the hour field '24' is not"),
        ('schedule = "0 3 1 * 1"\n', "restricts both day-of-month and day-of-week"),
        (
            'schedule = "0 3 * * *"\nschedule_timezone = "Madrid"\n',
            "datastores[0] (prod-db).schedule_timezone: 'Madrid' is not an IANA time zone",
        ),
        ("schedule = 3\n", "datastores[0] (prod-db).schedule: expected str, got 3"),
    ],
)
def test_loadconfig_refuses_a_bad_schedule_and_applies_nothing(
    extra: str, error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CommandError, match="nothing was applied"):
        call_command("loadconfig", str(write_config(tmp_path, extra)))
    assert error in capsys.readouterr().err
    assert not Datastore.objects.exists() and not PeriodicTask.objects.filter(name__startswith="datastore").exists()


@pytest.mark.django_db
def test_the_admin_saves_a_schedule_into_beat_and_refuses_a_bad_one(admin_client: Any) -> None:
    datastore = DatastoreFactory(name="prod-db")
    url = f"/admin/inventory/datastore/{datastore.pk}/change/"
    form = {
        "environment": datastore.environment_id,
        "name": "prod-db",
        "kind": "postgres",
        "url_env": datastore.url_env,
        "rpo_target": "1 00:00:00",
        "rto_target": "01:00:00",
        "backup_schedule": "0 3 * * * *",
        "backup_schedule_timezone": "Europe/Madrid",
        "description": "",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 200
    assert "has 6 fields" in response.content.decode()
    assert not PeriodicTask.objects.filter(name=backup_schedule_task_name(datastore.pk)).exists()

    response = admin_client.post(url, {**form, "backup_schedule": "15 3 * * mon-fri"})
    assert response.status_code == 302
    entry = PeriodicTask.objects.get(name=backup_schedule_task_name(datastore.pk))
    assert (entry.crontab.minute, entry.crontab.day_of_week, str(entry.crontab.timezone)) == (
        "15",
        "mon-fri",
        "Europe/Madrid",
    )
