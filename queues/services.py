"""Requeueing failed RQ jobs of an environment's queues (rq's own FailedJobRegistry.requeue), with audit events."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.contrib.auth.models import User
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.registry import FailedJobRegistry

from audit.models import AuditEvent
from audit.services import audit_record
from inventory.models import Environment
from queues.rqclient import OpaqueSerializer, environment_redis

# "Requeue all" moves at most this many jobs per click, so a web request stays a few seconds however many failed
# (about 0.7 ms a job on a local Redis, see docs/benchmarks.md); the page says how many remain.
REQUEUE_ALL_LIMIT = 5000
_CHUNK = 500


@dataclass
class RequeueOutcome:
    requeued: int  # back in their queue
    gone: int  # listed as failed but their data had expired: removed from the list
    remaining: int  # still failed after this request (more than REQUEUE_ALL_LIMIT, or failed again meanwhile)


def _failed_registry(connection: redis.Redis, queue_name: str) -> FailedJobRegistry:
    # OpaqueSerializer: requeueing decodes nothing and writes the job's data back as it was stored.
    return FailedJobRegistry(queue_name, connection=connection, serializer=OpaqueSerializer)


def _requeue(registry: FailedJobRegistry, job_id: str) -> str:
    """'requeued', 'gone' (its data expired: dropped from the registry) or 'absent' (not failed any more)."""
    try:
        registry.requeue(job_id)
    except NoSuchJobError:
        return "gone" if registry.remove(job_id) else "absent"
    except InvalidJobOperation:  # someone else requeued it first
        return "absent"
    return "requeued"


def failed_job_requeue(
    *, environment: Environment, queue_name: str, job_id: str, requested_by: User, client_ip: str | None = None
) -> bool:
    """Put one failed job back in its queue. False when it is not in the failed list (any more)."""
    connection = environment_redis(environment)
    try:
        outcome = _requeue(_failed_registry(connection, queue_name), job_id)
    finally:
        connection.close()
    audit_record(
        action=AuditEvent.Action.QUEUE_JOB_REQUEUED,
        actor=requested_by,
        obj=environment,
        details={"queue": queue_name, "job_id": job_id, "outcome": outcome},
        client_ip=client_ip,
    )
    return outcome == "requeued"


def failed_jobs_requeue_all(
    *, environment: Environment, queue_name: str, requested_by: User, client_ip: str | None = None
) -> RequeueOutcome:
    """Put the queue's failed jobs back in it, oldest failure first, up to REQUEUE_ALL_LIMIT."""
    connection = environment_redis(environment)
    registry = _failed_registry(connection, queue_name)
    counts = {"requeued": 0, "gone": 0, "absent": 0}
    details: dict[str, object] = {"queue": queue_name}
    try:
        # Every pass takes each listed id out of the registry (requeued, dropped, or already gone), so this ends.
        while (done := sum(counts.values())) < REQUEUE_ALL_LIMIT:
            job_ids = registry.get_job_ids(0, min(_CHUNK, REQUEUE_ALL_LIMIT - done) - 1, cleanup=False)
            if not job_ids:
                break
            for job_id in job_ids:
                counts[_requeue(registry, job_id)] += 1
        outcome = RequeueOutcome(
            requeued=counts["requeued"], gone=counts["gone"], remaining=registry.get_job_count(cleanup=False)
        )
        details |= {"remaining": outcome.remaining}
    except redis.RedisError as exc:
        details |= {"error": type(exc).__name__}  # Redis went away part way: the log still says what was done
        raise
    finally:
        connection.close()
        audit_record(
            action=AuditEvent.Action.QUEUE_FAILED_REQUEUED,
            actor=requested_by,
            obj=environment,
            details={**details, "requeued": counts["requeued"], "gone": counts["gone"]},
            client_ip=client_ip,
        )
    return outcome
