"""manage.py verify ARTIFACT_ID [--wait] [--inline] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_user
from backups.models import BackupArtifact, BackupVerification
from backups.selectors import backup_artifact_summary
from backups.verification import VerificationRefused, backup_verification_execute, backup_verification_request
from dr_console.cli import JobCommand, one_line
from dr_console.jobs import BrokerUnavailable

Verification = BackupArtifact.Verification


def artifact_by_id(artifact_id: int) -> BackupArtifact:
    try:
        return BackupArtifact.objects.select_related("datastore__environment").get(pk=artifact_id)
    except BackupArtifact.DoesNotExist:
        raise CommandError(f"no backup with id {artifact_id}") from None


def describe_verification(artifact: BackupArtifact) -> str:
    if artifact.verification == Verification.VERIFIED:
        if artifact.format == BackupArtifact.Format.REDIS_SNAPSHOT:
            return f"backup #{artifact.pk} verified: sha256 matches and every record reads back"
        return f"backup #{artifact.pk} verified: sha256 matches and pg_restore reads every entry"
    if artifact.verification == Verification.CORRUPT:
        return f"backup #{artifact.pk} is CORRUPT: {artifact.verification_error}"
    if artifact.verification == Verification.VERIFYING:
        return f"backup #{artifact.pk} is being verified"
    reason = f": {artifact.verification_error}" if artifact.verification_error else ""
    return f"backup #{artifact.pk} is not verified{reason}"


class Command(JobCommand):
    help = "Verify a backup: re-read the stored file, compare its sha256, check every block (pg_restore) or record."
    job_noun = "verification"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("artifact_id", type=int, help="Id of the backup.")
        parser.add_argument("--as", dest="as_user", metavar="USERNAME", help="The console user asking (audit log).")
        super().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        artifact = artifact_by_id(options["artifact_id"])
        user = cli_user(options["as_user"], purpose=f"verify backup #{artifact.pk}", required=False)
        try:
            verification = backup_verification_request(
                artifact=artifact,
                requested_by=user,
                trigger=f"cli:{user.get_username()}" if user else self.trigger_label(),
                enqueue=not options["inline"],
            )
        except (VerificationRefused, BrokerUnavailable) as exc:
            raise CommandError(one_line(exc)) from None
        self.run_requested(
            options,
            verification,
            execute=lambda pk: backup_verification_execute(verification_id=pk),
            describe=lambda row: describe_verification(artifact_by_id(artifact.pk)),
            summary=lambda row: backup_artifact_summary(artifact_by_id(artifact.pk)),
            queued=f"verification of backup #{artifact.pk} queued",
            succeeded=(BackupVerification.Status.VERIFIED,),
        )
