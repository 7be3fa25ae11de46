"""manage.py reprocess: builds and sends a batch with the page's rules; every mistake is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from inventory.models import Environment
from reprocess.models import ReprocessBatch
from tests.factories import EnvironmentFactory, user_in_groups
from tests.reprocess.conftest import ReprocessStub

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def prod(reprocess_stub: ReprocessStub, monkeypatch: pytest.MonkeyPatch) -> Environment:
    monkeypatch.setenv("TEST_APP_TOKEN", reprocess_stub.token)
    return EnvironmentFactory(name="prod", api_url=reprocess_stub.url, api_token_env="TEST_APP_TOKEN")


def test_a_csv_is_sent_inline_and_reported_as_json(
    prod: Environment, operator: User, reprocess_stub: ReprocessStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "lost.csv"
    csv.write_text("workspace_id,document_id\n" + "".join(f"ws-1,{i}\n" for i in range(25)))
    call_command("reprocess", "prod", "--csv", str(csv), "--as", "olga", "--inline", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "succeeded" and summary["accepted"] == 25 and summary["source_detail"] == "lost.csv"
    assert sum(reprocess_stub.accepted.values()) == 25
    assert ReprocessBatch.objects.get().triggered_by == operator


def test_a_batch_that_leaves_items_unaccepted_exits_non_zero(
    prod: Environment, operator: User, reprocess_stub: ReprocessStub, tmp_path: Path
) -> None:
    reprocess_stub.refuse = {"2": 404}
    csv = tmp_path / "lost.csv"
    csv.write_text("ws-1,1\nws-1,2\n")
    with pytest.raises(CommandError, match="batch #\\d+ failed: 1 of 2 accepted, 1 failed"):
        call_command("reprocess", "prod", "--csv", str(csv), "--as", "olga", "--inline")


def test_draft_only_builds(prod: Environment, operator: User, reprocess_stub: ReprocessStub, tmp_path: Path) -> None:
    csv = tmp_path / "lost.csv"
    csv.write_text("ws-1,1\n")
    call_command("reprocess", "prod", "--csv", str(csv), "--as", "olga", "--draft")
    assert ReprocessBatch.objects.get().status == ReprocessBatch.Status.DRAFT
    assert not reprocess_stub.calls


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nowhere", "--query", "--as", "olga"], "no environment named 'nowhere'; known: prod"),
        (["prod", "--query", "--as", "nobody"], "wrong user name or password for nobody"),
        (["prod", "--query", "--as", "vera"], "vera may not reprocess documents (needs the operator role)"),
        (["prod", "--query", "--as", "olga"], "environment prod has no postgres_datastore"),
        (["prod", "--failed-jobs", "--as", "olga"], "No Redis datastore is linked to prod"),
        (["prod", "--csv", "/nonexistent.csv", "--as", "olga"], "/nonexistent.csv: cannot read the file"),
    ],
)
def test_mistakes_are_one_line(prod: Environment, operator: User, args: list[str], error: str) -> None:
    user_in_groups("vera", "viewer")
    with pytest.raises(CommandError, match=error.replace("(", "\\(").replace(")", "\\)")):
        call_command("reprocess", *args)
    assert not ReprocessBatch.objects.exists()


def test_bad_csv_lines_are_each_reported(
    prod: Environment, operator: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "lost.csv"
    csv.write_text("ws-1,1\nws-1\nws-1,2,3\n")
    with pytest.raises(CommandError, match="2 problems; no batch was built"):
        call_command("reprocess", "prod", "--csv", str(csv), "--as", "olga")
    assert "line 2: expected 2 columns" in capsys.readouterr().err
