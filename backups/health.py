"""Datastore health between backups: can a worker reach each datastore as configured? Its URL variable is set
in the worker's environment, the server answers, it accepts the credentials, the user can read every table
pg_dump will read, and pg_dump is new enough for the server. A revoked password or an unset variable then shows
on the dashboard within minutes, not in the night's failed backup.

A check runs on beat's schedule for every datastore (DATASTORE_HEALTH_CHECK_SECONDS), as soon as a datastore is
configured (admin, loadconfig), and after one of its backups failed. The probes run in threads (a slow server
costs its own timeout, not everyone's); the rows are written by the caller. A datastore whose state changes is
audited and told (ALERT_EMAILS, its environment's webhook); one that stays bad is not told again.
"""

from __future__ import annotations

import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from backups.postgres import (
    DatastoreConfigError,
    PostgresError,
    ToolMissing,
    first_line,
    pg_connection_from_env,
    pg_tool,
    server_version,
    tool_version,
)
from backups.redis_snapshot import RedisDatastoreError, redis_target_from_env
from dr_console.notifications import alert_recipients, notify
from dr_console.text import untrusted_text
from inventory.identity import TargetIdentity, postgres_identity_of, redis_identity_of
from inventory.models import Datastore, DatastoreHealth
from inventory.services import DatastoreRefused, datastore_check_target

logger = logging.getLogger(__name__)
State = DatastoreHealth.State

# Tables (and partitioned tables, sequences) of the user's schemas that the connecting role may not SELECT:
# pg_dump would stop at the first of them ("permission denied for table ...").
UNREADABLE_TABLES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""


@dataclass(frozen=True)
class HealthFinding:
    state: str  # DatastoreHealth.State
    message: str = ""
    server_version: str = ""
    identity: TargetIdentity | None = None  # which database the URL reached, when the server answered


def datastore_health_probe(datastore: Datastore) -> HealthFinding:
    """Check one datastore from this process, as a backup would reach it. Touches no console table (it runs in
    threads); never raises."""
    try:
        if datastore.kind == Datastore.Kind.REDIS:
            return _probe_redis(datastore)
        return _probe_postgres(datastore)
    except Exception as exc:  # a probe must end in a state, whatever went wrong; the log keeps the traceback
        logger.exception("the health check of %s failed", datastore.name)
        return HealthFinding(State.ERROR, untrusted_text(f"{type(exc).__name__}: {first_line(str(exc))}"))


def _probe_postgres(datastore: Datastore) -> HealthFinding:
    try:
        target = pg_connection_from_env(datastore.url_env)
    except DatastoreConfigError as exc:
        return HealthFinding(State.UNCONFIGURED, str(exc))
    timeout = str(settings.DATASTORE_HEALTH_TIMEOUT_SECONDS)
    try:
        conn = target.connect(autocommit=True, connect_timeout=timeout)
    except PostgresError as exc:
        return HealthFinding(_connect_failure_state(str(exc)), str(exc))
    with conn:
        version_text, server_major = server_version(conn)
        identity = postgres_identity_of(conn, target.params)
        unreadable = [name for (name,) in conn.execute(UNREADABLE_TABLES).fetchall()]
    if unreadable:
        shown = ", ".join(untrusted_text(name) for name in unreadable[:3])
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        return HealthFinding(
            State.REFUSED,
            f"the user in {datastore.url_env} may not read {len(unreadable)} table(s) ({shown}{more}): "
            "a backup would fail; grant it SELECT (or pg_read_all_data)",
            version_text,
            identity,
        )
    try:
        dump_version, dump_major = tool_version(pg_tool("pg_dump"))
    except ToolMissing as exc:
        return HealthFinding(State.TOOL, f"{exc} (on host {socket.gethostname()})", version_text, identity)
    if dump_major < server_major:
        return HealthFinding(
            State.TOOL,
            f"{dump_version} on host {socket.gethostname()} cannot dump a PostgreSQL {server_major} server; "
            f"install the PostgreSQL {server_major} client on the worker or set PG_BIN_DIR",
            version_text,
            identity,
        )
    return HealthFinding(State.OK, "", version_text, identity)


# What libpq says when the server answered and refused us, rather than not answering at all.
_REFUSED_WORDS = ("password", "authentication", "role", "does not exist", "pg_hba", "permission denied", "ssl")


def _connect_failure_state(message: str) -> str:
    detail = message.lower()
    answered = "fatal:" in detail or "authentication" in detail
    return State.REFUSED if answered and any(word in detail for word in _REFUSED_WORDS) else State.UNREACHABLE


def _probe_redis(datastore: Datastore) -> HealthFinding:
    try:
        target = redis_target_from_env(datastore.url_env)
    except RedisDatastoreError as exc:
        return HealthFinding(State.UNCONFIGURED, str(exc))
    client = redis.Redis.from_url(
        target.url,
        socket_timeout=settings.DATASTORE_HEALTH_TIMEOUT_SECONDS,
        socket_connect_timeout=settings.DATASTORE_HEALTH_TIMEOUT_SECONDS,
    )
    try:
        info = client.info("server")
    except redis.AuthenticationError as exc:
        return HealthFinding(State.REFUSED, str(target.error("Redis refused the credentials", exc)))
    except redis.ResponseError as exc:
        words = str(exc).upper()  # NOAUTH, WRONGPASS, NOPERM, "AUTH ... called without any password configured"
        state = State.REFUSED if any(word in words for word in ("AUTH", "WRONGPASS", "NOPERM")) else State.ERROR
        return HealthFinding(state, str(target.error("Redis refused the check", exc)))
    except redis.RedisError as exc:
        return HealthFinding(State.UNREACHABLE, str(target.error("cannot reach Redis", exc)))
    finally:
        client.close()
    version = f"Redis {untrusted_text(str(info.get('redis_version', '?')))}"
    return HealthFinding(State.OK, "", version, redis_identity_of(client, info))


