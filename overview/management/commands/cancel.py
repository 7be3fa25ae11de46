"""manage.py cancel [KIND] ID --as USERNAME [--json]

One command cancels every kind of job: backup, verification, restore, drill, reprocess (a batch). `cancel ID`
alone is the older form and cancels a restore. It lives in the top layer because it speaks to every job app; each
app's own cancel service checks the rules (who may cancel, whether the job can still be cancelled) and records
the audit event. The job's worker notices within JOB_HEARTBEAT_SECONDS and stops its tool's process group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_person
from backups.models import BackupArtifact, BackupVerification
from backups.selectors import backup_artifact_summary
from backups.services import backup_artifact_cancel
from backups.verification import backup_verification_cancel
from dr_console.cli import JobCommand, one_line, user_may
from drills.models import DrillRun
from drills.selectors import drill_run_summary
from drills.services import drill_run_cancel
from reprocess.management.commands.reprocess import batch_summary
from reprocess.models import ReprocessBatch
from reprocess.services import ReprocessRefused, reprocess_batch_cancel
from restores.models import RestoreRun
from restores.selectors import restore_run_summary
from restores.services import ApprovalRefused, restore_run_cancel


@dataclass(frozen=True)
class Cancellable:
    model: Any
    perm: str  # besides what the app's cancel service checks itself
    cancel: Callable[[Any, Any], bool]
    summary: Callable[[Any], dict[str, Any]]


def _reprocess_cancel(batch: ReprocessBatch, user: Any) -> bool:
    try:
        reprocess_batch_cancel(batch=batch, requested_by=user, trigger=f"cli:{user.get_username()}")
    except ReprocessRefused:
        batch.refresh_from_db()
        if batch.is_finished or batch.status == ReprocessBatch.Status.DRAFT:
            return False
        raise
    return True


def _verification_summary(verification: BackupVerification) -> dict[str, Any]:
    return {
        **backup_artifact_summary(verification.artifact),
        "verification_job": {"id": verification.pk, "status": verification.status, "error": verification.error},
    }


KINDS: dict[str, Cancellable] = {
    "backup": Cancellable(
        BackupArtifact,
        "backups.add_backupartifact",
        lambda job, user: backup_artifact_cancel(artifact_id=job.pk, cancelled_by=user),
        backup_artifact_summary,
    ),
    "verification": Cancellable(
        BackupVerification,
        "backups.add_backupartifact",
        lambda job, user: backup_verification_cancel(verification_id=job.pk, cancelled_by=user),
        _verification_summary,
    ),
    "restore": Cancellable(
        RestoreRun,
        "restores.add_restorerun",
        lambda job, user: restore_run_cancel(run_id=job.pk, cancelled_by=user),
        restore_run_summary,
    ),
    "drill": Cancellable(
        DrillRun,
        "drills.add_drillrun",
        lambda job, user: drill_run_cancel(run_id=job.pk, cancelled_by=user),
        drill_run_summary,
    ),
    "reprocess": Cancellable(ReprocessBatch, "reprocess.add_reprocessbatch", _reprocess_cancel, batch_summary),
}


class Command(JobCommand):
    help = "Cancel a waiting or running job (backup, verification, restore, drill, reprocess); its tool is stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "job", nargs="+", metavar="[KIND] ID", help=f"KIND is one of {', '.join(KINDS)} (default: restore)."
        )
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="Who cancels (their credential: DR_CONSOLE_TOKEN or the password).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the job.")

    def handle(self, *args: Any, **options: Any) -> None:
        words = options["job"]
        kind, number = ("restore", words[0]) if len(words) == 1 else (words[0], words[1])
        if len(words) > 2 or kind not in KINDS or not number.isdigit():
            raise CommandError(f"give a job as [KIND] ID with KIND one of {', '.join(KINDS)}, e.g. `cancel backup 12`")
        spec = KINDS[kind]
        job = spec.model._default_manager.filter(pk=int(number)).first()
        if job is None:
            raise CommandError(f"no {kind} with id {number}")
        user = cli_person(options["as_user"], purpose=f"cancel {kind} #{number}")
        user_may(user, spec.perm, f"cancel a {kind}")
        try:
            cancelled = spec.cancel(job, user)
        except (ApprovalRefused, ReprocessRefused) as exc:
            raise CommandError(one_line(exc)) from None
        job.refresh_from_db()
        failure = "" if cancelled else f"{kind} #{job.pk} had already ended ({job.status}); nothing to cancel"
        self.finish(options, spec.summary(job), f"{kind} #{job.pk} cancelled", failure=failure)
