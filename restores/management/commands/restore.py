"""manage.py restore ARTIFACT_ID (--into DATASTORE | --new-database NAME) --as USERNAME --reason TEXT
[--confirm TARGET_NAME] [--jobs N] [--no-owner] [--replace] [--key-pattern GLOB] [--wait] [--inline] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_person
from backups.management.commands.backup import datastore_by_name
from backups.management.commands.verify import artifact_by_id
from dr_console.cli import JobCommand, one_line
from dr_console.jobs import BrokerUnavailable
from inventory.models import Datastore
from restores.models import RestoreRun
from restores.selectors import restore_run_summary
from restores.services import RestoreRefused, restore_run_execute, restore_run_request

Status = RestoreRun.Status


def describe_restore(run: RestoreRun) -> str:
    label = f"restore #{run.pk} of backup #{run.artifact_id} into {run.target_label}"
    if run.status == Status.SUCCEEDED:
        checks = ", ".join(f"{c['name']} ok" for c in run.checks)
        return f"{label} succeeded in {run.duration_seconds or 0:.1f} s ({checks})"
    if run.status == Status.AWAITING_APPROVAL:
        approvals = run.approvals.filter(decision="approved").count()
        return (
            f"{label} awaits approval ({approvals} of {run.required_approvals}); "
            f"an approver runs `manage.py approve {run.pk}` with their own DR_CONSOLE_TOKEN"
        )
    if run.is_finished:
        return f"{label} {run.get_status_display().lower()}: {run.error}"
    return f"{label} is {run.get_status_display().lower()}"


class Command(JobCommand):
    help = (
        "Request a restore of a backup into a datastore or a new database. Into a protected environment it waits "
        "for approval; then pg_restore --clean --if-exists (or, for a Redis backup, RESTORE of every key) and the "
        "post-restore checks run on a worker."
    )
    job_noun = "restore"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("artifact_id", type=int, help="Id of the backup to restore.")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument(
            "--into", metavar="DATASTORE", help="Restore into this datastore (its own means in place). Overwrites it."
        )
        target.add_argument("--new-database", metavar="NAME", help="Create database NAME and restore into it.")
        parser.add_argument(
            "--on",
            metavar="DATASTORE",
            help="With --new-database: create it on this datastore's server (default: the backup's own server).",
        )
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="Who requests it; proven by their credential (DR_CONSOLE_TOKEN, or the password asked in a terminal).",
        )
        parser.add_argument("--reason", required=True, help="Why the restore is needed (kept in the audit log).")
        parser.add_argument(
            "--confirm", default="", metavar="TARGET_NAME", help="Typed confirmation, required for a protected target."
        )
        parser.add_argument(
            "--jobs", type=int, default=None, help="PostgreSQL: pg_restore --jobs (default RESTORE_JOBS)."
        )
        parser.add_argument(
            "--no-owner",
            action="store_true",
            help="PostgreSQL: skip ownership and privileges (the target lacks the roles).",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Redis: overwrite keys that exist in the target (without it, any existing key stops the restore "
            "before anything is written).",
        )
        parser.add_argument(
            "--key-pattern",
            default="",
            metavar="GLOB",
            help="Redis: restore only the keys matching this glob (as SCAN MATCH: * ? [abc] [^a] \\ to escape).",
        )
        super().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        artifact = artifact_by_id(options["artifact_id"])
        requester = cli_person(options["as_user"], purpose=f"restore backup #{artifact.pk}")
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
                requested_by=requester,
                reason=options["reason"],
                confirm=options["confirm"],
                jobs=options["jobs"],
                no_owner=options["no_owner"],
                replace=options["replace"],
                key_pattern=options["key_pattern"],
                trigger=f"cli:{requester.get_username()}",
                enqueue=not options["inline"],
            )
        except (RestoreRefused, BrokerUnavailable) as exc:
            raise CommandError(one_line(exc)) from None
        if options["inline"] and run.status == Status.QUEUED:
            restore_run_execute(run_id=run.pk)
        elif options["wait"] and not options["inline"]:
            self.warn_if_no_worker(options)
            self.wait_for(
                options,
                load=lambda: RestoreRun.objects.select_related("target_datastore").get(pk=run.pk),
                done=lambda row: row.is_finished,
                describe=describe_restore,
            )
        self.finish_run(options, run.pk, waited=options["wait"] or options["inline"])

    def finish_run(self, options: dict[str, Any], run_id: int, waited: bool) -> None:
        run = RestoreRun.objects.select_related("target_datastore").get(pk=run_id)
        failed = run.status in (Status.FAILED, Status.CANCELLED, Status.REJECTED, Status.EXPIRED)
        text = describe_restore(run)
        if run.status == Status.QUEUED and not waited:
            text = f"restore #{run.pk} into {run.target_label} queued"
        self.finish(options, restore_run_summary(run), text, failure=text if failed else "")
