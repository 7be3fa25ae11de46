"""manage.py drill DATASTORE [--wait] [--inline] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_user
from backups.management.commands.backup import datastore_by_name
from dr_console.cli import JobCommand, one_line, user_may
from dr_console.jobs import BrokerUnavailable
from drills.models import DrillRun
from drills.selectors import drill_run_describe, drill_run_summary
from drills.services import DrillRefused, drill_run_execute, drill_run_request


class Command(JobCommand):
    help = (
        "Run a restore drill: restore the datastore's newest backup into a scratch database, check it, record the "
        "restore time as the measured RTO, and drop the scratch database."
    )
    job_noun = "drill"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("datastore", help="Name of the datastore, e.g. prod-db.")
        parser.add_argument(
            "--as", dest="as_user", metavar="USERNAME", help="The console user this drill is run for (audit log)."
        )
        super().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        datastore = datastore_by_name(options["datastore"])
        user = cli_user(options["as_user"], purpose=f"drill {datastore.name}", required=False)
        user_may(user, "drills.add_drillrun", "start drills")
        try:
            run = drill_run_request(
                datastore=datastore,
                trigger=f"cli:{user.get_username()}" if user else self.trigger_label(),
                triggered_by=user,
                enqueue=not options["inline"],
            )
        except (DrillRefused, BrokerUnavailable) as exc:
            raise CommandError(one_line(exc)) from None
        self.run_requested(
            options,
            run,
            execute=lambda pk: drill_run_execute(run_id=pk),
            load=lambda: DrillRun.objects.select_related("datastore").get(pk=run.pk),
            describe=drill_run_describe,
            summary=drill_run_summary,
            queued=f"drill #{run.pk} of {datastore.name} queued",
        )