# --- recording --------------------------------------------------------------------------------------------------


def datastore_health_check(*, datastore_ids: list[int] | None = None) -> dict[int, DatastoreHealth]:
    """Probe the datastores (all of them by default) from this worker, record each finding, and tell people about
    the ones whose state changed. Returns the rows written, by datastore id."""
    datastores = Datastore.objects.select_related("environment").order_by("pk")
    if datastore_ids is not None:
        datastores = datastores.filter(pk__in=datastore_ids)
    datastore_list = list(datastores)
    if not datastore_list:
        return {}
    workers = max(1, min(settings.DATASTORE_HEALTH_CONCURRENCY, len(datastore_list)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health") as pool:
        findings = list(pool.map(datastore_health_probe, datastore_list))
    findings = _conflicts_found(datastore_list, findings)
    host = socket.gethostname()
    return {
        datastore.pk: datastore_health_record(datastore=datastore, finding=finding, host=host)
        for datastore, finding in zip(datastore_list, findings, strict=True)
    }


def _conflicts_found(datastores: list[Datastore], findings: list[HealthFinding]) -> list[HealthFinding]:
    """A datastore whose URL reaches the console's own database or broker, or another datastore's database, is a
    problem however well it answers: its backups and restores are refused until one record is corrected."""
    identities = {datastore.pk: finding.identity for datastore, finding in zip(datastores, findings, strict=True)}
    checked = []
    for datastore, finding in zip(datastores, findings, strict=True):
        if finding.identity is not None:
            try:
                datastore_check_target(datastore, finding.identity, known=identities)
            except DatastoreRefused as exc:
                finding = HealthFinding(State.CONFLICT, str(exc), finding.server_version, finding.identity)
        checked.append(finding)
    return checked


def datastore_health_record(
    *, datastore: Datastore, finding: HealthFinding, host: str, now: datetime | None = None
) -> DatastoreHealth:
    """Replace the datastore's health row with `finding`. A change of state (other than a first check that finds
    it healthy) is audited, and told once the row is committed."""
    now = now or timezone.now()
    with transaction.atomic():
        previous = DatastoreHealth.objects.select_for_update().filter(datastore=datastore).first()
        changed = previous is None or previous.state != finding.state
        health, _created = DatastoreHealth.objects.update_or_create(
            datastore=datastore,
            defaults={
                "state": finding.state,
                "message": finding.message,
                "server_version": finding.server_version[:120],
                "checked_at": now,
                "checked_on": host[:255],
                "since": now if changed else previous.since,  # type: ignore[union-attr]
                # Kept when this check got no answer: the console still knows which database it was.
                "identity": (
                    finding.identity.as_json()
                    if finding.identity is not None
                    else (previous.identity if previous is not None else None)
                ),
            },
        )
        if changed and (previous is not None or finding.state != State.OK):
            before = previous.state if previous is not None else ""
            audit_record(
                action=AuditEvent.Action.DATASTORE_HEALTH_CHANGED,
                actor_label="console",
                obj=datastore,
                details={
                    "datastore": datastore.name,
                    "from": before,
                    "to": finding.state,
                    "message": finding.message,
                    "checked_on": host,
                },
            )
            transaction.on_commit(lambda: _notify_change(datastore, health, before))
    return health


def _notify_change(datastore: Datastore, health: DatastoreHealth, before: str) -> None:
    where = f"{datastore.name} ({datastore.environment.name})"
    if health.is_problem:
        subject = f"[DR Console] {datastore.name}: {State(health.state).label.lower()}"
        lines = [
            f"A worker on {health.checked_on} cannot back up {where}: {health.message}",
            "Backups of it will fail until this is fixed.",
        ]
    elif before and before != State.OK:
        subject = f"[DR Console] {datastore.name} is reachable again"
        lines = [f"A worker on {health.checked_on} reaches {where} again ({health.server_version})."]
    else:
        return
    notify(
        subject=subject,
        text="\n".join(lines),
        recipients=alert_recipients(),
        webhook_env=datastore.environment.webhook_url_env,
        about=f"the health of {datastore.name}",
    )


# --- when checks run besides beat's schedule ----------------------------------------------------------------------


def datastore_health_check_soon(datastore_id: int) -> None:
    """Ask the maintenance worker to check one datastore once the current transaction commits. Best effort: with
    the broker down the next scheduled check does it (and the failure is logged, not raised)."""

    def send() -> None:
        from backups.tasks import datastore_health_check_task

        try:
            datastore_health_check_task.apply_async(kwargs={"datastore_id": datastore_id}, retry=False)
        except Exception as exc:  # kombu raises several kinds of connection error; none must fail the caller
            logger.warning("could not ask for a health check of datastore %s: %s", datastore_id, first_line(str(exc)))

    transaction.on_commit(send)


def on_datastore_configured(sender: object, *, datastore: Datastore, **kwargs: object) -> None:
    datastore_health_check_soon(datastore.pk)
