"""The job factories' Traits build rows in the shape job_transition leaves them, so a test that starts from
`succeeded=True` starts from a state the console can reach."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import (
    BackupArtifactFactory,
    BackupVerificationFactory,
    DrillRunFactory,
    ReprocessBatchFactory,
    RestoreRunFactory,
)

pytestmark = pytest.mark.django_db

TRAITS = [
    (BackupArtifactFactory, ["running", "succeeded", "failed", "expired"]),
    (RestoreRunFactory, ["awaiting_approval", "queued", "running", "succeeded", "failed", "cancelled"]),
    (DrillRunFactory, ["running", "succeeded", "failed", "cancelled"]),
    (ReprocessBatchFactory, ["queued", "running", "succeeded", "failed", "cancelled", "discarded"]),
    (BackupVerificationFactory, ["running", "verified", "corrupt", "failed", "errored", "cancelled"]),
]


@pytest.mark.parametrize(
    ("factory_class", "trait"),
    [(factory_class, trait) for factory_class, traits in TRAITS for trait in traits],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_each_trait_is_its_status_with_the_timings_of_that_status(factory_class: Any, trait: str) -> None:
    job = factory_class(**{trait: True})
    job.refresh_from_db()
    assert job.status == trait
    if job.status in job.TERMINAL:
        assert job.finished_at is not None and job.heartbeat_at is None
        assert job.duration == (job.finished_at - job.started_at if job.started_at else None)
    else:
        assert job.finished_at is None and job.heartbeat_at is not None
    if job.status in getattr(job, "RUNNING_STATES", {"running"}):
        assert job.started_at is not None


def test_without_a_trait_a_job_is_in_its_first_status() -> None:
    assert BackupArtifactFactory().status == "pending"
    assert RestoreRunFactory().status == "requested"
    drill = DrillRunFactory()
    assert drill.status == "queued" and drill.server_url_env == drill.datastore.url_env
    assert ReprocessBatchFactory().status == "draft"
