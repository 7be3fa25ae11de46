"""Secrets stay secret when things go wrong: a webhook that answers an error, a token variable that names a datastore's
URL, an exception whose report holds a connection URL, a log line quoting one. Each test tries it for real (real
HTTP servers, the real reporter Django's debug page uses, the console's logging configuration) and looks for the
secret in everything written."""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import RequestFactory
from django.views.debug import technical_500_response

from audit.models import AuditEvent
from dr_console.notifications import notify
from dr_console.secrets import MASK, mask_secrets
from inventory.models import Environment
from reprocess.models import ReprocessBatch
from reprocess.services import reprocess_batch_execute, reprocess_batch_send
from tests.factories import DatastoreFactory, EnvironmentFactory, ReprocessBatchFactory
from tests.support.http import http_serve

pytestmark = pytest.mark.django_db

# Built at run time: an error report quotes the source lines around each frame, and must not find them there.
SLACK_SECRET = "/".join(("T000", "B000", "XXXXsecretXXXX"))
DATABASE_PASSWORD = "-".join(("hunter2", "prod", "password"))
PROD_URL = f"postgresql://app:{DATABASE_PASSWORD}@db.internal.example:5432/prod"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Authorization)


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    """A real HTTP server answering 500 to everything, recording what it was sent."""
    seen = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.requests.append(("POST", self.path, self.headers.get("Authorization", "")))
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_serve(Handler) as url:
        yield seen, url


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as the console's handlers would write it: through its filters, then formatted."""
    from dr_console.text import UntrustedTextFilter

    handler_filter, formatter = UntrustedTextFilter(), logging.Formatter("%(message)s")
    lines = []
    for record in caplog.records:
        handler_filter.filter(record)
        lines.append(formatter.format(record))
    return "\n".join(lines)


# --- webhooks ------------------------------------------------------------------------------------------------------


