"""`manage.py drill`: one line or one JSON object, exit status 0 only when the drill succeeded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from drills.models import DrillRun
from tests.factories import DatastoreFactory
from tests.support.postgres import SourceDb, backup_taken

pytestmark = pytest.mark.django_db(transaction=True)


def test_drill_inline_prints_the_rto_and_the_checks(source_db: SourceDb, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = backup_taken(source_db.url_env)
    call_command("drill", artifact.datastore.name, "--inline")
    out = capsys.readouterr().out
    run = DrillRun.objects.get()
    assert out.startswith(f"drill #{run.pk} of {artifact.datastore.name} succeeded: backup #{artifact.pk} restored in ")
    assert "checks passed: SELECT 1, SELECT now(), row counts" in out
    assert f"scratch database {run.scratch_database} dropped" in out


def test_drill_json_reports_a_failed_drill_and_fails(source_db: SourceDb, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = backup_taken(source_db.url_env, drill_probes="SELECT false")
    with pytest.raises(CommandError, match=r"drill #\d+ of .* failed: check failed: probe: SELECT false"):
        call_command("drill", artifact.datastore.name, "--inline", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "failed" and summary["scratch_dropped"] is True
    assert summary["rto_seconds"] > 0 and summary["rto_target_seconds"] == 3600


def test_drill_of_an_unknown_datastore_is_one_line() -> None:
    DatastoreFactory(name="prod-db")
    with pytest.raises(CommandError, match=r"^no datastore named 'nope'; known datastores: prod-db$"):
        call_command("drill", "nope")


def test_drill_as_a_viewer_is_refused(source_db: SourceDb) -> None:
    from tests.factories import user_in_groups

    user_in_groups("vera", "viewer")
    artifact = backup_taken(source_db.url_env)
    with pytest.raises(CommandError, match="vera may not start drills"):
        call_command("drill", artifact.datastore.name, "--as", "vera")


@pytest.mark.worker
def test_drill_wait_runs_on_a_worker(
    source_db: SourceDb, celery_worker_thread: None, operator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = backup_taken(source_db.url_env)
    call_command("drill", artifact.datastore.name, "--wait", "--json", "--as", operator.username, "--timeout", "120")
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "succeeded" and summary["artifact"] == artifact.pk
    assert DrillRun.objects.get().triggered_by == operator
