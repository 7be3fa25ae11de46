"""The job framework: one model base, one state machine per job model, one runner, one enqueue, one reaper.

Every job of the console (backup, verification, restore, drill, reprocess batch) is a row of a JobModel subclass
moved only by `job_transition`, run on a worker only by `job_run`, handed to the broker only by `job_enqueue`,
ended after a lost worker or message only by `jobs_reap`. A job app supplies its model, a `JobType` (its work
function and hooks) and its thin Celery tasks. docs/architecture.md draws the life cycle.
"""

from __future__ import annotations

from dr_console.jobs.broker import BrokerUnavailable, broker_has_message, broker_label, job_enqueue
from dr_console.jobs.errors import JobFailed
from dr_console.jobs.heartbeat import JobHeartbeat, JobStopped
from dr_console.jobs.models import JobEvent, JobModel, newest_job_value
from dr_console.jobs.processes import describe_exit, start_process, stop_process
from dr_console.jobs.reaper import job_processes_gone, job_session_name, jobs_reap, stale_cutoff
from dr_console.jobs.runner import JobContext, JobOutcome, JobType, job_cancel, job_run
from dr_console.jobs.transitions import (
    IllegalTransition,
    active_job_labels,
    english_name,
    job_advance,
    job_claim,
    job_fail,
    job_heartbeat,
    job_transition,
)

__all__ = [
    "BrokerUnavailable",
    "active_job_labels",
    "newest_job_value",
    "IllegalTransition",
    "JobContext",
    "JobEvent",
    "JobFailed",
    "JobHeartbeat",
    "JobModel",
    "JobOutcome",
    "JobStopped",
    "JobType",
    "broker_has_message",
    "broker_label",
    "describe_exit",
    "english_name",
    "job_advance",
    "job_cancel",
    "job_claim",
    "job_enqueue",
    "job_fail",
    "job_heartbeat",
    "job_processes_gone",
    "job_run",
    "job_session_name",
    "job_transition",
    "jobs_reap",
    "stale_cutoff",
    "start_process",
    "stop_process",
]
