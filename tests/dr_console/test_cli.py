"""`--json` on the command line: stdout is exactly one JSON document, whatever else happens, so `| jq` always works.
Real manage.py processes, as a script runs them, against the test database, with their notifications really sent
(to files under EMAIL_FILE_PATH: no EMAIL_URL is set, and the console backend would print on stdout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from backups.models import BackupArtifact
from tests.factories import DatastoreFactory, EnvironmentFactory
from tests.support.cli import manage
from tests.support.postgres import SourceDb, backup_taken

pytestmark = pytest.mark.django_db(transaction=True)  # the manage.py processes read what the test wrote
ROOT = Path(__file__).resolve().parents[2]


def one_document(stdout: str) -> Any:
    """The whole of stdout as one JSON document: json.loads refuses anything before or after it."""
    return json.loads(stdout)


def mails(mail_dir: Path) -> str:
    return "".join(path.read_text() for path in sorted(mail_dir.glob("*.log")))


@pytest.fixture
def prod_backup(source_db: SourceDb, operator: Any, approver: Any) -> BackupArtifact:
    """A backup of prod-db, in the protected environment prod: restoring over it notifies the approvers."""
    environment = EnvironmentFactory(name="prod", protected=True, required_approvals=1)
    return backup_taken(source_db.url_env, name="prod-db", environment=environment)  # type: ignore[no-any-return]


def restore_args(backup: BackupArtifact) -> list[str]:
    return [
        *("restore", str(backup.pk), "--into", "prod-db", "--confirm", "prod-db"),
        *("--as", "olga", "--reason", "bad migration", "--json"),
    ]


def test_restore_and_reject_print_one_document_and_their_mail_goes_to_files(
    prod_backup: BackupArtifact, mail_dir: Path
) -> None:
    requested = manage(*restore_args(prod_backup))
    assert requested.returncode == 0, requested.stderr
    run = one_document(requested.stdout)
    assert run["status"] == "awaiting_approval"

    rejected = manage("reject", str(run["id"]), "--as", "abel", "--reason", "not during the sale", "--json")
    assert rejected.returncode == 0, rejected.stderr
    assert one_document(rejected.stdout)["status"] == "rejected"

    sent = mails(mail_dir)
    assert f"Restore #{run['id']} into prod-db needs your approval" in sent
    assert f"Restore #{run['id']} into prod-db rejected" in sent


def test_a_library_printing_on_stdout_goes_to_stderr_while_json_is_written(prod_backup: BackupArtifact) -> None:
    """EMAIL_URL=consolemail:// is Django's console mail backend, which prints each email on stdout."""
    requested = manage(*restore_args(prod_backup), EMAIL_URL="consolemail://")
    assert requested.returncode == 0, requested.stderr
    run = one_document(requested.stdout)
    assert "needs your approval" in requested.stderr

    approved = manage("approve", str(run["id"]), "--as", "abel", "--json", EMAIL_URL="consolemail://")
    assert approved.returncode == 0, approved.stderr
    assert one_document(approved.stdout)["status"] == "queued"
    assert "approved and queued" in approved.stderr

    cancelled = manage("cancel", str(run["id"]), "--as", "olga", "--json")  # no worker runs it here
    assert one_document(cancelled.stdout)["status"] == "cancelled"


def test_failures_that_notify_print_one_document_and_exit_1(source_db: SourceDb, mail_dir: Path) -> None:
    DatastoreFactory(name="broken-db", url_env="NOT_THERE_URL")
    DatastoreFactory(name="never-backed-up", url_env=source_db.url_env)
    alerting = {"ALERT_EMAILS": "oncall@example.test", "NOT_THERE_URL": ""}

    backup = manage("backup", "broken-db", "--inline", "--json", **alerting)
    drill = manage("drill", "never-backed-up", "--json", **alerting)

    for result, what in ((backup, "backup"), (drill, "drill")):
        assert result.returncode == 1, result.stderr
        document = one_document(result.stdout)
        assert (document["kind"], document["status"]) == (what, "failed")
        assert result.stderr.startswith(f"CommandError: {what} #{document['id']} of ")
    sent = mails(mail_dir)
    assert "Backup #" in sent and "of broken-db failed" in sent
    assert "Drill #" in sent and "of never-backed-up failed" in sent


