"""Drill schedules: one beat entry per datastore, fired by beat's DatabaseScheduler onto a real worker."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from dr_console.celery import app as celery_app
from drills.models import DrillRun
from drills.scheduling import drill_schedule_task_name
from drills.services import drill_run_scheduled
from inventory.models import Datastore
from inventory.services import datastore_configured_notify as datastore_schedule_sync
from inventory.services import datastore_removed_notify as datastore_schedule_delete
from tests.factories import DatastoreFactory, DrillRunFactory
from tests.support.local import wait_for
from tests.support.postgres import SourceDb, backup_taken


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_beat_fires_the_drill_schedule_at_its_local_time_on_a_real_worker(
    celery_worker_thread: None, source_db: SourceDb
) -> None:
    artifact = backup_taken(source_db.url_env)
    datastore = artifact.datastore
    # 05:00 on Sundays in Madrid is 04:00 UTC in March: 2026-03-15 is a Sunday.
    Datastore.objects.filter(pk=datastore.pk).update(
        drill_schedule="0 5 * * 0", backup_schedule_timezone="Europe/Madrid"
    )
    datastore.refresh_from_db()
    with time_machine.travel(datetime(2026, 3, 15, 3, 59, 50, tzinfo=UTC), tick=True) as clock:
        datastore_schedule_sync(datastore=datastore)
        scheduler = DatabaseScheduler(app=celery_app)
        try:
            for _ in range(6):
                scheduler.tick()
            time.sleep(1)
            assert not DrillRun.objects.exists()  # 04:59:5x in Madrid: not yet
            clock.move_to(datetime(2026, 3, 15, 4, 0, 1, tzinfo=UTC))
            for _ in range(6):
                scheduler.tick()
        finally:
            scheduler.close()
        wait_for(lambda: DrillRun.objects.filter(status__in=DrillRun.TERMINAL).exists())
    run = DrillRun.objects.get()
    assert (run.status, run.trigger, run.artifact_id) == (DrillRun.Status.SUCCEEDED, "schedule", artifact.pk)
    assert PeriodicTask.objects.get(name=drill_schedule_task_name(datastore.pk)).total_run_count == 1


@pytest.mark.django_db
def test_the_drill_entry_follows_the_datastore_schedule() -> None:
    datastore = DatastoreFactory(drill_schedule="0 5 * * 0", backup_schedule_timezone="Europe/Madrid")
    datastore_schedule_sync(datastore=datastore)
    entry = PeriodicTask.objects.get(name=drill_schedule_task_name(datastore.pk))
    assert (entry.task, entry.enabled, str(entry.crontab.timezone)) == (
        "drills.tasks.drill_run_scheduled_task",
        True,
        "Europe/Madrid",
    )
    assert (entry.crontab.minute, entry.crontab.hour, entry.crontab.day_of_week) == ("0", "5", "0")
    datastore.drill_schedule = ""
    datastore_schedule_sync(datastore=datastore)
    assert not PeriodicTask.objects.get(name=drill_schedule_task_name(datastore.pk)).enabled
    datastore_schedule_delete(datastore_id=datastore.pk)
    assert not PeriodicTask.objects.filter(name=drill_schedule_task_name(datastore.pk)).exists()


@pytest.mark.django_db
def test_a_scheduled_drill_while_one_runs_starts_nothing(django_capture_on_commit_callbacks: Any) -> None:
    datastore = DatastoreFactory(drill_schedule="0 5 * * 0")
    running = DrillRunFactory(datastore=datastore, running=True)
    assert drill_run_scheduled(datastore_id=datastore.pk) is None
    assert list(DrillRun.objects.all()) == [running]


@pytest.mark.django_db
def test_the_admin_saves_a_drill_schedule_into_beat_and_refuses_a_bad_one(admin_client: Any) -> None:
    datastore = DatastoreFactory()
    url = f"/admin/inventory/datastore/{datastore.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(drill_schedule="0 5 * * 7", drill_probes="SELECT true")
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "drill_schedule" in response.context["adminform"].form.errors
    data["drill_schedule"] = "30 4 * * 1"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    entry = PeriodicTask.objects.get(name=drill_schedule_task_name(datastore.pk))
    assert (entry.crontab.minute, entry.crontab.hour, entry.crontab.day_of_week) == ("30", "4", "1")
