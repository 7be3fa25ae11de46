"""manage.py approve RUN_ID --as USERNAME [--comment TEXT] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_person
from dr_console.cli import one_line
from dr_console.jobs import BrokerUnavailable
from restores.management.commands.restore import Command as RestoreCommand
from restores.management.commands.restore import describe_restore
from restores.models import RestoreRun
from restores.services import ApprovalRefused, restore_run_approve


def run_by_id(run_id: int) -> RestoreRun:
    try:
        return RestoreRun.objects.get(pk=run_id)
    except RestoreRun.DoesNotExist:
        raise CommandError(f"no restore run with id {run_id}") from None


class Command(RestoreCommand):
    help = "Approve a restore awaiting approval. The requester cannot approve their own."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", type=int, help="Id of the restore run.")
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="Who approves; proven by their credential (DR_CONSOLE_TOKEN, or the password asked in a terminal).",
        )
        parser.add_argument("--comment", default="", help="Optional comment, kept with the approval.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the run.")
        parser.add_argument("--wait", action="store_true", help="If this approval launches the run, wait for it.")
        parser.add_argument(
            "--timeout", type=float, default=None, metavar="SECONDS", help="With --wait: give up after."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run = run_by_id(options["run_id"])
        approver = cli_person(options["as_user"], purpose=f"approve restore #{run.pk}")
        try:
            restore_run_approve(run_id=run.pk, approver=approver, comment=options["comment"])
        except (ApprovalRefused, BrokerUnavailable) as exc:
            raise CommandError(one_line(exc)) from None
        options["inline"] = False
        # Launched unless it still waits for more approvals (the worker may already be running it).
        launched = RestoreRun.objects.get(pk=run.pk).status != RestoreRun.Status.AWAITING_APPROVAL
        if options["wait"] and launched:
            self.warn_if_no_worker(options)
            self.wait_for(
                options,
                load=lambda: RestoreRun.objects.select_related("target_datastore").get(pk=run.pk),
                done=lambda row: row.is_finished,
                describe=describe_restore,
            )
        self.finish_run(options, run.pk, waited=options["wait"] and launched)
