"""Reprocess batches: build one (from the configured query, a CSV, or the failed RQ jobs), show it, send it.

Sending is a job (dr_console.jobs) on a Celery worker; the asyncio sender itself is reprocess/sender.py.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_job_finished, audit_record
from dr_console.jobs import (
    IllegalTransition,
    JobContext,
    JobFailed,
    JobStopped,
    JobType,
    job_enqueue,
    job_run,
    job_transition,
    jobs_reap,
)
from dr_console.secrets import TOKEN_SUFFIX, secret_env
from inventory.models import Datastore, Environment
from reprocess import sources
from reprocess.models import ReprocessBatch, ReprocessItem
from reprocess.sender import PendingItem, send_items

logger = logging.getLogger(__name__)
Status = ReprocessBatch.Status
ItemStatus = ReprocessItem.Status
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
    from reprocess.tasks import reprocess_batch_execute_task

    job_enqueue(reprocess_batch_execute_task, ReprocessBatch, pk=batch_id, batch_id=batch_id)


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


def reprocess_batch_execute(*, batch_id: int) -> None:
    """Send the batch's items that are not accepted yet (the job framework's runner). Safe to call twice: only the
    caller that wins QUEUED -> RUNNING sends anything."""
    job_run(REPROCESS_JOB, pk=batch_id)


def _claim_fields() -> dict[str, object]:
    now = timezone.now()
    # A batch may be sent several times: each run starts its own clock and counters.
    return {"finished_at": None, "duration": None, "run_started_at": now, "run_accepted": 0, "runs": F("runs") + 1}


def _send(ctx: JobContext) -> None:
    batch = ReprocessBatch.objects.select_related("environment").get(pk=ctx.pk)
    environment = batch.environment
    audit_record(
        action=AuditEvent.Action.REPROCESS_STARTED,
        actor_label="console",
        obj=batch,
        details={"remaining": batch.total - batch.accepted, "concurrency": environment.reprocess_concurrency},
    )
    try:
        token = _api_token(environment)
    except ReprocessRefused as exc:
        raise JobFailed(str(exc)) from None
    items = [
        PendingItem(pk, ws, doc, attempts)
        for pk, ws, doc, attempts in batch.items.exclude(status=ItemStatus.ACCEPTED)
        .order_by("pk")
        .values_list("pk", "workspace_id", "document_id", "attempts")
    ]
    still_running = asyncio.run(
        send_items(batch.pk, environment.api_url, token, environment.reprocess_concurrency, items)
    )
    ctx.check()
    if not still_running:
        raise JobStopped
    batch.refresh_from_db()
    not_accepted = batch.total - batch.accepted
    if not_accepted:
        raise JobFailed(f"{not_accepted} of {batch.total} items were not accepted; see the items")


def _api_token(environment: Environment) -> str:
    if not environment.api_token_env:
        raise ReprocessRefused(
            f"environment {environment.name} has no api_token_env: name the environment variable holding the "
            "application's API token in the admin or with loadconfig"
        )
    name = environment.api_token_env
    # Checked again here, not only when configured: a row saved before the rule, or edited in the database, must
    # still not send a datastore's URL (or any undeclared secret) as a bearer token to whatever api_url says.
    if (
        not name.endswith(TOKEN_SUFFIX)
        or Datastore.objects.filter(Q(url_env=name) | Q(drill_server_url_env=name)).exists()
    ):
        raise ReprocessRefused(
            f"{name} is not declared as a token variable (its name must end in {TOKEN_SUFFIX} and name no "
            "datastore's URL); the console will not send it to the application. Put the API token in a variable "
            f"such as {environment.name.upper().replace('-', '_')}_API_TOKEN and set api_token_env to it"
        )
    token = secret_env(name)
    if not token:
        raise ReprocessRefused(
            f"environment variable {name} is not set in the worker's environment; set it to "
            "the application's API token and restart the worker"
        )
    if "://" in token:
        raise ReprocessRefused(
            f"environment variable {name} holds a URL, not an API token; the console did not send it"
        )
    return token


def _finished(batch_id: int) -> None:
    """The audit event of an ended run of the batch, with its figures."""
    batch = ReprocessBatch.objects.get(pk=batch_id)
    audit_job_finished(
        action=AuditEvent.Action.REPROCESS_FINISHED,
        job=batch,
        total=batch.total,
        accepted=batch.accepted,
        failed=batch.failed,
        sent=batch.sent,
        accepted_this_run=batch.run_accepted,
        items_per_second=round(batch_rate(batch) or 0, 1),
    )


def batch_rate(batch: ReprocessBatch, now: datetime | None = None) -> float | None:
    """Items accepted per second by the current (or last) run."""
    if batch.run_started_at is None:
        return None
    end = batch.finished_at if batch.status != Status.RUNNING and batch.finished_at else (now or timezone.now())
    seconds = (end - batch.run_started_at).total_seconds()
    return batch.run_accepted / seconds if seconds > 0 else None


# --- reaping ------------------------------------------------------------------------------------------------------


REPROCESS_JOB = JobType(
    name="reprocess",
    model=ReprocessBatch,
    work=_send,
    running=Status.RUNNING,
    time_limit=lambda: settings.REPROCESS_TIME_LIMIT,
    time_limit_message="time limit of {seconds} s reached; send the batch again to go on",
    stale_message="worker lost; send the batch again to go on",
    lost_message="the broker lost the message that hands this batch to a worker; nothing was sent. Send it again",
    on_finished=_finished,
    claim_fields=_claim_fields,
)


def reprocess_batches_reap_stale() -> int:
    """End batches whose worker stopped writing, or whose message was lost; their unaccepted items can be sent
    again by a person."""
    return jobs_reap(REPROCESS_JOB)


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
        documents = sources.documents_from_query(environment, requested_by=requested_by)
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
