"""/metrics: Prometheus text that prometheus_client's own parser reads, values from the database, a constant
number of queries, and a bearer token (or a signed-in viewer) to read it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from backups.models import BackupArtifact
from drills.models import DrillRun, ObjectiveBreach
from restores.models import RestoreRun
from tests.factories import BackupArtifactFactory, DatastoreFactory

pytestmark = pytest.mark.django_db
TOKEN = "scrape-token-1234"
T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _token(settings: Any) -> None:
    settings.METRICS_BEARER_TOKEN = TOKEN


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def backup(datastore: Any, status: str = "succeeded", at: datetime = T0, **fields: Any) -> BackupArtifact:
    return BackupArtifactFactory(  # type: ignore[no-any-return]
        datastore=datastore,
        status=status,
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(seconds=90),
        duration=timedelta(seconds=90),
        **fields,
    )


def drill(datastore: Any, status: str, at: datetime, rto: float | None) -> DrillRun:
    return DrillRun.objects.create(
        datastore=datastore,
        status=status,
        server_url_env="X",
        created_at=at,
        finished_at=at + timedelta(minutes=5),
        rto=None if rto is None else timedelta(seconds=rto),
    )


def test_metrics_carry_each_datastores_figures(client: Client) -> None:
    prod = DatastoreFactory(name="prod-db", environment__name="prod", rpo_target=timedelta(hours=6))
    DatastoreFactory(name="new-db", environment__name="prod")  # nothing happened yet: no samples but targets
    backup(prod, size_bytes=1000, verification="verified", at=T0 - timedelta(days=1))
    backup(prod, size_bytes=2048, at=T0)  # newest success, not verified yet
    backup(prod, status="failed", at=T0 + timedelta(hours=1))
    backup(prod, status="succeeded", verification="corrupt", at=T0 - timedelta(days=2))
    drill(prod, "succeeded", T0 - timedelta(days=1), rto=42.5)
    drill(prod, "failed", T0, rto=None)  # failed before restoring: the RTO stays the last measured one
    artifact = BackupArtifact.objects.filter(datastore=prod).first()
    for status in ("succeeded", "failed", "failed", "awaiting_approval"):
        RestoreRun.objects.create(
            artifact=artifact, target_kind="in_place", target_datastore=prod, target_key="k", reason="r", status=status
        )
    ObjectiveBreach.objects.create(datastore=prod, objective="rto", reason="drill failed")

    samples = scrape(client)
    prod_labels = (("datastore", "prod-db"), ("environment", "prod"))
    new_labels = (("datastore", "new-db"), ("environment", "prod"))

    def value(name: str, labels: tuple[tuple[str, str], ...] = prod_labels, **extra: str) -> float | None:
        return samples.get((f"dr_console_{name}", tuple(sorted(labels + tuple(extra.items())))))

    assert value("backup_last_success_timestamp_seconds") == (T0 + timedelta(seconds=90)).timestamp()
    assert value("backup_last_duration_seconds") == 90.0
    assert value("backup_last_size_bytes") == 2048.0
    assert value("backup_last_verified_recovery_point_timestamp_seconds") == (T0 - timedelta(days=1)).timestamp()
    assert value("rpo_target_seconds") == 6 * 3600.0
    assert value("rto_target_seconds") == 3600.0
    assert value("drill_last_rto_seconds") == 42.5
    assert value("drill_last_success") == 0.0
    assert value("drill_last_timestamp_seconds") == (T0 + timedelta(minutes=5)).timestamp()
    assert value("failures_total", kind="backup") == 1.0
    assert value("failures_total", kind="verification") == 1.0
    assert value("failures_total", kind="drill") == 1.0
    assert value("failures_total", kind="restore") == 2.0
    assert value("objective_breached", objective="rto") == 1.0
    assert value("objective_breached", objective="rpo") == 0.0
    assert samples["dr_console_restore_runs", (("state", "failed"),)] == 2.0
    assert samples["dr_console_restore_runs", (("state", "awaiting_approval"),)] == 1.0
    assert samples["dr_console_restore_runs", (("state", "cancelled"),)] == 0.0
    assert value("backup_last_success_timestamp_seconds", new_labels) is None
    assert value("drill_last_rto_seconds", new_labels) is None
    assert value("failures_total", new_labels, kind="backup") == 0.0
    assert value("rto_target_seconds", new_labels) == 3600.0


def test_metrics_cost_the_same_queries_for_one_datastore_or_many(
    client: Client, django_assert_num_queries: Any
) -> None:
    def add_datastore() -> None:
        datastore = DatastoreFactory()
        for days in range(3):
            backup(datastore, size_bytes=10, verification="verified", at=T0 - timedelta(days=days))
        drill(datastore, "succeeded", T0, rto=10.0)

    add_datastore()
    with django_assert_num_queries(7) as one:
        scrape(client)
    for _ in range(5):
        add_datastore()
    with django_assert_num_queries(len(one.captured_queries)):
        scrape(client)


@pytest.mark.parametrize("authorization", ["", "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_metrics_refuse_a_scraper_without_the_token(client: Client, authorization: str) -> None:
    response = client.get("/metrics", headers={"Authorization": authorization} if authorization else {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_with_no_token_configured_no_bearer_is_accepted(client: Client, settings: Any) -> None:
    settings.METRICS_BEARER_TOKEN = ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_a_signed_in_viewer_reads_the_metrics_and_others_do_not(client: Client, settings: Any) -> None:
    from tests.factories import UserFactory, user_in_groups

    settings.METRICS_BEARER_TOKEN = ""
    client.force_login(UserFactory(username="nobody"))
    assert client.get("/metrics").status_code == 401
    client.force_login(user_in_groups("vera", "viewer"))
    response = client.get("/metrics")
    assert response.status_code == 200 and b"dr_console_restore_runs" in response.content