def test_a_webhook_that_answers_an_error_is_logged_by_its_variable_never_its_url(
    recorder: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen, url = recorder
    monkeypatch.setenv("PROD_WEBHOOK_URL", f"{url}/services/{SLACK_SECRET}")
    with caplog.at_level(logging.WARNING):
        notify(subject="Restore #3 failed", text="…", recipients=[], webhook_env="PROD_WEBHOOK_URL", about="restore #3")
    assert [path for _method, path, _auth in seen.requests] == [f"/services/{SLACK_SECRET}"]  # it was tried
    logged = everything_logged(caplog)
    assert "the webhook in PROD_WEBHOOK_URL answered HTTP 500" in logged
    assert SLACK_SECRET not in logged and url not in logged


def test_an_unreachable_or_malformed_webhook_names_the_variable_not_the_address(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.local import free_port

    nobody = f"http://127.0.0.1:{free_port()}/services/{SLACK_SECRET}"
    for value, words in ((nobody, "to the webhook in PROD_WEBHOOK_URL: ConnectError"), ("not a url", "valid URL")):
        monkeypatch.setenv("PROD_WEBHOOK_URL", value)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            notify(subject="s", text="t", recipients=[], webhook_env="PROD_WEBHOOK_URL", about="backup #1")
        logged = everything_logged(caplog)
        assert words in logged and SLACK_SECRET not in logged, logged


def test_a_webhook_url_is_not_kept_in_the_database_and_an_old_file_is_told_what_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "webhook_url" not in {field.name for field in Environment._meta.get_fields()}
    config = tmp_path / "old.toml"
    config.write_text(f'[environments.prod]\nwebhook_url = "https://hooks.slack.com/services/{SLACK_SECRET}"\n')
    with pytest.raises(CommandError, match="nothing was applied"):
        call_command("loadconfig", str(config))
    err = capsys.readouterr().err
    assert "environments.prod.webhook_url: a webhook URL is a secret" in err and "webhook_url_env" in err
    assert SLACK_SECRET not in err
    assert not Environment.objects.exists()
    refused = AuditEvent.objects.get(action=AuditEvent.Action.CONFIG_REFUSED)
    assert SLACK_SECRET not in str(refused.details)


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_stored_webhook_urls_to_a_private_file_and_names_a_variable(
    settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.VAR_DIR = tmp_path
    executor = MigrationExecutor(connection)
    before, after = [("inventory", "0004_target_identity")], [("inventory", "0005_webhook_variable_declared_names")]
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    old_apps.get_model("inventory", "Environment").objects.create(
        name="prod-eu", webhook_url=f"https://hooks.slack.com/services/{SLACK_SECRET}"
    )
    old_apps.get_model("inventory", "Environment").objects.create(name="dev")
    executor = MigrationExecutor(connection)  # a fresh graph, as `migrate` would load
    try:
        executor.migrate(after)
    finally:
        MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())  # the later migrations too
    assert dict(Environment.objects.values_list("name", "webhook_url_env")) == {
        "prod-eu": "PROD_EU_WEBHOOK_URL",
        "dev": "",
    }
    moved = tmp_path / "webhook-urls.env"
    assert moved.read_text() == f"PROD_EU_WEBHOOK_URL=https://hooks.slack.com/services/{SLACK_SECRET}\n"
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    err = capsys.readouterr().err
    assert "1 webhook URL(s) moved out of the console's database" in err and SLACK_SECRET not in err


# --- token variables -----------------------------------------------------------------------------------------------


# Token and webhook variables declared by their names: loadconfig's refusals are among its other errors
# (tests/backups/test_commands.py, test_loadconfig_errors_name_the_problem_and_apply_nothing).


@pytest.mark.parametrize("variable", ["PROD_DATABASE_URL", "PROD_DB_TOKEN"])
def test_a_datastore_url_is_never_sent_as_a_bearer_token_even_if_the_row_says_so(
    variable: str, recorder: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: api_token_env names the production URL's variable (written into the database, past the form's
    rule), or a declared token variable that holds the URL, and api_url points at the attacker's server. Nothing
    may reach that server."""
    seen, url = recorder
    monkeypatch.setenv(variable, PROD_URL)
    environment = EnvironmentFactory(name="prod", api_url=url, api_token_env="PROD_API_TOKEN")
    DatastoreFactory(name="prod-db", environment=environment, url_env="PROD_DATABASE_URL")
    Environment.objects.filter(pk=environment.pk).update(api_token_env=variable)
    batch = ReprocessBatchFactory(environment=environment, documents=[("ws", "1")])
    reprocess_batch_send(batch=batch, requested_by=None, trigger="test", enqueue=False)
    reprocess_batch_execute(batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.status == ReprocessBatch.Status.FAILED
    expected = "is not declared as a token variable" if variable == "PROD_DATABASE_URL" else "holds a URL, not an API"
    assert expected in batch.error and variable in batch.error
    assert seen.requests == []  # nothing was sent anywhere
    finished = AuditEvent.objects.get(action=AuditEvent.Action.REPROCESS_FINISHED)
    assert expected in str(finished.details) and DATABASE_PASSWORD not in str(finished.details)


# --- error reports and logs ----------------------------------------------------------------------------------------


def _fail_connecting(target_url: str) -> None:
    raise RuntimeError(f"could not connect to {target_url}")


def test_the_debug_page_masks_a_configured_url_in_the_error_locals_and_environment(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PRODDB does not look secret by its name; configuration names it, and that is enough."""
    settings.DEBUG = True
    monkeypatch.setenv("PRODDB", PROD_URL)
    DatastoreFactory(name="prod-db", url_env="PRODDB")
    # Under runserver the WSGI environ (request.META) carries the whole process environment.
    request = RequestFactory().get("/datastores/prod-db/", PRODDB=os.environ["PRODDB"])
    try:
        _fail_connecting(os.environ["PRODDB"])
    except RuntimeError:
        html = technical_500_response(request, *sys.exc_info()).content.decode()
    assert "could not connect to" in html and "_fail_connecting" in html  # it is the real report
    assert DATABASE_PASSWORD not in html and PROD_URL.split("@")[1] not in html
    assert MASK in html


def test_a_log_line_quoting_a_url_or_a_token_is_masked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PROD_API_TOKEN", "tok-0123456789abcdef")
    logger = logging.getLogger("dr_console.tests")
    with caplog.at_level(logging.INFO):
        logger.info("sending with %s to %s", os.environ["PROD_API_TOKEN"], PROD_URL)
        try:
            _fail_connecting("redis://:another-redis-password@cache:6379/0")
        except RuntimeError:
            logger.exception("it failed")
    logged = everything_logged(caplog)
    assert "tok-0123456789abcdef" not in logged and DATABASE_PASSWORD not in logged
    assert "another-redis-password" not in logged
    assert "sending with ******** to " in logged  # the URL whole once read as a secret, or at least its password
    assert "could not connect to redis://:********@cache:6379/0" in logged  # a password in any URL


def test_masking_leaves_ordinary_text_alone() -> None:
    assert mask_secrets("backup #4 of prod-db took 3 s", values=[]) == "backup #4 of prod-db took 3 s"
    assert mask_secrets("see https://example.com/docs?a=b", values=[]) == "see https://example.com/docs?a=b"
