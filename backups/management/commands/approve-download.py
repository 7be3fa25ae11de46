"""manage.py approve-download REQUEST_ID --as USERNAME [--comment TEXT] [--json]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_person
from backups.downloads import DownloadRefused, download_request_approve
from backups.models import DownloadRequest
from dr_console.cli import JobCommand, one_line


class Command(JobCommand):
    help = "Approve a download of protected data that someone else asked for."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("request_id", type=int, help="Id of the download request.")
        parser.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="Who approves; proven by their credential (DR_CONSOLE_TOKEN, or the password asked in a terminal).",
        )
        parser.add_argument("--comment", default="", help="Optional comment, kept with the approval.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the request.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not DownloadRequest.objects.filter(pk=options["request_id"]).exists():
            raise CommandError(f"no download request with id {options['request_id']}")
        # The credential asked here is the approval's re-authentication: a name alone approves nothing.
        approver = cli_person(options["as_user"], purpose=f"approve download request #{options['request_id']}")
        try:
            request = download_request_approve(
                request_id=options["request_id"], approver=approver, comment=options["comment"]
            )
        except DownloadRefused as exc:
            raise CommandError(one_line(exc)) from None
        text = (
            f"download request #{request.pk} approved: {request.requested_by.get_username()} may download backup "
            f"#{request.artifact_id} once, until {request.expires_at:%Y-%m-%d %H:%M %Z}"
            if request.status == DownloadRequest.Status.APPROVED
            else f"download request #{request.pk}: approval recorded, more are needed"
        )
        self.finish(
            options,
            {
                "request": request.pk,
                "artifact": request.artifact_id,
                "status": request.status,
                "expires_at": request.expires_at.isoformat() if request.expires_at else None,
            },
            text,
        )
