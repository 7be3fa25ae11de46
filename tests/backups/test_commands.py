"""The command line as scripts and cron use it: exit status, one-line errors, --json."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.models import BackupArtifact
from inventory.models import Datastore, Environment
from tests.factories import DatastoreFactory
from tests.support.postgres import SourceDb, database_url, table_fingerprints

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def run_json(*args: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    call_command(*args, "--json")
    return json.loads(capsys.readouterr().out)


def test_backup_then_restore_inline_gives_an_identical_database(
    source_db: SourceDb, new_database_name: str, capsys: pytest.CaptureFixture[str], operator: Any
) -> None:
    DatastoreFactory(name="prod-db", url_env=source_db.url_env)
    backup = run_json("backup", "prod-db", "--inline", capsys=capsys)
    assert backup["status"] == "succeeded" and backup["verification"] == "verified"
    assert len(backup["sha256"]) == 64 and backup["size_bytes"] > 0 and backup["storage_key"]

    restore = run_json(
        "restore",
        str(backup["id"]),
        "--new-database",
        new_database_name,
        "--inline",
        "--as",
        operator.username,
        "--reason",
        "check",
        capsys=capsys,
    )

    assert restore["status"] == "succeeded", restore["error"]
    assert table_fingerprints(database_url(new_database_name)) == table_fingerprints(source_db.url)


def test_unknown_datastore_is_one_clear_error() -> None:
    DatastoreFactory(name="prod-db")
    with pytest.raises(CommandError, match="no datastore named 'nope'; known datastores: prod-db"):
        call_command("backup", "nope")


def test_failed_backup_exits_non_zero_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    """Run the real manage.py in a subprocess, as cron would."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "NOT_THERE_URL": ""}
    from django.conf import settings

    env["DATABASE_URL"] = database_url(settings.DATABASES["default"]["NAME"], os.environ["DATABASE_URL"])
    DatastoreFactory(name="broken-db", url_env="NOT_THERE_URL")
    result = subprocess.run(
        [sys.executable, "manage.py", "backup", "broken-db", "--inline"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"CommandError: backup #{BackupArtifact.objects.get().pk} of broken-db failed: environment variable "
        "NOT_THERE_URL is not set in the process that ran the job "
        f"(host {socket.gethostname()}); set it to the database URL "
        "(postgresql://user:password@host:5432/dbname) in the worker's environment or .env, then restart it"
    ]


def test_verify_exits_non_zero_for_a_corrupt_backup(
    source_db: SourceDb, artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    DatastoreFactory(name="prod-db", url_env=source_db.url_env)
    backup = run_json("backup", "prod-db", "--inline", capsys=capsys)
    (artifact_dir / backup["storage_key"]).write_bytes(b"not a dump")
    with pytest.raises(CommandError, match=f"backup #{backup['id']} is CORRUPT: sha256 mismatch"):
        call_command("verify", str(backup["id"]), "--inline")


def test_restore_of_an_unknown_backup_is_refused() -> None:
    with pytest.raises(CommandError, match="no backup with id 999"):
        call_command("restore", "999", "--new-database", "x", "--as", "nobody", "--reason", "r")


def test_loadconfig_is_idempotent_and_warns_about_unset_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROD_DATABASE_URL", raising=False)
    config = tmp_path / "dr.toml"
    config.write_text(
        '[environments.prod]\nprotected = true\nrequired_approvals = 2\napi_url = "http://127.0.0.1:8001"\n\n'
        "[environments.staging]\n\n"
        '[[datastores]]\nname = "prod-db"\nenvironment = "prod"\nkind = "postgres"\nurl_env = "PROD_DATABASE_URL"\n'
        "compression_level = 3\n"
    )
    call_command("loadconfig", str(config))
    first = capsys.readouterr()
    assert first.out.splitlines() == [
        "environment prod: created",
        "environment staging: created",
        "datastore prod-db: created",
    ]
    assert "PROD_DATABASE_URL is not set in this process" in first.err
    prod = Environment.objects.get(name="prod")
    assert (prod.protected, prod.required_approvals, prod.api_url) == (True, 2, "http://127.0.0.1:8001")
    assert Datastore.objects.get(name="prod-db").compression_level == 3

    call_command("loadconfig", str(config))
    assert capsys.readouterr().out.splitlines() == [
        "environment prod: unchanged",
        "environment staging: unchanged",
        "datastore prod-db: unchanged",
    ]

    config.write_text(config.read_text().replace("required_approvals = 2", "required_approvals = 1"))
    call_command("loadconfig", str(config))
    assert "environment prod: updated (required_approvals)" in capsys.readouterr().out


def test_loadconfig_links_the_application_datastores_of_an_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dr.toml"
    config.write_text(
        '[environments.prod]\napi_token_env = "PROD_API_TOKEN"\npostgres_datastore = "prod-db"\n'
        'redis_datastore = "prod-redis"\nreprocess_concurrency = 32\n\n'
        '[[datastores]]\nname = "prod-db"\nenvironment = "prod"\nkind = "postgres"\nurl_env = "PROD_DATABASE_URL"\n'
        '[[datastores]]\nname = "prod-redis"\nenvironment = "prod"\nkind = "redis"\nurl_env = "PROD_REDIS_URL"\n'
    )
    call_command("loadconfig", str(config))
    prod = Environment.objects.get(name="prod")
    assert prod.postgres_datastore and prod.postgres_datastore.name == "prod-db"
    assert prod.redis_datastore and prod.redis_datastore.name == "prod-redis"
    assert (prod.api_token_env, prod.reprocess_concurrency) == ("PROD_API_TOKEN", 32)
    assert "FROM documents WHERE status IN ('PENDING', 'PROCESSING')" in prod.effective_reprocess_query
    capsys.readouterr()

    call_command("loadconfig", str(config))
    assert "updated" not in capsys.readouterr().out

    config.write_text(config.read_text().replace('redis_datastore = "prod-redis"', 'redis_datastore = ""'))
    call_command("loadconfig", str(config))
    assert "environment prod: updated (redis_datastore)" in capsys.readouterr().out
    assert Environment.objects.get(name="prod").redis_datastore is None


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ("[environments.prod]\nprotectd = true\n", "environments.prod: unknown key 'protectd'"),
        (
            '[environments.prod]\nrequired_approvals = "two"\n',
            "environments.prod.required_approvals: expected int, got 'two'",
        ),
        (
            "[environments.prod]\nrequired_approvals = 0\n",
            "environments.prod.required_approvals: Ensure this value is greater than or equal to 1.",
        ),
        ('[environments.prod]\napi_url = "not a url"\n', "environments.prod.api_url: Enter a valid URL."),
        (
            '[[datastores]]\nname = "x"\nenvironment = "nowhere"\nkind = "postgres"\nurl_env = "X_URL"\n',
            "datastores[0] (x).environment: no environment 'nowhere' in this file or in the console",
        ),
        (
            '[environments.prod]\n[[datastores]]\nname = "x"\nenvironment = "prod"\nkind = "mysql"\nurl_env = "X"\n',
            "datastores[0] (x).kind: unknown kind 'mysql'; valid kinds: postgres, redis",
        ),
        (
            '[environments.prod]\n[[datastores]]\nname = "x"\nenvironment = "prod"\nkind = "postgres"\n'
            'url_env = "postgres://u:p@h/db"\n',
            "datastores[0] (x).url_env: Use the name of an environment variable",
        ),
        (
            '[environments.prod]\n[[datastores]]\nname = "x"\nenvironment = "prod"\nkind = "postgres"\n',
            "datastores[0] (x): missing required key 'url_env'",
        ),
        (
            '[environments.prod]\npostgres_datastore = "ghost"\n',
            "environments.prod.postgres_datastore: no datastore 'ghost' in this file or in the console",
        ),
        (
            '[environments.prod]\nredis_datastore = "x"\n[[datastores]]\nname = "x"\nenvironment = "prod"\n'
            'kind = "postgres"\nurl_env = "X_URL"\n',
            "environments.prod.redis_datastore: x is a postgres datastore, not redis",
        ),
        (
            '[environments.prod]\npostgres_datastore = "x"\n[environments.other]\n[[datastores]]\nname = "x"\n'
            'environment = "other"\nkind = "postgres"\nurl_env = "X_URL"\n',
            "environments.prod.postgres_datastore: x belongs to environment other, not prod",
        ),
        ('[environments.prod]\napi_token_env = "secret-token"\n', "environments.prod.api_token_env: Use the name"),
        (
            '[environments.prod]\napi_token_env = "PROD_DATABASE_URL"\n',
            "environments.prod.api_token_env: A token variable's name ends in",
        ),
        (
            '[environments.prod]\nwebhook_url_env = "PROD_DATABASE_URL"\n',
            "environments.prod.webhook_url_env: A webhook variable's name",
        ),
        (
            '[environments.prod]\n[[datastores]]\nname = "db"\nenvironment = "prod"\nkind = "postgres"\n'
            'url_env = "PROD_API_TOKEN"\n',
            "datastores[0] (db).url_env: That name is declared as a token",
        ),
        ("[environment.prod]\n", "unknown top-level key 'environment'"),
        ("[environments.prod\n", "not valid TOML"),
    ],
)
def test_loadconfig_errors_name_the_problem_and_apply_nothing(
    toml: str, error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    # A valid environment before the bad entry proves nothing is half-applied.
    config.write_text("[environments.first]\nprotected = false\n" + toml if toml.startswith("[[") else toml)
    with pytest.raises(CommandError, match="nothing was applied"):
        call_command("loadconfig", str(config))
    assert error in capsys.readouterr().err
    assert not Environment.objects.exists() and not Datastore.objects.exists()


def test_an_unknown_kind_lists_the_valid_ones_once_with_no_knock_on_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "typo.toml"
    config.write_text(
        '[environments.staging]\nredis_datastore = "queue"\n'
        '[[datastores]]\nname = "queue"\nenvironment = "staging"\nkind = "reddis"\nurl_env = "QUEUE_URL"\n'
    )
    with pytest.raises(CommandError, match="1 error"):
        call_command("loadconfig", str(config))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: datastores[0] (queue).kind: unknown kind 'reddis'; valid kinds: postgres, redis"]


def test_loadconfig_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CommandError):
        call_command("loadconfig", str(tmp_path / "absent.toml"))
    assert "cannot read the file (No such file or directory)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DATABASE_URL": "postgres://nobody:Pw-not-shown@127.0.0.1:1/x"},
            "cannot use the console's database (DATABASE_URL): connection failed",
        ),
        ({"DJANGO_SECRET_KEY": "", "DJANGO_DEBUG": "False"}, "configuration error: DJANGO_SECRET_KEY"),
        ({"DJANGO_DEBUG": "maybe"}, "configuration error: DJANGO_DEBUG='maybe': use True or False"),
        ({"BACKUP_TIME_LIMIT": "6h"}, "configuration error: BACKUP_TIME_LIMIT='6h': expected a whole number"),
    ],
)
def test_configuration_problems_are_one_line_without_traceback(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "backup", "prod-db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "dr_console.settings", "DJANGO_SECRET_KEY": "x", **env},
    )
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert "Pw-not-shown" not in result.stderr


