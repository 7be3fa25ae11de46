"""Text from outside (dr_console.text): the escaping itself, what PostgreSQL then accepts, the last line of defence
in job_transition, and log lines written by the console and by a Celery worker (real processes, real settings)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.db import connection

from backups.models import BackupArtifact
from dr_console.jobs import job_transition
from dr_console.text import untrusted_data, untrusted_text
from tests.factories import BackupArtifactFactory

ROOT = Path(__file__).resolve().parents[2]
GARBAGE_KEY = b"s:bin\xff\x00\x1b[31m"
ESCAPED_KEY = "s:bin\\xff\\x00\\x1b[31m"


def test_nul_invalid_bytes_and_control_characters_are_escaped_visibly() -> None:
    assert untrusted_text(GARBAGE_KEY) == ESCAPED_KEY
    assert untrusted_text("bell\x07 del\x7f csi\x9b sep\u2028 lone\udcff") == (
        "bell\\x07 del\\x7f csi\\x9b sep\\u2028 lone\\udcff"
    )
    assert untrusted_text("ñandú ✓ and a \\ backslash") == "ñandú ✓ and a \\ backslash"  # text is left alone


def test_one_line_unless_the_text_is_meant_to_have_lines() -> None:
    stderr = "pg_restore: error: one\n\tdetail\r\x00\n"
    assert untrusted_text(stderr) == "pg_restore: error: one\\n\\tdetail\\r\\x00\\n"
    assert untrusted_text(stderr, multiline=True) == "pg_restore: error: one\n\tdetail\\r\\x00\n"


def test_escaping_twice_changes_nothing_more() -> None:
    once = untrusted_text(GARBAGE_KEY + b"\n")
    assert untrusted_text(once) == once


def test_every_string_of_nested_data_is_escaped_keys_included() -> None:
    data = {"error": "a\x00b", "checks": [{"name\x1b": "x", "ok": False, "n": 3}], "pair": ("\x07", None)}
    assert untrusted_data(data) == {
        "error": "a\\x00b",
        "checks": [{"name\\x1b": "x", "ok": False, "n": 3}],
        "pair": ("\\x07", None),
    }


@pytest.mark.django_db
def test_postgresql_takes_the_escaped_text_in_text_and_jsonb() -> None:
    shown = untrusted_text(GARBAGE_KEY)
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text, jsonb_build_object('key', %s::text)->>'key'", [shown, shown])
        assert cursor.fetchone() == (ESCAPED_KEY, ESCAPED_KEY)


@pytest.mark.django_db
def test_job_transition_stores_errors_and_fields_from_outside_escaped() -> None:
    artifact = BackupArtifactFactory()
    job_transition(BackupArtifact, pk=artifact.pk, to=BackupArtifact.Status.RUNNING, event_message="on host\x00")
    job_transition(
        BackupArtifact,
        pk=artifact.pk,
        to=BackupArtifact.Status.FAILED,
        error="pg_dump exited with status 1: key s:bin\x00\x1b[31m",
        fields={"stderr_tail": "pg_dump: error: one\npg_dump: detail: \x00two", "row_counts": {"t\x00": 1}},
    )

    artifact.refresh_from_db()
    assert artifact.error == "pg_dump exited with status 1: key s:bin\\x00\\x1b[31m"
    assert artifact.stderr_tail == "pg_dump: error: one\npg_dump: detail: \\x00two"  # its lines kept
    assert artifact.row_counts == {"t\\x00": 1}
    assert [event.message for event in artifact.events.order_by("pk")] == ["on host\\x00", artifact.error]


def _stderr_of(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "LOG_LEVEL": "INFO"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


LOG_SOME_GARBAGE = """
    import logging
    log = logging.getLogger("restores.services")
    log.warning("conflict on %s", "s:bin\\x00\\x1b[31m\\n2026-01-01 ERROR forged line")
    try:
        raise ValueError("bad key \\x1b[2J")
    except ValueError:
        log.exception("restore #%s failed", 7)
"""


@pytest.mark.parametrize(
    "setup",
    [
        "import django; django.setup()",  # manage.py and the web: settings.LOGGING
        # A Celery worker replaces the root logger's handlers with its own, as `celery worker` does at start.
        "import django; django.setup(); from dr_console.celery import app; app.log.setup(loglevel='INFO')",
    ],
    ids=["settings-logging", "celery-worker"],
)
def test_a_log_line_quoting_a_key_name_stays_one_line_and_escaped(setup: str) -> None:
    stderr = _stderr_of(setup + "\n" + textwrap.dedent(LOG_SOME_GARBAGE))

    assert "\x00" not in stderr and "\x1b" not in stderr
    [line] = [line for line in stderr.splitlines() if "conflict on" in line]
    assert line.endswith("conflict on s:bin\\x00\\x1b[31m\\n2026-01-01 ERROR forged line")
    assert "forged line" not in stderr.replace(line, "")
    assert "Traceback (most recent call last):" in stderr  # the traceback keeps its lines
    assert "ValueError: bad key \\x1b[2J" in stderr
