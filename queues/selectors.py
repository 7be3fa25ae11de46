"""Reads of an environment's RQ queues, through the rq library (never hand-built keys), in bounded pieces:
counts come from the queue and registry sizes, job details one page at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
from django.utils.translation import pgettext_lazy
from rq import Queue, Worker
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.registry import (
    BaseRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.worker import WorkerStatus

from dr_console.text import untrusted_text
from inventory.models import Environment
from queues.decoding import DecodeRefused
from queues.rqclient import InspectedJob, InspectionSerializer, environment_redis, result_payload_bounded

JOB_PAGE_SIZE = 25
ARGS_SHOWN_CHARS = 300
EXCEPTION_SHOWN_CHARS = 4000


class JobList(StrEnum):
    """Where a job can be: waiting in the queue itself, or in one of its registries."""

    QUEUED = "queued"
    STARTED = "started"
    FAILED = "failed"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"

    @property
    def label(self) -> str:
        return str(JOB_LIST_LABELS[self])


# A context of their own: Spanish words for jobs ("trabajos") take another gender than backups and restores.
JOB_LIST_LABELS = {
    JobList.QUEUED: pgettext_lazy("RQ jobs", "Queued"),
    JobList.STARTED: pgettext_lazy("RQ jobs", "Started"),
    JobList.FAILED: pgettext_lazy("RQ jobs", "Failed"),
    JobList.DEFERRED: pgettext_lazy("RQ jobs", "Deferred"),
    JobList.SCHEDULED: pgettext_lazy("RQ jobs", "Scheduled"),
}
WORKER_STATE_LABELS = {
    WorkerStatus.STARTED.value: pgettext_lazy("RQ worker", "Started"),
    WorkerStatus.SUSPENDED.value: pgettext_lazy("RQ worker", "Suspended"),
    WorkerStatus.BUSY.value: pgettext_lazy("RQ worker", "Busy"),
    WorkerStatus.IDLE.value: pgettext_lazy("RQ worker", "Idle"),
}
REGISTRIES: dict[JobList, type[BaseRegistry]] = {
    JobList.STARTED: StartedJobRegistry,
    JobList.FAILED: FailedJobRegistry,
    JobList.DEFERRED: DeferredJobRegistry,
    JobList.SCHEDULED: ScheduledJobRegistry,
}


@dataclass
class QueueSummary:
    name: str
    counts: dict[JobList, int]  # every JobList, QUEUED being the queue's length

    @property
    def length(self) -> int:
        return self.counts[JobList.QUEUED]


@dataclass
class WorkerSummary:
    name: str
    state: str
    queues: list[str]
    current_job_id: str | None
    last_heartbeat: datetime | None
    birth: datetime | None
    successful_jobs: int
    failed_jobs: int

    @property
    def state_label(self) -> str:
        """rq's state word, in the page's language (a state this rq version does not name is shown as is)."""
        return str(WORKER_STATE_LABELS.get(self.state, self.state))


@dataclass
class QueueOverview:
    queues: list[QueueSummary]
    workers: list[WorkerSummary]


@dataclass
class JobDetail:
    id: str
    func_name: str | None  # None when the job's data could not be decoded (see queues.rqclient)
    args: str  # shortened repr of the arguments
    description: str
    status: str
    enqueued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    worker_name: str | None
    scheduled_for: datetime | None = None
    exception: str = ""
    undecodable: bool = False
    undecodable_reason: str = ""  # why, when the console refused to decode it (queues.decoding)
    missing: bool = False  # listed in the registry but its data expired or was deleted

    @property
    def exception_headline(self) -> str:
        return exception_headline(self.exception)


def exception_headline(traceback: str) -> str:
    """The line of a traceback that names the error: the first unindented line after the last frame. Lines after
    it are detail (an SQL error's `LINE 1: ...` and its caret), so the last line is not always the one to show."""
    lines = traceback.strip().splitlines()
    frames = [number for number, line in enumerate(lines) if line.startswith('  File "')]
    for line in lines[frames[-1] + 1 :] if frames else lines:
        if line.strip() and not line[0].isspace():
            return line
    return lines[-1] if lines else ""


@dataclass
class JobPage:
    queue: str
    job_list: JobList
    jobs: list[JobDetail]
    total: int
    page: int
    size: int = JOB_PAGE_SIZE
    pages: int = field(init=False)

    def __post_init__(self) -> None:
        self.pages = max(1, -(-self.total // self.size))

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.size + 1 if self.jobs else 0

    @property
    def last_index(self) -> int:
        return (self.page - 1) * self.size + len(self.jobs)

    @property
    def previous_page(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next_page(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None


def _registry(connection: redis.Redis, queue_name: str, job_list: JobList) -> BaseRegistry:
    return REGISTRIES[job_list](queue_name, connection=connection, serializer=InspectionSerializer)


def _queue(connection: redis.Redis, queue_name: str) -> Queue:
    return Queue(queue_name, connection=connection, serializer=InspectionSerializer)


def queue_names(connection: redis.Redis) -> list[str]:
    """The queues rq knows in this Redis (its set of queues), by name."""
    return sorted(queue.name for queue in Queue.all(connection=connection))


def queue_overview(connection: redis.Redis) -> QueueOverview:
    """Every queue's length and registry sizes, and every worker. Sizes are read without rq's registry
    clean-up, which would move or delete jobs: looking changes nothing."""
    queues = []
    for name in queue_names(connection):
        counts = {JobList.QUEUED: _queue(connection, name).count}
        for job_list in REGISTRIES:
            counts[job_list] = _registry(connection, name, job_list).get_job_count(cleanup=False)
        queues.append(QueueSummary(name=name, counts=counts))
    # What the application's Redis holds is shown as escaped text (dr_console.text); queue names stay as stored
    # because the pages' links name them (templates escape them with the `untrusted` filter).
    workers = [
        WorkerSummary(
            name=untrusted_text(worker.name),
            state=untrusted_text(str(worker.get_state())),
            queues=[untrusted_text(name) for name in worker.queue_names()],
            current_job_id=_shown_or_none(worker.get_current_job_id()),
            last_heartbeat=worker.last_heartbeat,
            birth=worker.birth_date,
            successful_jobs=worker.successful_job_count,
            failed_jobs=worker.failed_job_count,
        )
        for worker in Worker.all(connection=connection)
    ]
    workers.sort(key=lambda worker: worker.name)
    return QueueOverview(queues=queues, workers=workers)


def queue_job_page(connection: redis.Redis, *, queue_name: str, job_list: JobList, page: int) -> JobPage:
    """One page of the jobs in a queue or registry: the newest first in registries, the next to run first in
    the queue. Only this page's jobs are read, in one pipelined round trip (plus one for failed jobs' errors)."""
    start = (page - 1) * JOB_PAGE_SIZE
    end = start + JOB_PAGE_SIZE - 1
    scheduled_for: dict[str, datetime] = {}
    if job_list == JobList.QUEUED:
        queue = _queue(connection, queue_name)
        total = queue.count
        job_ids = queue.get_job_ids(offset=start, length=JOB_PAGE_SIZE)
    else:
        registry = _registry(connection, queue_name, job_list)
        total = registry.get_job_count(cleanup=False)
        if job_list == JobList.SCHEDULED:
            # The registry's score is the time the job is due: read with the ids, soonest first.
            entries: list[tuple[bytes, float]] = connection.zrange(  # type: ignore[assignment]
                registry.key, start, end, withscores=True
            )
            job_ids = [registry.parse_job_id(entry.decode()) for entry, _score in entries]
            scheduled_for = {
                registry.parse_job_id(entry.decode()): datetime.fromtimestamp(score, UTC) for entry, score in entries
            }
        else:
            job_ids = registry.get_job_ids(start, end, desc=True, cleanup=False)
    jobs = InspectedJob.fetch_many(job_ids, connection=connection, serializer=InspectionSerializer)
    exceptions = _latest_exceptions(connection, job_ids) if job_list == JobList.FAILED else {}
    details = []
    for job_id, job in zip(job_ids, jobs, strict=True):
        detail = _job_detail(job_id, job)
        detail.scheduled_for = scheduled_for.get(job_id)
        # rq keeps a failed job's error in its results; a job put in the registry another way keeps it on itself.
        detail.exception = exceptions.get(job_id) or _shorten_exception(getattr(job, "_exc_info", None) or "")
        details.append(detail)
    return JobPage(queue=queue_name, job_list=job_list, jobs=details, total=total, page=page)


def _job_detail(job_id: str, job: Job | None) -> JobDetail:
    if job is None:
        return JobDetail(
            id=job_id,
            func_name=None,
            args="",
            description="",
            status="",
            enqueued_at=None,
            started_at=None,
            ended_at=None,
            worker_name=None,
            missing=True,
        )
    reason = ""
    try:
        func_name, args, undecodable = _shown_or_none(job.func_name), _short_args(job.args, job.kwargs), False
    except DeserializationError as exc:
        func_name, args, undecodable = None, "", True
        reason = str(exc.__cause__) if isinstance(exc.__cause__, DecodeRefused) else ""
    return JobDetail(
        id=job_id,  # rq accepts only letters, digits, _ and - in a job id
        func_name=func_name,
        args=args,
        description=untrusted_text(job.description or ""),
        status=untrusted_text(str(job.get_status(refresh=False) or "")),
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        worker_name=_shown_or_none(job.worker_name),
        undecodable=undecodable,
        undecodable_reason=reason,
    )


def _shown_or_none(value: str | None) -> str | None:
    return None if value is None else untrusted_text(value)


def _short_args(args: Any, kwargs: Any) -> str:
    parts = [repr(value) for value in args or ()]
    parts += [f"{key}={value!r}" for key, value in (kwargs or {}).items()]
    text = untrusted_text(", ".join(parts))  # repr escapes a str's control characters, not every object's
    return text if len(text) <= ARGS_SHOWN_CHARS else text[: ARGS_SHOWN_CHARS - 1] + "…"


def _latest_exceptions(connection: redis.Redis, job_ids: list[str]) -> dict[str, str]:
    """The error of each job's latest result (rq keeps a job's results in a stream), in one pipeline."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
        replies = pipe.execute()
    exceptions = {}
    for job_id, reply in zip(job_ids, replies, strict=True):
        if not reply:
            continue
        result_id, payload = reply[0]
        try:
            bounded = result_payload_bounded(payload)
            result = Result.restore(job_id, result_id.decode(), bounded, connection, serializer=InspectionSerializer)
        except Exception:  # a result written by another rq version, or a return value we will not decode
            continue
        if result.exc_string:
            exceptions[job_id] = _shorten_exception(result.exc_string)
    return exceptions


def _shorten_exception(text: str) -> str:
    """The end of a traceback is what says what went wrong. Its lines are kept, its control characters escaped."""
    text = untrusted_text(text.strip(), multiline=True)
    return text if len(text) <= EXCEPTION_SHOWN_CHARS else "…" + text[-EXCEPTION_SHOWN_CHARS:]


# --- for building reprocess batches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedJob:
    """A job in a failed registry, decoded for a reprocess batch."""

    queue: str
    job_id: str
    func_name: str | None  # None: its data could not be decoded (or expired); args and kwargs are then empty
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def document_key(self) -> tuple[str, str] | None:
        """(workspace_id, document_id) as text when the job's arguments carry them, the sample application's
        convention: `f(workspace_id, document_id)` or keyword arguments of those names; else None."""
        workspace = self.kwargs.get("workspace_id", self.args[0] if len(self.args) >= 1 else None)
        document = self.kwargs.get("document_id", self.args[1] if len(self.args) >= 2 else None)
        if workspace is None or document is None:
            return None
        return str(workspace), str(document)


def environment_failed_jobs(*, environment: Environment, chunk_size: int = 500) -> Iterator[FailedJob]:
    """Every failed job of every queue of the environment's RQ Redis, oldest failure first, read `chunk_size` at a
    time (memory stays flat with 100,000 failed jobs). A job that fails or is requeued while this reads can shift
    the registry by a few places, so a job may come twice or be missed: callers key what they build on the
    job's document. Raises QueueUnavailable when the Redis is not configured or not reachable."""
    connection = environment_redis(environment)
    try:
        for name in queue_names(connection):
            registry = _registry(connection, name, JobList.FAILED)
            start = 0
            while True:
                job_ids = registry.get_job_ids(start, start + chunk_size - 1, cleanup=False)
                if not job_ids:
                    break
                start += len(job_ids)
                jobs = InspectedJob.fetch_many(job_ids, connection=connection, serializer=InspectionSerializer)
                for job_id, job in zip(job_ids, jobs, strict=True):
                    yield _failed_job(name, job_id, job)
    finally:
        connection.close()


def _failed_job(queue_name: str, job_id: str, job: Job | None) -> FailedJob:
    if job is not None:
        try:
            return FailedJob(queue_name, job_id, job.func_name, tuple(job.args or ()), dict(job.kwargs or {}))
        except DeserializationError:
            pass
    return FailedJob(queue_name, job_id, None, (), {})
