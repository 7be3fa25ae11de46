"""/metrics for Prometheus: the console's recovery state, read from its database at scrape time.

A custom collector (prometheus_client) computes every sample from the job rows when scraped, in a constant
number of queries whatever the number of datastores and jobs: nothing is kept in process memory, so every web
worker answers the same and a restart loses nothing. A datastore with no such event yet has no sample for it
(Prometheus' convention for "unknown"), rather than a misleading 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db.models import Count, OuterRef, Q, Subquery
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from backups.models import BackupArtifact
from backups.selectors import backup_artifact_recovery_point
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
    """Per-datastore figures and restore runs by state, in eight queries."""
    Status, Verification = BackupArtifact.Status, BackupArtifact.Verification

    def newest(model: type[BackupArtifact] | type[DrillRun], condition: Q) -> Subquery:
        rows = model.objects.filter(condition, datastore=OuterRef("pk")).order_by("-created_at", "-pk")
        return Subquery(rows.values("pk")[:1])

    datastores = list(
        Datastore.objects.select_related("environment")
        .annotate(
            last_success_id=newest(BackupArtifact, Q(status=Status.SUCCEEDED)),
            last_verified_id=newest(BackupArtifact, Q(status=Status.SUCCEEDED, verification=Verification.VERIFIED)),
            last_drill_id=newest(DrillRun, Q(status__in=[DrillRun.Status.SUCCEEDED, DrillRun.Status.FAILED])),
            last_rto_drill_id=newest(DrillRun, Q(rto__isnull=False)),
        )
        .order_by("name")
    )
    artifact_ids = {ds.last_success_id for ds in datastores} | {ds.last_verified_id for ds in datastores}
    artifacts = BackupArtifact.objects.in_bulk(artifact_ids - {None})
    drill_ids = {ds.last_drill_id for ds in datastores} | {ds.last_rto_drill_id for ds in datastores}
    drills = DrillRun.objects.in_bulk(drill_ids - {None})
    failures: dict[tuple[int, str], int] = {}
    backup_failures = (
        BackupArtifact.objects.order_by()
        .values("datastore_id")
        .annotate(
            backup=Count("pk", filter=Q(status=Status.FAILED)),
            verification=Count("pk", filter=Q(verification=Verification.CORRUPT)),
        )
    )
    for row in backup_failures:
        failures[row["datastore_id"], "backup"] = row["backup"]
        failures[row["datastore_id"], "verification"] = row["verification"]
    drill_failures = (
        DrillRun.objects.filter(status=DrillRun.Status.FAILED).order_by().values("datastore_id").annotate(n=Count("pk"))
    )
    for row in drill_failures:
        failures[row["datastore_id"], "drill"] = row["n"]
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
        figures = DatastoreMetrics(
            name=ds.name,
            environment=ds.environment.name,
            rpo_target_seconds=ds.rpo_target.total_seconds(),
            rto_target_seconds=ds.rto_target.total_seconds(),
            failures={kind: failures.get((ds.pk, kind), 0) for kind in FAILURE_KINDS},
            open_breaches=breaches.get(ds.pk, set()),
        )
        if (success := artifacts.get(ds.last_success_id)) is not None:
            figures.last_success_timestamp = (success.finished_at or success.created_at).timestamp()
            figures.last_duration_seconds = success.duration_seconds
            figures.last_size_bytes = success.size_bytes
        if (verified := artifacts.get(ds.last_verified_id)) is not None:
            figures.last_verified_timestamp = backup_artifact_recovery_point(verified).timestamp()
        if (drill := drills.get(ds.last_drill_id)) is not None:
            figures.last_drill_timestamp = (drill.finished_at or drill.created_at).timestamp()
            figures.last_drill_succeeded = drill.status == DrillRun.Status.SUCCEEDED
        if (measured := drills.get(ds.last_rto_drill_id)) is not None:
            figures.last_drill_rto_seconds = measured.rto_seconds
        result.append(figures)
    return result, restore_states


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
