"""Reprocess batches: build one (from the configured query, a CSV, or the failed RQ jobs), show it, send it.

Sending happens on a Celery worker: an asyncio loop keeps `reprocess_concurrency` calls in flight with
httpx.AsyncClient (reprocess/client.py decides what is retried). Outcomes are written in bulk by one writer thread
every half second, and the same write is the batch's heartbeat: when it finds the batch no longer running
(cancelled, or reaped) the loop stops starting calls, lets the calls in flight finish, and records them, so an
accepted item is always known as accepted and never sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connections, transaction
from django.db.models import Count, F
from django.utils import timezone
from django.utils.translation import gettext as _
from kombu.exceptions import OperationalError as KombuOperationalError

from audit.models import AuditEvent
from audit.services import audit_record
from backups.models import Environment
from dr_console.jobs import IllegalTransition, job_transition, jobs_reap_stale
from reprocess import sources
from reprocess.client import CallOutcome, RetryPolicy, SendingStopped, reprocess_call
from reprocess.models import ReprocessBatch, ReprocessItem

logger = logging.getLogger(__name__)
Status = ReprocessBatch.Status
ItemStatus = ReprocessItem.Status
FLUSH_SECONDS = 0.5
CREATE_CHUNK = 5000


class ReprocessRefused(Exception):
    """The action cannot be taken; the message says why and what to do."""


def _status_word(status: str) -> str:
    """A batch status as a word in a sentence ("discarded"), in the active language."""
    return str(Status(status).label).lower()


# --- building ---------------------------------------------------------------------------------------------------


def reprocess_batch_create(
    *,
    environment: Environment,
    documents: list[tuple[str, str]],
    source: str,
    source_detail: str = "",
    requested_by: User | None,
    trigger: str = "",
    client_ip: str | None = None,
) -> ReprocessBatch:
    """A DRAFT batch holding the documents: nothing is sent until someone sends it."""
    if not documents:
        raise ReprocessRefused(
            _("no documents to reprocess in %(environment)s (%(source)s)")
            % {"environment": environment.name, "source": source_detail or source}
        )
    with transaction.atomic():
        batch = ReprocessBatch.objects.create(
            environment=environment,
            source=source,
            source_detail=source_detail[:200],
            total=len(documents),
            triggered_by=requested_by,
            trigger=trigger or (f"web:{requested_by.get_username()}" if requested_by else ""),
        )
        for start in range(0, len(documents), CREATE_CHUNK):
            ReprocessItem.objects.bulk_create(
                ReprocessItem(batch=batch, workspace_id=workspace_id, document_id=document_id)
                for workspace_id, document_id in documents[start : start + CREATE_CHUNK]
            )
        audit_record(
            action=AuditEvent.Action.REPROCESS_CREATED,
            actor=requested_by,
            actor_label="" if requested_by else trigger,
            obj=batch,
            details={
                "environment": environment.name,
                "source": source,
                "detail": source_detail,
                "items": len(documents),
            },
            client_ip=client_ip,
        )
    return batch


def reprocess_batch_send(
    *,
    batch: ReprocessBatch,
    requested_by: User | None,
    trigger: str = "",
    client_ip: str | None = None,
    enqueue: bool = True,
) -> None:
    """Queue the batch for sending (again): only items not accepted yet are sent. `enqueue=False` leaves it
    queued for the caller to run in its own process (`manage.py reprocess --inline`)."""
    if batch.accepted >= batch.total and batch.status != Status.DRAFT:
        raise ReprocessRefused(
            _("every item of batch #%(id)s was already accepted; nothing to send") % {"id": batch.pk}
        )
    if not batch.environment.api_url:
        raise ReprocessRefused(
            _("environment %(environment)s has no api_url: set the application's URL in the admin or with loadconfig")
            % {"environment": batch.environment.name}
        )
    try:
        with transaction.atomic():
            moved = job_transition(ReprocessBatch, pk=batch.pk, to=Status.QUEUED, fields={"error": ""})
            if not moved:
                raise ReprocessRefused(_("batch #%(id)s changed meanwhile; reload the page") % {"id": batch.pk})
            audit_record(
                action=AuditEvent.Action.REPROCESS_QUEUED,
                actor=requested_by,
                actor_label="" if requested_by else trigger,
                obj=batch,
                details={"remaining": batch.total - batch.accepted},
                client_ip=client_ip,
            )
            if enqueue:
                transaction.on_commit(lambda: _enqueue(batch.pk))
    except IllegalTransition as exc:
        raise ReprocessRefused(
            _("batch #%(id)s is %(status)s; it cannot be sent now") % {"id": batch.pk, "status": _status_word(exc.old)}
        ) from None
    except IntegrityError:
        active = ReprocessBatch.objects.filter(environment=batch.environment, status__in=ReprocessBatch.ACTIVE).first()
        raise ReprocessRefused(
            _("batch #%(id)s is already sending to %(environment)s; wait for it to end or cancel it")
            % {"id": active.pk if active else "?", "environment": batch.environment.name}
        ) from None


def _enqueue(batch_id: int) -> None:
    from backups.services import broker_label
    from reprocess.tasks import reprocess_batch_execute_task

    try:
        reprocess_batch_execute_task.apply_async(kwargs={"batch_id": batch_id}, retry=True)
    except KombuOperationalError as exc:
        job_transition(
            ReprocessBatch, pk=batch_id, to=Status.FAILED, error=f"could not reach the task broker at {broker_label()}"
        )
        logger.error("reprocess batch #%s not queued: %s", batch_id, exc)


def reprocess_batch_cancel(
    *, batch: ReprocessBatch, requested_by: User | None, trigger: str = "", client_ip: str | None = None
) -> None:
    """Stop a queued or running batch. Calls in flight finish and are recorded; nothing new is sent."""
    try:
        if not job_transition(ReprocessBatch, pk=batch.pk, to=Status.CANCELLED, error="cancelled"):
            raise ReprocessRefused(_("batch #%(id)s changed meanwhile; reload the page") % {"id": batch.pk})
    except IllegalTransition as exc:
        raise ReprocessRefused(
            _("batch #%(id)s is %(status)s; only a queued or running batch can be cancelled")
            % {"id": batch.pk, "status": _status_word(exc.old)}
        ) from None
    audit_record(
        action=AuditEvent.Action.REPROCESS_CANCELLED,
        actor=requested_by,
        actor_label="" if requested_by else trigger,
        obj=batch,
        client_ip=client_ip,
    )


def reprocess_batch_discard(*, batch: ReprocessBatch, requested_by: User | None, client_ip: str | None = None) -> None:
    try:
        if not job_transition(ReprocessBatch, pk=batch.pk, to=Status.DISCARDED, event_message="discarded"):
            raise ReprocessRefused(_("batch #%(id)s changed meanwhile; reload the page") % {"id": batch.pk})
    except IllegalTransition as exc:
        raise ReprocessRefused(
            _("batch #%(id)s is %(status)s; only a draft can be discarded")
            % {"id": batch.pk, "status": _status_word(exc.old)}
        ) from None
    audit_record(action=AuditEvent.Action.REPROCESS_DISCARDED, actor=requested_by, obj=batch, client_ip=client_ip)


# --- sending ------------------------------------------------------------------------------------------------------


@dataclass
class _PendingItem:
    pk: int
    workspace_id: str
    document_id: str
    attempts: int


@dataclass
class _RunState:
    batch_id: int
    results: list[tuple[_PendingItem, CallOutcome]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def reprocess_batch_execute(*, batch_id: int) -> None:
    """Send the batch's items that are not accepted yet. Safe to call twice: only the caller that wins
    QUEUED -> RUNNING sends anything."""
    now = timezone.now()
    try:
        claimed = job_transition(
            ReprocessBatch,
            pk=batch_id,
            to=Status.RUNNING,
            fields={
                "started_at": now,
                "finished_at": None,
                "duration": None,
                "run_started_at": now,
                "run_accepted": 0,
                "runs": F("runs") + 1,
            },
        )
    except IllegalTransition as exc:
        logger.info("reprocess batch #%s not started: it is %s", batch_id, exc.old)
        return
    except ReprocessBatch.DoesNotExist:
        logger.warning("reprocess batch #%s does not exist; nothing to do", batch_id)
        return
    if not claimed:
        return
    batch = ReprocessBatch.objects.select_related("environment").get(pk=batch_id)
    environment = batch.environment
    audit_record(
        action=AuditEvent.Action.REPROCESS_STARTED,
        actor_label="console",
        obj=batch,
        details={"remaining": batch.total - batch.accepted, "concurrency": environment.reprocess_concurrency},
    )
    error = ""
    try:
        token = _api_token(environment)
        items = [
            _PendingItem(pk, ws, doc, attempts)
            for pk, ws, doc, attempts in batch.items.exclude(status=ItemStatus.ACCEPTED)
            .order_by("pk")
            .values_list("pk", "workspace_id", "document_id", "attempts")
        ]
        asyncio.run(_send_items(batch_id, environment.api_url, token, environment.reprocess_concurrency, items))
    except ReprocessRefused as exc:
        error = str(exc)
    except SoftTimeLimitExceeded:
        error = f"time limit of {settings.REPROCESS_TIME_LIMIT} s reached; send the batch again to go on"
    except Exception as exc:
        logger.exception("reprocess batch #%s failed unexpectedly", batch_id)
        error = f"internal error: {type(exc).__name__}: {exc}"
    _finish(batch_id, error)


def _api_token(environment: Environment) -> str:
    if not environment.api_token_env:
        raise ReprocessRefused(
            f"environment {environment.name} has no api_token_env: name the environment variable holding the "
            "application's API token in the admin or with loadconfig"
        )
    token = os.environ.get(environment.api_token_env, "")
    if not token:
        raise ReprocessRefused(
            f"environment variable {environment.api_token_env} is not set in the worker's environment; set it to "
            "the application's API token and restart the worker"
        )
    return token


async def _send_items(batch_id: int, api_url: str, token: str, concurrency: int, items: list[_PendingItem]) -> None:
    state = _RunState(batch_id)
    policy = RetryPolicy(
        max_attempts=settings.REPROCESS_MAX_ATTEMPTS,
        backoff=settings.REPROCESS_BACKOFF_SECONDS,
        backoff_max=settings.REPROCESS_BACKOFF_MAX_SECONDS,
    )
    queue = iter(items)

    async def sleep_unless_stopped(seconds: float) -> None:
        try:
            await asyncio.wait_for(state.stop.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise SendingStopped

    async def sender() -> None:
        # One client, and so one kept-alive connection, per sender: httpcore scans every pooled connection on
        # each request, and with one shared pool of 16 that scan was half the CPU of a call
        # (bench/reprocess_throughput.py). The SSL context is built once and shared: it costs ~60 ms each.
        async with httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            timeout=timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers=headers,
            follow_redirects=False,
            verify=ssl_context,
        ) as client:
            for item in queue:  # one shared iterator: each item goes to exactly one sender
                if state.stop.is_set():
                    return
                outcome = await reprocess_call(
                    client,
                    item.workspace_id,
                    item.document_id,
                    policy=policy,
                    idempotency_key=f"dr-console-reprocess-{item.pk}",
                    sleep=sleep_unless_stopped,
                )
                state.results.append((item, outcome))

    timeout = httpx.Timeout(settings.REPROCESS_TIMEOUT, connect=min(5.0, settings.REPROCESS_TIMEOUT))
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "dr-console/reprocess"}
    ssl_context = httpx.create_ssl_context()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reprocess-writer")
    loop = asyncio.get_running_loop()
    flusher_done = asyncio.Event()

    async def flusher() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(flusher_done.wait(), timeout=FLUSH_SECONDS)
            # Read before taking the results: once the senders are done nothing is appended any more, so this
            # last round writes every outcome.
            last_round = flusher_done.is_set()
            results, state.results = state.results, []
            still_running = await loop.run_in_executor(writer, _record_outcomes, batch_id, results)
            if not still_running:
                state.stop.set()
            if last_round:
                return

    try:
        flushing = asyncio.create_task(flusher())
        try:
            await asyncio.gather(*(sender() for _ in range(min(concurrency, max(len(items), 1)))))
        finally:
            flusher_done.set()
            await flushing
    finally:
        await loop.run_in_executor(writer, connections.close_all)
        writer.shutdown(wait=True)


def _record_outcomes(batch_id: int, results: list[tuple[_PendingItem, CallOutcome]]) -> bool:
    """Write outcomes and refresh the batch's counters and heartbeat. False: the batch is not running any more
    (cancelled or reaped): the senders must stop.

    Outcomes are grouped by the values they write (nearly all are "accepted, 1 attempt, 202"), one UPDATE per
    group: Django's bulk_update builds a CASE per row and field, which cost more CPU than the HTTP calls.
    """
    now = timezone.now()
    groups: dict[tuple[str, int, int | None, str], list[int]] = defaultdict(list)
    for item, outcome in results:
        item.attempts = min(item.attempts + outcome.attempts, 32767)
        status: str
        if outcome.accepted:
            status = ItemStatus.ACCEPTED
        elif outcome.interrupted:
            status = ItemStatus.PENDING
        else:
            status = ItemStatus.FAILED
        groups[(status, item.attempts, outcome.status_code, outcome.error)].append(item.pk)
    sent = sum(outcome.attempts for _, outcome in results)
    accepted_now = sum(1 for _, outcome in results if outcome.accepted)
    with transaction.atomic():
        for (status, attempts, status_code, error), pks in groups.items():
            ReprocessItem.objects.filter(pk__in=pks).update(
                status=status,
                attempts=attempts,
                last_status_code=status_code,
                last_error=error,
                accepted_at=now if status == ItemStatus.ACCEPTED else None,
            )
        counts = _item_counts(batch_id)
        progress = {
            "accepted": counts[ItemStatus.ACCEPTED],
            "failed": counts[ItemStatus.FAILED],
            "sent": F("sent") + sent,
            "run_accepted": F("run_accepted") + accepted_now,
        }
        alive = ReprocessBatch.objects.filter(pk=batch_id, status=Status.RUNNING).update(heartbeat_at=now, **progress)
        if not alive:  # cancelled or reaped meanwhile: the counters must still say what was accepted
            ReprocessBatch.objects.filter(pk=batch_id).update(**progress)
    return bool(alive)


def _item_counts(batch_id: int) -> dict[str, int]:
    counts = {status: 0 for status in ItemStatus.values}
    for row in ReprocessItem.objects.filter(batch_id=batch_id).values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return counts


def _finish(batch_id: int, error: str) -> None:
    batch = ReprocessBatch.objects.get(pk=batch_id)
    if batch.status == Status.RUNNING:
        not_accepted = batch.total - batch.accepted
        if error:
            to, message = Status.FAILED, error
        elif not_accepted:
            to, message = Status.FAILED, f"{not_accepted} of {batch.total} items were not accepted; see the items"
        else:
            to, message = Status.SUCCEEDED, ""
        with contextlib.suppress(IllegalTransition):
            job_transition(ReprocessBatch, pk=batch_id, to=to, error=message)
    batch.refresh_from_db()
    audit_record(
        action=AuditEvent.Action.REPROCESS_FINISHED,
        actor_label="console",
        obj=batch,
        details={
            "status": batch.status,
            "error": batch.error,
            "total": batch.total,
            "accepted": batch.accepted,
            "failed": batch.failed,
            "sent": batch.sent,
            "accepted_this_run": batch.run_accepted,
            "items_per_second": round(batch_rate(batch) or 0, 1),
        },
    )


def batch_rate(batch: ReprocessBatch, now: datetime | None = None) -> float | None:
    """Items accepted per second by the current (or last) run."""
    if batch.run_started_at is None:
        return None
    end = batch.finished_at if batch.status != Status.RUNNING and batch.finished_at else (now or timezone.now())
    seconds = (end - batch.run_started_at).total_seconds()
    return batch.run_accepted / seconds if seconds > 0 else None


# --- reaping ------------------------------------------------------------------------------------------------------


def reprocess_batches_reap_stale() -> int:
    """Fail batches whose worker stopped writing; their unaccepted items can be sent again by a person."""
    return jobs_reap_stale(
        ReprocessBatch,
        running_states=ReprocessBatch.RUNNING_STATES,
        to=Status.FAILED,
        error="worker lost; send the batch again to go on",
        on_reaped=lambda batch_id: audit_record(
            action=AuditEvent.Action.REPROCESS_FINISHED,
            actor_label="reaper",
            obj=ReprocessBatch(pk=batch_id),
            details={"status": "failed", "error": "worker lost"},
        ),
    )


def reprocess_batch_build(
    *,
    environment: Environment,
    source: str,
    csv_content: str = "",
    csv_name: str = "",
    requested_by: User | None,
    trigger: str = "",
    client_ip: str | None = None,
) -> ReprocessBatch:
    """Build a DRAFT batch from one source. Raises SourceError (every problem listed) or ReprocessRefused."""
    Source = ReprocessBatch.Source
    if source == Source.QUERY:
        documents = sources.documents_from_query(environment)
        detail = "configured query" if environment.reprocess_query.strip() else "default query (PENDING or PROCESSING)"
    elif source == Source.CSV:
        documents, duplicates = sources.documents_from_csv(csv_content)
        detail = (csv_name or "pasted CSV") + (f", {duplicates} duplicate lines ignored" if duplicates else "")
    elif source == Source.FAILED_JOBS:
        documents, skipped = sources.documents_from_failed_jobs(environment)
        detail = "failed RQ jobs" + (f", {skipped} without a document ignored" if skipped else "")
    else:
        raise ReprocessRefused(_("unknown source %(source)s") % {"source": repr(source)})
    return reprocess_batch_create(
        environment=environment,
        documents=documents,
        source=source,
        source_detail=detail,
        requested_by=requested_by,
        trigger=trigger,
        client_ip=client_ip,
    )
