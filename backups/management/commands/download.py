"""manage.py download BACKUP_ID --output FILE [--location NAME] [--as USERNAME] [--json]
manage.py download BACKUP_ID --request --reason TEXT [--location NAME] [--as USERNAME] [--json]

The file as stored (an encrypted one stays encrypted), checked against its record while it is written to
FILE.partial, renamed to FILE only once whole; an existing FILE is never overwritten. A backup of protected data
needs an approved request first (`--request`, then `manage.py approve-download REQUEST_ID` by someone else).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_person
from backups.downloads import DownloadRefused, backup_download_start, download_request_create
from backups.management.commands.verify import artifact_by_id
from backups.sources import SourceUnusable, stored_chunks_checked
from dr_console.cli import JobCommand, one_line


class Command(JobCommand):
    help = "Download a backup's file as stored, or ask for the approval a backup of protected data needs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("artifact_id", type=int, help="Id of the backup.")
        parser.add_argument("--output", metavar="FILE", help="Where to write the file (never overwritten).")
        parser.add_argument("--location", default="", metavar="NAME", help="Read from this location first.")
        parser.add_argument("--request", action="store_true", help="Ask for a download of protected data.")
        parser.add_argument("--reason", default="", help="With --request: why the file must leave the console.")
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="Who downloads; proven by their credential (DR_CONSOLE_TOKEN, or the password asked in a terminal).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the result.")

    def handle(self, *args: Any, **options: Any) -> None:
        artifact = artifact_by_id(options["artifact_id"])
        if options["request"]:
            self._request(artifact, options)
            return
        output = options["output"]
        if not output:
            raise CommandError("--output FILE is required (or --request to ask for a download)")
        if os.path.lexists(output):
            raise CommandError(f"{output} exists already; it is never overwritten: choose another name")
        user = cli_person(options["as_user"], purpose=f"download backup #{artifact.pk}")
        partial = f"{output}.partial"
        try:
            handle = open(partial, "xb")  # noqa: SIM115 - closed below, or the partial file is removed
        except OSError as exc:
            raise CommandError(f"cannot write {partial}: {exc.strerror}") from None
        try:
            with handle:
                try:
                    plan = backup_download_start(
                        artifact=artifact, user=user, location=options["location"], presign=False
                    )
                except DownloadRefused as exc:
                    raise CommandError(one_line(exc)) from None
                try:
                    for chunk in stored_chunks_checked(plan.source, plan.location):
                        handle.write(chunk)
                except SourceUnusable as exc:
                    raise CommandError(f"{one_line(exc)}; nothing was written to {output}") from None
            os.link(partial, output)  # unlike rename, refuses a file that appeared meanwhile
        except FileExistsError:
            raise CommandError(f"{output} appeared meanwhile; it is never overwritten") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        summary = {
            "artifact": artifact.pk,
            "output": output,
            "location": plan.source.location_name,
            "copy": plan.source.copy_id,
            "key": plan.source.key,
            "size_bytes": plan.source.size,
            "sha256": plan.source.sha256,
            "encrypted": bool(plan.source.recipients),
            "request": plan.request.pk if plan.request else None,
            "fallbacks": plan.fallbacks,
        }
        encrypted = " (encrypted with age: open it with your identity)" if plan.source.recipients else ""
        self.finish(options, summary, f"backup #{artifact.pk} written to {output} from {plan.source.label}{encrypted}")

    def _request(self, artifact: Any, options: dict[str, Any]) -> None:
        user = cli_person(options["as_user"], purpose=f"ask to download backup #{artifact.pk}")
        try:
            request = download_request_create(
                artifact=artifact, requested_by=user, reason=options["reason"], location=options["location"]
            )
        except DownloadRefused as exc:
            raise CommandError(one_line(exc)) from None
        self.finish(
            options,
            {"request": request.pk, "artifact": artifact.pk, "status": request.status},
            f"download request #{request.pk} of backup #{artifact.pk} awaits approval by another approver "
            f"(manage.py approve-download {request.pk})",
        )
