"""`manage.py checkworker`: exit 0 when a Celery worker answers a ping, 1 otherwise (container health checks).

The same check /readyz makes. In the worker's own container, `--destination celery@$HOSTNAME` asks that
worker alone, so one healthy worker elsewhere does not hide a stuck one here.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dr_console.cli import OneLineCommand
from dr_console.health import check_broker, check_worker


class Command(OneLineCommand):
    help = "Exit 0 if a Celery worker (or the named one) answers a ping within the timeout, else 1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--destination",
            default="",
            metavar="NAME",
            help="Ping this worker only, e.g. celery@$HOSTNAME (default: any worker).",
        )
        parser.add_argument(
            "--timeout", type=float, default=None, metavar="SECONDS", help="Default: READYZ_WORKER_TIMEOUT."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        broker = check_broker()
        if not broker.ok:
            raise CommandError(broker.error)
        result = check_worker(timeout=options["timeout"], destination=options["destination"])
        if not result.ok:
            raise CommandError(result.error)
        if options["verbosity"] >= 1:
            self.stdout.write(f"ok: {result.detail}")
