"""manage.py import-backup DATASTORE FILE [--as USERNAME] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_user
from backups.imports import ImportRefused, backup_artifact_import
from backups.models import BackupArtifact
from backups.selectors import backup_artifact_summary
from dr_console.cli import JobCommand, one_line
from inventory.models import Datastore


class Command(JobCommand):
    help = (
        "Import a pg_dump custom-format file as a backup of a PostgreSQL datastore: checked with pg_restore --list, "
        "stored in the datastore's primary location, copied and verified like any backup."
    )
    job_noun = "import"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("datastore", help="Name of the datastore the dump is of.")
        parser.add_argument("file", help="The pg_dump --format=custom file.")
        parser.add_argument("--as", dest="as_user", metavar="USERNAME", help="The console user importing (audit log).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the backup.")

    def handle(self, *args: Any, **options: Any) -> None:
        datastore = Datastore.objects.filter(name=options["datastore"]).first()
        if datastore is None:
            raise CommandError(f"no datastore named {options['datastore']!r}")
        user = cli_user(options["as_user"], purpose=f"import a backup of {datastore.name}", required=False)
        try:
            artifact = backup_artifact_import(
                datastore=datastore,
                path=options["file"],
                imported_by=user,
                trigger=f"cli:{user.get_username()}" if user else self.trigger_label(),
            )
        except ImportRefused as exc:
            raise CommandError(one_line(exc)) from None
        ok = artifact.status == BackupArtifact.Status.SUCCEEDED
        text = (
            f"backup #{artifact.pk} of {datastore.name} imported from {artifact.origin_detail}: "
            f"{artifact.archive_entries} entries, {artifact.size_bytes} bytes stored at {artifact.location}; "
            "verification queued"
            if ok
            else f"import of {artifact.origin_detail} failed (backup #{artifact.pk}): {artifact.error}"
        )
        self.finish(options, backup_artifact_summary(artifact), text, failure="" if ok else text)
