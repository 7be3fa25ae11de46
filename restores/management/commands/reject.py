"""manage.py reject RUN_ID --as USERNAME --reason TEXT [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_person
from dr_console.cli import one_line
from restores.management.commands.approve import run_by_id
from restores.management.commands.restore import Command as RestoreCommand
from restores.models import RestoreRun
from restores.selectors import restore_run_summary
from restores.services import ApprovalRefused, restore_run_reject


class Command(RestoreCommand):
    help = "Reject a restore awaiting approval. One rejection ends it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", type=int, help="Id of the restore run.")
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="Who rejects; proven by their own credential (DR_CONSOLE_TOKEN, or the password asked in a terminal).",
        )
        parser.add_argument("--reason", required=True, help="Why (shown to the requester, kept in the audit log).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the run.")

    def handle(self, *args: Any, **options: Any) -> None:
        run = run_by_id(options["run_id"])
        approver = cli_person(options["as_user"], purpose=f"reject restore #{run.pk}")
        try:
            restore_run_reject(run_id=run.pk, approver=approver, reason=options["reason"])
        except ApprovalRefused as exc:
            raise CommandError(one_line(exc)) from None
        run = RestoreRun.objects.select_related("target_datastore").get(pk=run.pk)
        self.finish(options, restore_run_summary(run), f"restore #{run.pk} rejected: {run.error}")
