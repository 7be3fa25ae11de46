"""manage.py reprocess ENVIRONMENT (--query | --csv FILE | --failed-jobs) --as USERNAME [--wait] [--json]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_person
from dr_console.cli import JobCommand, one_line
from inventory.models import Environment
from reprocess.models import ReprocessBatch
from reprocess.services import (
    ReprocessRefused,
    batch_rate,
    reprocess_batch_build,
    reprocess_batch_execute,
    reprocess_batch_send,
)
from reprocess.sources import SourceError


def describe_batch(batch: ReprocessBatch) -> str:
    counts = f"{batch.accepted} of {batch.total} accepted, {batch.failed} failed, {batch.remaining} remaining"
    if batch.status == ReprocessBatch.Status.RUNNING:
        rate = batch_rate(batch)
        return f"batch #{batch.pk} is sending: {counts}" + (f" ({rate:.0f}/s)" if rate else "")
    if batch.error:
        return f"batch #{batch.pk} {batch.status}: {counts}; {batch.error}"
    return f"batch #{batch.pk} {batch.status}: {counts}"


def batch_summary(batch: ReprocessBatch) -> dict[str, Any]:
    return {
        "id": batch.pk,
        "environment": batch.environment.name,
        "status": batch.status,
        "source": batch.source,
        "source_detail": batch.source_detail,
        "total": batch.total,
        "accepted": batch.accepted,
        "failed": batch.failed,
        "remaining": batch.remaining,
        "requests_sent": batch.sent,
        "runs": batch.runs,
        "error": batch.error,
        "duration_seconds": batch.duration_seconds,
    }


class Command(JobCommand):
    help = (
        "Re-send documents to the application's reprocess endpoint: those its query returns, those of a CSV "
        "(workspace_id,document_id), or those of its failed RQ jobs."
    )
    job_noun = "batch"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment", help="Name of the environment, e.g. prod.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--query", action="store_true", help="The documents the environment's reprocess query returns."
        )
        source.add_argument("--csv", metavar="FILE", help="A CSV of workspace_id,document_id ('-' for stdin).")
        source.add_argument("--failed-jobs", action="store_true", help="The documents of the failed RQ jobs.")
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="The operator sending it (their credential: DR_CONSOLE_TOKEN or the password).",
        )
        parser.add_argument(
            "--draft", action="store_true", help="Only build the batch; review and send it from its page."
        )
        super().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            environment = Environment.objects.get(name=options["environment"])
        except Environment.DoesNotExist:
            known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"no environment named {options['environment']!r}; known: {known}") from None
        user = cli_person(options["as_user"], purpose=f"reprocess documents of {environment.name}")
        if not user.has_perm("reprocess.add_reprocessbatch"):
            raise CommandError(f"{user.get_username()} may not reprocess documents (needs the operator role)")
        source, csv_content, csv_name = self._source(options)
        trigger = f"cli:{user.get_username()}"
        try:
            batch = reprocess_batch_build(
                environment=environment,
                source=source,
                csv_content=csv_content,
                csv_name=csv_name,
                requested_by=user,
                trigger=trigger,
            )
            if not options["draft"]:
                reprocess_batch_send(batch=batch, requested_by=user, trigger=trigger, enqueue=not options["inline"])
        except SourceError as exc:
            if len(exc.errors) == 1:
                raise CommandError(exc.errors[0]) from None
            for error in exc.errors:
                self.stderr.write(error)
            raise CommandError(f"{len(exc.errors)} problems; no batch was built") from None
        except ReprocessRefused as exc:
            raise CommandError(one_line(exc)) from None
        if options["draft"]:
            self.finish(options, batch_summary(batch), f"batch #{batch.pk} built with {batch.total} documents")
            return
        if options["inline"]:
            reprocess_batch_execute(batch_id=batch.pk)
        elif options["wait"]:
            self.warn_if_no_worker(options)
            self.wait_for(
                options,
                load=lambda: ReprocessBatch.objects.select_related("environment").get(pk=batch.pk),
                done=lambda row: not row.is_active,
                describe=describe_batch,
            )
        batch = ReprocessBatch.objects.select_related("environment").get(pk=batch.pk)
        waited = options["wait"] or options["inline"]
        self.finish(
            options,
            batch_summary(batch),
            describe_batch(batch) if waited else f"batch #{batch.pk} queued: {batch.total} documents",
            failure=describe_batch(batch) if batch.status == ReprocessBatch.Status.FAILED else "",
        )

    def _source(self, options: dict[str, Any]) -> tuple[str, str, str]:
        if options["query"]:
            return ReprocessBatch.Source.QUERY, "", ""
        if options["failed_jobs"]:
            return ReprocessBatch.Source.FAILED_JOBS, "", ""
        path = options["csv"]
        try:
            if path == "-":
                import sys

                return ReprocessBatch.Source.CSV, sys.stdin.read(), "stdin"
            return ReprocessBatch.Source.CSV, Path(path).read_text(encoding="utf-8"), Path(path).name
        except OSError as exc:
            raise CommandError(f"{path}: cannot read the file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path}: not UTF-8 text; save it as a UTF-8 CSV") from None
