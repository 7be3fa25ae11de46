"""Sending a reprocess batch: an asyncio loop keeps `concurrency` calls in flight with httpx.AsyncClient
(reprocess/client.py decides what is retried). Outcomes are written in bulk by one writer thread every half second,
and the same write is the batch's heartbeat: when it finds the batch no longer running (cancelled, or reaped) the
loop stops starting calls, lets the calls in flight finish, and records them, so an accepted item is always known
as accepted and never sent again."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, F
from django.utils import timezone

from reprocess.client import CallOutcome, RetryPolicy, SendingStopped, reprocess_call
from reprocess.models import ReprocessBatch, ReprocessItem

Status = ReprocessBatch.Status
ItemStatus = ReprocessItem.Status
FLUSH_SECONDS = 0.5


@dataclass
class PendingItem:
    pk: int
    workspace_id: str
    document_id: str
    attempts: int


@dataclass
class _RunState:
    batch_id: int
    results: list[tuple[PendingItem, CallOutcome]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def send_items(batch_id: int, api_url: str, token: str, concurrency: int, items: list[PendingItem]) -> bool:
    """Send every item, `concurrency` at a time; returns False when the batch stopped running meanwhile
    (cancelled or reaped): the senders stopped starting calls, and the calls in flight were still recorded."""
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
    return not state.stop.is_set()


def _record_outcomes(batch_id: int, results: list[tuple[PendingItem, CallOutcome]]) -> bool:
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
