"""manage.py cancel RUN_ID --as USERNAME [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dr_console.cli import one_line, user_by_name
from restores.management.commands.approve import run_by_id
from restores.management.commands.restore import Command as RestoreCommand
from restores.models import RestoreRun
from restores.selectors import restore_run_summary
from restores.services import ApprovalRefused, restore_run_cancel


class Command(RestoreCommand):
    help = "Cancel a waiting or running restore; a running pg_restore is stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", type=int, help="Id of the restore run.")
        parser.add_argument("--as", dest="as_user", required=True, metavar="USERNAME", help="Who cancels.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the run.")

    def handle(self, *args: Any, **options: Any) -> None:
        run = run_by_id(options["run_id"])
        try:
            cancelled = restore_run_cancel(run_id=run.pk, cancelled_by=user_by_name(options["as_user"]))
        except ApprovalRefused as exc:
            raise CommandError(one_line(exc)) from None
        run = RestoreRun.objects.select_related("target_datastore").get(pk=run.pk)
        failure = "" if cancelled else f"restore #{run.pk} had already ended ({run.status}); nothing to cancel"
        self.finish(options, restore_run_summary(run), f"restore #{run.pk} cancelled", failure=failure)
