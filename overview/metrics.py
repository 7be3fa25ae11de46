"""/metrics for Prometheus: the console's recovery state, read from its database at scrape time.

A custom collector (prometheus_client) computes every sample from the job rows when scraped, in a constant
number of queries whatever the number of datastores and jobs: nothing is kept in process memory, so every web
worker answers the same and a restart loses nothing. A datastore with no such event yet has no sample for it
(Prometheus' convention for "unknown"), rather than a misleading 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, F, Q
from django.db.models.functions import Coalesce
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from backups.models import BackupArtifact
from dr_console.jobs import newest_job_value
from drills.models import DrillRun, ObjectiveBreach
from inventory.models import Datastore
from restores.models import RestoreRun

PREFIX = "dr_console"
FAILURE_KINDS = ("backup", "verification", "drill", "restore")


@dataclass
class DatastoreMetrics:
    name: str
    environment: str
    rpo_target_seconds: float
    rto_target_seconds: float
    last_success_timestamp: float | None = None
    last_duration_seconds: float | None = None
    last_size_bytes: int | None = None
    last_verified_timestamp: float | None = None
    last_drill_timestamp: float | None = None
    last_drill_succeeded: bool | None = None
    last_drill_rto_seconds: float | None = None
    failures: dict[str, int] = field(default_factory=dict)
    open_breaches: set[str] = field(default_factory=set)


def metrics_snapshot() -> tuple[list[DatastoreMetrics], dict[str, int]]:
    """Per-datastore figures and restore runs by state, in seven queries."""
    Status, Verification = BackupArtifact.Status, BackupArtifact.Verification

    succeeded = Q(status=Status.SUCCEEDED)
    verified = Q(status=Status.SUCCEEDED, verification=Verification.VERIFIED)
    drilled = Q(status__in=[DrillRun.Status.SUCCEEDED, DrillRun.Status.FAILED])
    ended = Coalesce("finished_at", "created_at")
    # The figures themselves as subqueries, not the rows behind them: no model is built per datastore.
    datastores = (
        Datastore.objects.order_by("name")
        .annotate(
            environment_name=F("environment__name"),
            last_success_at=newest_job_value(BackupArtifact, succeeded, ended),
            last_success_duration=newest_job_value(BackupArtifact, succeeded, "duration"),
            last_success_size=newest_job_value(BackupArtifact, succeeded, "size_bytes"),
            # backup_artifact_recovery_point, in SQL: BackupArtifact.taken_at
            last_verified_point=newest_job_value(BackupArtifact, verified, Coalesce("started_at", "created_at")),
            last_drill_at=newest_job_value(DrillRun, drilled, ended),
            last_drill_status=newest_job_value(DrillRun, drilled, "status"),
            last_rto=newest_job_value(DrillRun, Q(rto__isnull=False), "rto"),
        )
        .values(
            "pk", "name", "environment_name", "rpo_target", "rto_target", "last_success_at", "last_success_duration",
            "last_success_size", "last_verified_point", "last_drill_at", "last_drill_status", "last_rto",
        )
    )  # fmt: skip
    failures: dict[tuple[int, str], int] = {}
    # One count per kind, each over its own partial index (backups/models.py, drills/models.py): a scrape reads the
    # failures, never the whole history.
    counted = (
        ("backup", BackupArtifact.objects.filter(status=Status.FAILED)),
        ("verification", BackupArtifact.objects.filter(verification=Verification.CORRUPT)),
        ("drill", DrillRun.objects.filter(status=DrillRun.Status.FAILED)),
    )
    for kind, failed in counted:
        for datastore_id, n in (
            failed.order_by().values("datastore_id").annotate(n=Count("*")).values_list("datastore_id", "n")
        ):
            failures[datastore_id, kind] = n
    restore_failures = (
        RestoreRun.objects.filter(status=RestoreRun.Status.FAILED)
        .order_by()
        .values("target_datastore_id")
        .annotate(n=Count("pk"))
    )
    for row in restore_failures:
        failures[row["target_datastore_id"], "restore"] = row["n"]
    restore_states = {status.value: 0 for status in RestoreRun.Status}
    for row in RestoreRun.objects.order_by().values("status").annotate(n=Count("pk")):
        restore_states[row["status"]] = row["n"]
    breaches: dict[int, set[str]] = {}
    for datastore_id, objective in ObjectiveBreach.objects.filter(closed_at__isnull=True).values_list(
        "datastore_id", "objective"
    ):
        breaches.setdefault(datastore_id, set()).add(objective)

    result = []
    for ds in datastores:
        drill_status = ds["last_drill_status"]
        result.append(
            DatastoreMetrics(
                name=ds["name"],
                environment=ds["environment_name"],
                rpo_target_seconds=ds["rpo_target"].total_seconds(),
                rto_target_seconds=ds["rto_target"].total_seconds(),
                last_success_timestamp=_timestamp(ds["last_success_at"]),
                last_duration_seconds=_seconds(ds["last_success_duration"]),
                last_size_bytes=ds["last_success_size"],
                last_verified_timestamp=_timestamp(ds["last_verified_point"]),
                last_drill_timestamp=_timestamp(ds["last_drill_at"]),
                last_drill_succeeded=None if drill_status is None else drill_status == DrillRun.Status.SUCCEEDED,
                last_drill_rto_seconds=_seconds(ds["last_rto"]),
                failures={kind: failures.get((ds["pk"], kind), 0) for kind in FAILURE_KINDS},
                open_breaches=breaches.get(ds["pk"], set()),
            )
        )
    return result, restore_states


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


class ConsoleCollector(Collector):
    """Every sample from the database, at each scrape."""

    def collect(self) -> Iterator[Metric]:
        datastores, restore_states = metrics_snapshot()
        labels = ["datastore", "environment"]

        def gauge(name: str, documentation: str, attribute: str) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)
            for figures in datastores:
                value = getattr(figures, attribute)
                if value is not None:
                    family.add_metric([figures.name, figures.environment], float(value))
            return family

        yield gauge(
            "backup_last_success_timestamp_seconds",
            "When the newest successful backup finished (Unix time).",
            "last_success_timestamp",
        )
        yield gauge(
            "backup_last_duration_seconds", "How long the newest successful backup took.", "last_duration_seconds"
        )
        yield gauge("backup_last_size_bytes", "Size of the newest successful backup.", "last_size_bytes")
        yield gauge(
            "backup_last_verified_recovery_point_timestamp_seconds",
            "When the data in the newest verified backup was read (Unix time): the recovery point.",
            "last_verified_timestamp",
        )
        yield gauge("rpo_target_seconds", "The datastore's RPO target.", "rpo_target_seconds")
        yield gauge("rto_target_seconds", "The datastore's RTO target.", "rto_target_seconds")
        yield gauge(
            "drill_last_timestamp_seconds", "When the newest finished drill ended (Unix time).", "last_drill_timestamp"
        )
        yield gauge(
            "drill_last_success", "1 if the newest finished drill succeeded, 0 if it failed.", "last_drill_succeeded"
        )
        yield gauge(
            "drill_last_rto_seconds",
            "The newest measured RTO: how long the last drill that restored took to restore.",
            "last_drill_rto_seconds",
        )
        failures = CounterMetricFamily(
            f"{PREFIX}_failures",
            "Failed jobs by kind: backups failed, backups found corrupt, drills failed, restores into it failed.",
            labels=[*labels, "kind"],
        )
        breached = GaugeMetricFamily(
            f"{PREFIX}_objective_breached",
            "1 while the datastore misses the objective (an open breach), else 0.",
            labels=[*labels, "objective"],
        )
        for figures in datastores:
            for kind in FAILURE_KINDS:
                failures.add_metric([figures.name, figures.environment, kind], figures.failures[kind])
            for objective in ("rpo", "rto"):
                value = 1.0 if objective in figures.open_breaches else 0.0
                breached.add_metric([figures.name, figures.environment, objective], value)
        yield failures
        yield breached
        runs = GaugeMetricFamily(f"{PREFIX}_restore_runs", "Restore runs by state.", labels=["state"])
        for state, count in restore_states.items():
            runs.add_metric([state], count)
        yield runs


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ConsoleCollector())
