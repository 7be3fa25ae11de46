"""manage.py audit verify [--json] | audit grant-runtime-role ROLE [--apply] [--json]

`verify` walks the audit log's hash chain and names its first broken link (exit status 1). `grant-runtime-role`
prints, or with --apply runs, the GRANT/REVOKE statements that give the role the web console and the workers connect
as only INSERT and SELECT on the audit log (docs/security.md)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.grants import GrantRefused, runtime_role_grants, runtime_role_grants_apply
from audit.selectors import audit_chain_verify
from dr_console.cli import JobCommand


class Command(JobCommand):
    # A JobCommand for its --json handling (exactly one JSON document on stdout, errors included); it starts no job.
    help = "Check the audit log's hash chain, or restrict the console's runtime database role on the audit log."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{verify,grant-runtime-role}")
        verify = sub.add_parser("verify", help="Walk the hash chain; exit status 1 at its first broken link.")
        verify.add_argument("--json", action="store_true", help="Print one JSON document.")
        grant = sub.add_parser(
            "grant-runtime-role",
            help="Print (or --apply) the grants of the runtime role: normal rights, but only INSERT and SELECT on "
            "the audit log. Run as the tables' owner, after every migrate.",
        )
        grant.add_argument("role", help="The PostgreSQL role the web console and the workers connect as.")
        grant.add_argument("--apply", action="store_true", help="Run the statements instead of printing them.")
        grant.add_argument("--json", action="store_true", help="Print one JSON document.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "verify":
            self._verify(options)
        else:
            self._grant(options)

    def _verify(self, options: dict[str, Any]) -> None:
        report = audit_chain_verify()
        if report.broken is not None:
            failure = f"audit chain broken after {report.checked - 1} good event(s): {report.broken.message}"
            self.finish(options, report.as_json(), "", failure=failure)
        elif report.head_id is None:
            self.finish(options, report.as_json(), "audit chain intact: the log is empty")
        else:
            self.finish(
                options,
                report.as_json(),
                f"audit chain intact: {report.checked} events, newest #{report.head_id} (hash {report.head_hash})",
            )

    def _grant(self, options: dict[str, Any]) -> None:
        try:
            grants = runtime_role_grants(role=options["role"])
            if options["apply"]:
                runtime_role_grants_apply(grants)
        except GrantRefused as exc:
            raise CommandError(str(exc)) from None
        summary = {"role": grants.role, "owner": grants.owner, "statements": grants.statements, "applied": False}
        if options["apply"]:
            summary["applied"] = True
            text = f"{grants.role}: granted normal rights, and only INSERT and SELECT on the audit log"
        else:
            text = "\n".join(grants.statements)
        self.finish(options, summary, text)