def test_json_mode_prints_an_error_object_when_nothing_was_created(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CommandError):
        call_command("backup", "nope", "--json")
    assert json.loads(capsys.readouterr().out) == {
        "error": "no datastore named 'nope'; known datastores: none yet (see `manage.py loadconfig`)"
    }


def test_a_usage_mistake_is_one_line_with_exit_status_2() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "restore", "1", "--into", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    assert result.returncode == 2
    assert result.stderr == ("error: the following arguments are required: --reason (see `manage.py restore --help`)\n")


def test_a_redis_datastore_backs_up_and_restores_inline_with_a_key_pattern(
    app_redis: Any, second_redis: Any, capsys: pytest.CaptureFixture[str], operator: Any
) -> None:
    from tests.support.redis import redis_fill_all_types

    DatastoreFactory(name="queue", kind=Datastore.Kind.REDIS, url_env=app_redis.url_env)
    DatastoreFactory(name="queue-copy", kind=Datastore.Kind.REDIS, url_env=second_redis.url_env)
    redis_fill_all_types(app_redis.client)
    call_command("backup", "queue", "--inline")
    assert ", 15 keys, " in capsys.readouterr().out
    backup = BackupArtifact.objects.get()
    call_command("verify", str(backup.pk), "--inline")
    assert "verified: sha256 matches and every record reads back" in capsys.readouterr().out

    restore = run_json(
        "restore",
        str(backup.pk),
        "--into",
        "queue-copy",
        "--key-pattern",
        "l:*",
        "--inline",
        "--as",
        operator.username,
        "--reason",
        "copy the lists",
        capsys=capsys,
    )

    assert restore["status"] == "succeeded", restore["error"]
    assert sorted(second_redis.client.keys("*")) == [b"l:big", b"l:small"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--new-database", "copy"], "restore it in place or into another Redis datastore"),
        (["--into", "queue", "--jobs", "4"], "parallel jobs and --no-owner apply to PostgreSQL backups only"),
        (["--into", "prod-db"], "prod-db is not a Redis datastore"),
    ],
)
def test_restore_options_that_do_not_fit_a_redis_backup_are_one_line(
    operator: Any, args: list[str], message: str
) -> None:
    from tests.factories import BackupArtifactFactory

    DatastoreFactory(name="prod-db")
    queue = DatastoreFactory(name="queue", kind=Datastore.Kind.REDIS)
    backup = BackupArtifactFactory(
        datastore=queue, status="succeeded", sha256="b" * 64, storage_key="k", format="redis_snapshot"
    )
    with pytest.raises(CommandError, match=message):
        call_command("restore", str(backup.pk), *args, "--as", operator.username, "--reason", "x")


def test_replace_and_key_patterns_are_refused_for_a_postgres_backup(operator: Any) -> None:
    from tests.factories import BackupArtifactFactory

    backup = BackupArtifactFactory(
        datastore=DatastoreFactory(name="prod-db"), status="succeeded", sha256="a" * 64, storage_key="k"
    )
    with pytest.raises(CommandError, match="replacing keys and key patterns apply to Redis backups only"):
        call_command(
            "restore", str(backup.pk), "--into", "prod-db", "--replace", "--as", operator.username, "--reason", "x"
        )
