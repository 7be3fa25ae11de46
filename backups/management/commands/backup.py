"""manage.py backup DATASTORE [--wait] [--inline] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import filesizeformat

from accounts.cli import cli_user
from backups.copies import artifact_copies_run_inline
from backups.models import BackupArtifact
from backups.selectors import backup_artifact_summary
from backups.services import BackupRefused, backup_artifact_execute, backup_artifact_request
from backups.verification import backup_verification_execute, backup_verification_request
from dr_console.cli import JobCommand, one_line, user_may
from dr_console.jobs import BrokerUnavailable
from inventory.models import Datastore


def datastore_by_name(name: str) -> Datastore:
    try:
        return Datastore.objects.select_related("environment").get(name=name)
    except Datastore.DoesNotExist:
        known = ", ".join(Datastore.objects.values_list("name", flat=True)) or "none yet (see `manage.py loadconfig`)"
        raise CommandError(f"no datastore named {name!r}; known datastores: {known}") from None


def describe_backup(artifact: BackupArtifact) -> str:
    if artifact.status == BackupArtifact.Status.SUCCEEDED:
        if artifact.format == BackupArtifact.Format.REDIS_SNAPSHOT:
            contents = f"{artifact.archive_entries} keys"
        else:
            contents = f"{len(artifact.row_counts)} tables"
        return (
            f"backup #{artifact.pk} of {artifact.datastore.name} succeeded: "
            f"{filesizeformat(artifact.size_bytes or 0)}, "
            f"{contents}, {artifact.duration_seconds or 0:.1f} s, "
            f"sha256 {artifact.sha256}, stored as {artifact.storage_key} (verification: {artifact.verification})"
        )
    if artifact.status in (
        BackupArtifact.Status.FAILED,
        BackupArtifact.Status.ERRORED,
        BackupArtifact.Status.CANCELLED,
    ):
        return f"backup #{artifact.pk} of {artifact.datastore.name} {artifact.status}: {artifact.error}"
    done = f", {filesizeformat(artifact.bytes_done)} written" if artifact.bytes_done else ""
    return f"backup #{artifact.pk} of {artifact.datastore.name} is {artifact.status}{done}"


class Command(JobCommand):
    help = (
        "Back up a datastore (pg_dump, or a Redis logical snapshot, streamed and checksummed into the artifact "
        "storage)."
    )
    job_noun = "backup"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("datastore", help="Name of the datastore, e.g. prod-db.")
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="The console user it is taken for; needs their credential (DR_CONSOLE_TOKEN or the password).",
        )
        super().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        datastore = datastore_by_name(options["datastore"])
        user = cli_user(options["as_user"], purpose=f"back up {datastore.name}", required=False)
        user_may(user, "backups.add_backupartifact", "start backups")
        try:
            artifact = backup_artifact_request(
                datastore=datastore,
                trigger=f"cli:{user.get_username()}" if user else self.trigger_label(),
                triggered_by=user,
                enqueue=not options["inline"],
            )
        except (BackupRefused, BrokerUnavailable) as exc:
            raise CommandError(one_line(exc)) from None
        self.run_requested(
            options,
            artifact,
            execute=_back_up_and_verify_here,
            load=lambda: BackupArtifact.objects.select_related("datastore__environment").get(pk=artifact.pk),
            describe=describe_backup,
            summary=backup_artifact_summary,
            queued=f"backup #{artifact.pk} of {datastore.name} queued",
        )


def _back_up_and_verify_here(artifact_id: int) -> None:
    """--inline: the backup, its copies and its verification, in this process."""
    backup_artifact_execute(artifact_id=artifact_id, verify_after=False)
    artifact = BackupArtifact.objects.get(pk=artifact_id)
    if artifact.status == BackupArtifact.Status.SUCCEEDED:
        artifact_copies_run_inline(artifact_id=artifact_id, trigger=artifact.trigger)
        verification = backup_verification_request(artifact=artifact, trigger=artifact.trigger, enqueue=False)
        backup_verification_execute(verification_id=verification.pk)
