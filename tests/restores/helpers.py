"""What the restore service tests share: the operator who requests their restores, and request/run shortcuts.
A module using them imports `requester` (an autouse fixture) with them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backups.models import BackupArtifact
from restores.models import RestoreRun
from restores.services import restore_run_execute, restore_run_request

REQUESTER: list[Any] = []


@pytest.fixture(autouse=True)
def requester(operator: Any) -> Iterator[None]:
    """The operator who requests the restores of the module."""
    REQUESTER.append(operator)
    yield
    REQUESTER.clear()


def request(artifact: BackupArtifact, **kwargs: Any) -> RestoreRun:
    kwargs.setdefault("reason", "test restore")
    return restore_run_request(artifact=artifact, requested_by=REQUESTER[0], enqueue=False, **kwargs)


def restore(artifact: BackupArtifact, **kwargs: Any) -> RestoreRun:
    run = request(artifact, **kwargs)
    restore_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run
