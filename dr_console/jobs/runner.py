"""The one way a job runs on a worker (cf. NetBox's JobRunner). A job type supplies its work function and its
hooks; everything around them is here and the same for every job:

1. claim the row (its queued state -> its running state; a redelivered message finds it claimed and does nothing),
2. keep its heartbeat from a side thread, and record the process group of each tool it starts,
3. run the work function,
4. end it: the work's outcome (SUCCEEDED, or the status it names); an expected failure (JobFailed and its
   subclasses, a time limit) -> FAILED with the reason; anything else -> ERRORED with one short line on the row
   and the traceback in the log; a row cancelled or reaped meanwhile (JobStopped) keeps what it says,
5. stop any tool still running, then call the type's `on_finished` (audit event, notification).

The reaper (dr_console.jobs.reaper) ends the jobs whose worker died, with the same hooks.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from dr_console.jobs import processes
from dr_console.jobs.errors import JobFailed
from dr_console.jobs.heartbeat import JobHeartbeat, JobStopped
from dr_console.jobs.models import JobModel
from dr_console.jobs.transitions import (
    IllegalTransition,
    english_name,
    job_advance,
    job_claim,
    job_fail,
    job_heartbeat,
    job_transition,
)
from dr_console.notes import Note

logger = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    """What a work function returns when it finished its work: the fields to save with the final transition and,
    when it is not the type's `succeeded` status, the status to end in (a verification that found corruption)."""

    fields: dict[str, Any] = field(default_factory=dict)
    status: str = ""
    error: str = ""
    then: Callable[[], None] | None = None  # after the outcome was recorded (queue the verification of a backup)
    on_lost: Callable[[], None] | None = None  # when it could not be (cancelled or reaped at the last moment)


@dataclass(frozen=True)
class JobType:
    """One kind of job: its model, its states, its work and its hooks. Every name is the model's own status."""

    name: str  # "backup", "restore": log lines, the CLI's `cancel KIND ID`, process tags
    model: type[JobModel]
    work: Callable[[JobContext], JobOutcome | None]
    running: str  # the state a claim moves the row to
    succeeded: str = "succeeded"
    failed: str = "failed"
    errored: str = "errored"
    cancelled: str = "cancelled"
    time_limit: Callable[[], int] = lambda: 6 * 3600
    time_limit_message: str = "time limit of {seconds} s reached; the job was stopped"
    stale_message: str = "worker lost: no heartbeat; the job did not finish"
    lost_message: str = "the broker lost the message that hands this job to a worker; nothing was done"
    # Called once the row has ended, whoever ended it (the runner, the reaper, a cancel noticed by the worker).
    on_finished: Callable[[int], None] = lambda pk: None
    # Called by the reaper for a job whose worker died, once its processes are gone: drop what it created.
    on_reaped: Callable[[JobModel], None] = lambda job: None
    claim_fields: Callable[[], dict[str, Any]] = dict
    claim_note: Callable[[], Note] = lambda: Note("started_on", {"host": socket.gethostname()})

    def label(self, pk: int) -> str:
        return f"{self.name} #{pk}"