@pytest.mark.parametrize(
    ("args", "env", "status", "error"),
    [
        (
            ["restore", "1", "--into", "x", "--json"],
            {},
            2,
            "the following arguments are required: --reason",
        ),
        (["restore", "999", "--new-database", "x", "--as", "olga", "--reason", "r", "--json"], {}, 1, None),
        (
            ["backup", "prod-db", "--json"],
            {"DJANGO_DEBUG": "maybe"},
            2,
            "configuration error: DJANGO_DEBUG='maybe': use True or False",
        ),
    ],
    ids=["usage", "refused", "configuration"],
)
def test_an_error_is_one_json_document_too(args: list[str], env: dict[str, str], status: int, error: str) -> None:
    result = manage(*args, **env)
    assert result.returncode == status
    assert one_document(result.stdout) == {"error": error or "no backup with id 999"}
    assert len(result.stderr.strip().splitlines()) == 1


def test_in_process_the_document_alone_reaches_the_commands_stdout(
    prod_backup: BackupArtifact, settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # prints on sys.stdout
    call_command(*restore_args(prod_backup))
    captured = capsys.readouterr()
    assert one_document(captured.out)["status"] == "awaiting_approval"
    assert "needs your approval" in captured.err


def test_while_a_json_command_runs_even_a_child_process_writes_to_stderr() -> None:
    code = """
import os, subprocess, sys
from dr_console.cli import stdout_kept_for_json
with stdout_kept_for_json(process_stdout=True) as document:
    print("print")
    os.write(1, b"descriptor 1\\n")
    subprocess.run(["echo", "child"], check=True)
    document.write('{"ok": true}\\n')
print("after")
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"ok": true}\nafter\n'
    assert result.stderr.splitlines() == ["print", "descriptor 1", "child"]


def test_a_restore_into_a_database_name_that_exists_is_refused_at_once_on_the_command_line(
    prod_backup: BackupArtifact, source_db: SourceDb
) -> None:
    """Refused when asked, not after an approval and a worker's turn: one line, a non-zero exit, no run."""
    from restores.models import RestoreRun

    args = ("restore", str(prod_backup.pk), "--new-database", source_db.name, "--as", "olga", "--reason", "check")
    plain = manage(*args)
    assert plain.returncode != 0
    assert "Traceback" not in plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"database {source_db.name} already exists on 127.0.0.1:5432" in lines[0]
    as_json = manage(*args, "--json")
    assert as_json.returncode != 0
    assert "already exists" in json.dumps(one_document(as_json.stdout))
    assert not RestoreRun.objects.exists()


def test_backup_wait_with_no_worker_says_so_first_and_gives_up(source_db: SourceDb) -> None:
    """It used to wait forever. The first line says no worker answered; after the pickup timeout the command
    ends (exit 3) and the backup stays queued for when a worker starts."""
    DatastoreFactory(name="lonely-db", url_env=source_db.url_env)
    plain = manage("backup", "lonely-db", "--wait", "--pickup-timeout", "2")
    assert plain.returncode == 3, plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("no Celery worker answered: the backup waits in the queue")
    assert "no worker took the backup within 2 s" in lines[-1] and "stays queued" in lines[-1]
    assert "Traceback" not in plain.stderr
    DatastoreFactory(name="other-db")  # another database (its own variable): one database has one record
    as_json = manage("backup", "other-db", "--wait", "--pickup-timeout", "1", "--json")
    assert as_json.returncode == 3
    assert "no worker took the backup within 1 s" in one_document(as_json.stdout)["error"]
    assert set(BackupArtifact.objects.values_list("status", flat=True)) == {BackupArtifact.Status.PENDING}
