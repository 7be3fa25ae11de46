"""manage.py restore ARTIFACT_ID (--into DATASTORE | --new-database NAME) [--wait] [--inline] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from backups.management.commands.backup import datastore_by_name
from backups.management.commands.verify import artifact_by_id
from backups.models import Datastore
from backups.services import BrokerUnavailable
from dr_console.cli import JobCommand, one_line
from restores.models import RestoreRun
from restores.selectors import restore_run_summary
from restores.services import RestoreRefused, restore_run_execute, restore_run_request


def describe_restore(run: RestoreRun) -> str:
    label = f"restore #{run.pk} of backup #{run.artifact_id} into {run.target_label}"
    if run.status == RestoreRun.Status.SUCCEEDED:
        checks = ", ".join(f"{c['name']} ok" for c in run.checks)
        return f"{label} succeeded in {run.duration_seconds or 0:.1f} s ({checks})"
    if run.status in (RestoreRun.Status.FAILED, RestoreRun.Status.CANCELLED):
        return f"{label} {run.status}: {run.error}"
    return f"{label} is {run.status}"


class Command(JobCommand):
    help = "Restore a backup into a datastore or into a new database (pg_restore --clean --if-exists, then checks)."
    job_noun = "restore"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("artifact_id", type=int, help="Id of the backup to restore.")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument(
            "--into",
            metavar="DATASTORE",
            help="Restore into this datastore (its own datastore means in place). Overwrites it.",
        )
        target.add_argument("--new-database", metavar="NAME", help="Create database NAME and restore into it.")
        parser.add_argument(
            "--on",
            metavar="DATASTORE",
            help="With --new-database: create it on this datastore's server "
            "(default: the server the backup came from).",
        )
        parser.add_argument("--jobs", type=int, default=None, help="pg_restore --jobs (default RESTORE_JOBS).")
        parser.add_argument(
            "--no-owner",
            action="store_true",
            help="Do not restore ownership and privileges (target lacks the source's roles).",
        )
        super().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        artifact = artifact_by_id(options["artifact_id"])
        if options["on"] and not options["new_database"]:
            raise CommandError("--on goes with --new-database")
        target_datastore: Datastore | None
        if options["into"]:
            target_datastore = datastore_by_name(options["into"])
            kind = RestoreRun.TargetKind.DATASTORE
        else:
            target_datastore = datastore_by_name(options["on"]) if options["on"] else None
            kind = RestoreRun.TargetKind.NEW_DATABASE
        try:
            run = restore_run_request(
                artifact=artifact,
                target_kind=kind,
                target_datastore=target_datastore,
                new_database_name=options["new_database"] or "",
                jobs=options["jobs"],
                no_owner=options["no_owner"],
                trigger=self.trigger_label(),
                enqueue=not options["inline"],
            )
        except (RestoreRefused, BrokerUnavailable) as exc:
            raise CommandError(one_line(exc)) from None
        if options["inline"]:
            restore_run_execute(run_id=run.pk)
        elif options["wait"]:
            self.warn_if_no_worker(options)
            self.wait_for(
                options,
                load=lambda: RestoreRun.objects.select_related("target_datastore").get(pk=run.pk),
                done=lambda row: row.is_finished,
                describe=describe_restore,
            )
        run = RestoreRun.objects.select_related("target_datastore").get(pk=run.pk)
        waited = options["wait"] or options["inline"]
        failed = run.status in (RestoreRun.Status.FAILED, RestoreRun.Status.CANCELLED)
        self.finish(
            options,
            restore_run_summary(run),
            describe_restore(run) if waited else f"restore #{run.pk} into {run.target_label} queued",
            failure=describe_restore(run) if failed else "",
        )