class JobContext:
    """What a work function gets: its row, a way to stop when the row is cancelled or reaped, and the heartbeat's
    progress fields (saved with every beat)."""

    def __init__(self, job_type: JobType, job: Any, heartbeat: JobHeartbeat, progress: dict[str, Any]) -> None:
        self.type = job_type
        self.job = job
        self.heartbeat = heartbeat
        self.progress = progress
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    @property
    def pk(self) -> int:
        return int(self.job.pk)

    def check(self) -> None:
        """Raise JobStopped if the row was cancelled or reaped."""
        self.heartbeat.check()

    def advance(self, to: str, **fields: Any) -> None:
        """Move on to the next running step; JobStopped if the row was cancelled or reaped meanwhile."""
        job_advance(self.type.model, pk=self.pk, to=to, fields=fields or None)

    def update(self, **fields: Any) -> None:
        self.type.model._default_manager.filter(pk=self.pk).update(**fields)

    # Processes ------------------------------------------------------------------------------------------------

    def track(self, proc: subprocess.Popen[bytes] | None) -> None:
        """start_process() reports each tool here: record its group on the row now (the worker may die a moment
        later) and stop it when the row leaves its running state."""
        if proc is None:
            return
        with self._lock:
            self._procs.append(proc)
        self.update(process_group=proc.pid, process_host=processes.process_namespace())
        self.heartbeat.on_stop(lambda: processes.stop_process(proc))

    def live_process_group(self) -> int | None:
        with self._lock:
            live = [proc for proc in self._procs if proc.poll() is None]
        return live[-1].pid if live else None

    def stop_processes(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            processes.stop_process(proc)


def job_run(job_type: JobType, *, pk: int) -> None:
    """Run job `pk` of `job_type` on this worker (the module's text says how). Safe to call twice."""
    model = job_type.model
    label = job_type.label(pk)
    if not job_claim(
        model,
        pk=pk,
        to=job_type.running,
        label=label,
        fields={"started_at": timezone.now(), "process_host": processes.process_namespace(), **job_type.claim_fields()},
        event_note=job_type.claim_note(),
    ):
        return
    job = model._default_manager.get(pk=pk)
    progress: dict[str, Any] = {}
    context: JobContext

    def beat() -> bool:
        return job_heartbeat(model, pk=pk, **progress, process_group=context.live_process_group())

    heartbeat = JobHeartbeat(beat, interval=settings.JOB_HEARTBEAT_SECONDS)
    context = JobContext(job_type, job, heartbeat, progress)
    try:
        tag = f"{model._meta.label_lower}-{pk}"
        session = processes.session_name(tag, job.started_at)
        with heartbeat, processes.processes_tracked(context.track), processes.job_tagged(tag, session):
            outcome = _work(job_type, context)
        if outcome is not None:
            _end(job_type, pk, outcome)
    finally:
        context.stop_processes()  # nothing the job started outlives it, whatever happened above
        model._default_manager.filter(pk=pk).update(process_group=None)
        job_type.on_finished(pk)


def _work(job_type: JobType, context: JobContext) -> JobOutcome | None:
    """Run the work function; turn what it raised into the row's end. Returns the outcome to record, or None when
    the row has ended already."""
    pk, label = context.pk, job_type.label(context.pk)
    try:
        return job_type.work(context) or JobOutcome()
    except JobStopped:
        logger.info("%s stopped: its row left the running state (cancelled or reaped)", label)
    except JobFailed as exc:
        _fail(job_type, pk, job_type.failed, str(exc), exc.stderr_tail)
    except SoftTimeLimitExceeded:
        message = job_type.time_limit_message.format(seconds=job_type.time_limit())
        _fail(job_type, pk, job_type.failed, message)
    except Exception as exc:
        logger.exception("%s failed unexpectedly", label)
        _fail(job_type, pk, job_type.errored, f"internal error: {type(exc).__name__}: {_short(exc)}")
    return None


def _short(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:500]


def _fail(job_type: JobType, pk: int, to: str, error: str, stderr_tail: str = "") -> None:
    fields: dict[str, Any] = {"process_group": None}
    if stderr_tail:
        fields["stderr_tail"] = stderr_tail
    job_fail(job_type.model, pk=pk, to=to, error=error, **fields)


def _end(job_type: JobType, pk: int, outcome: JobOutcome) -> None:
    to = outcome.status or job_type.succeeded
    try:
        moved = job_transition(
            job_type.model, pk=pk, to=to, error=outcome.error, fields={**outcome.fields, "process_group": None}
        )
    except IllegalTransition as exc:
        moved = False
        logger.info("%s ended as %s meanwhile; its outcome is not recorded", job_type.label(pk), exc.old)
    if not moved:
        logger.info("%s #%s: its outcome (%s) came too late to be recorded", english_name(job_type.model), pk, to)
        if outcome.on_lost is not None:
            outcome.on_lost()
    elif outcome.then is not None:
        outcome.then()


# --- cancelling ---------------------------------------------------------------------------------------------------


def job_cancel(job_type: JobType, *, pk: int, who: str) -> bool:
    """Cancel a waiting or running job. A running job's worker notices within JOB_HEARTBEAT_SECONDS, stops its tool
    (the process group) and cleans up. False when the job had already ended (a second click is harmless)."""
    try:
        return job_transition(
            job_type.model,
            pk=pk,
            to=job_type.cancelled,
            error=f"cancelled by {who}",
            event_note=Note("cancelled_by", {"who": who}),
        )
    except IllegalTransition:
        return False
