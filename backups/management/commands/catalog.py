"""manage.py catalog rebuild --location NAME [--dry-run] [--no-hash] [--json] [--as USERNAME]
manage.py catalog write-manifests --location NAME [--dry-run] [--json]

`rebuild` imports every backup whose manifest is at a location into this console's database (backups.catalog);
exit status 1 when a manifest was skipped or conflicted (the report names each one). `write-manifests` writes the
manifests that backups taken before manifests existed lack, so that the catalog can be rebuilt from them later."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from accounts.cli import cli_user
from backups.catalog import CatalogRefused, RebuildReport, catalog_manifests_write, catalog_rebuild
from dr_console.cli import JobCommand, one_line, user_may
from inventory.models import DEFAULT_STORAGE_LOCATION, StorageLocation


def report_lines(report: RebuildReport) -> list[str]:
    counts = report.counts()
    lines = [f"  {entry.outcome:<8} {entry.manifest}: {entry.text}" for entry in report.entries]
    verb = "would be" if report.dry_run else "were"
    for noun, names in (("environment", report.environments_created), ("datastore", report.datastores_created)):
        if names:
            protected = " as protected (relax it in the configuration, loadconfig)" if noun == "environment" else ""
            lines.append(f"  {noun}s not configured that {verb} created{protected}: {', '.join(names)}")
    lines.append(
        f"{report.location}: {len(report.entries)} manifest(s): {counts['imported']} backup(s) imported, "
        f"{counts['copy']} copy(ies) recorded, {counts['present']} already in the catalog, {counts['conflict']} "
        f"conflict(s), {counts['skipped']} skipped"
        + ("" if report.hashed else "; files not hashed (--no-hash): run `manage.py verify ID`")
        + ("; dry run: nothing was changed" if report.dry_run else "")
    )
    return lines


class Command(JobCommand):
    # A JobCommand for its --json handling (exactly one JSON document on stdout, errors included); it starts no job.
    help = "Rebuild the catalog of backups from a storage location's manifests, or write the manifests it needs."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{rebuild,write-manifests}")
        rebuild = sub.add_parser(
            "rebuild",
            help="Import every backup whose manifest is at the location (a console that lost its database).",
        )
        rebuild.add_argument("--location", required=True, metavar="NAME", help="The storage location to read.")
        rebuild.add_argument("--dry-run", action="store_true", help="Read and check everything; record nothing.")
        rebuild.add_argument(
            "--no-hash",
            action="store_true",
            help="Check the files' sizes only, not their sha256 (faster; copies are then not recorded).",
        )
        rebuild.add_argument("--as", dest="as_user", metavar="USERNAME", help="The console user rebuilding (audit).")
        rebuild.add_argument("--json", action="store_true", help="Print one JSON document.")
        manifests = sub.add_parser(
            "write-manifests", help="Write the manifest of every backup file the console records there that has none."
        )
        manifests.add_argument("--location", required=True, metavar="NAME", help="The storage location to write to.")
        manifests.add_argument("--dry-run", action="store_true", help="Say which manifests are missing; write none.")
        manifests.add_argument("--json", action="store_true", help="Print one JSON document.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["location"]
        if name != DEFAULT_STORAGE_LOCATION and not StorageLocation.objects.filter(name=name).exists():
            known = ", ".join(StorageLocation.objects.order_by("name").values_list("name", flat=True))
            raise CommandError(
                f"no storage location is named {name}; configured: {known or 'none'} (and {DEFAULT_STORAGE_LOCATION}); "
                "load the configuration first (`manage.py loadconfig FILE`)"
            )
        if options["action"] == "rebuild":
            self._rebuild(options)
        else:
            self._manifests(options)

    def _rebuild(self, options: dict[str, Any]) -> None:
        user = cli_user(options["as_user"], purpose=f"rebuild the catalog from {options['location']}", required=False)
        user_may(user, "backups.add_backupartifact", "rebuild the catalog")
        try:
            report = catalog_rebuild(
                location_name=options["location"],
                dry_run=options["dry_run"],
                hash_files=not options["no_hash"],
                actor=user,
                actor_label="" if user else self.trigger_label(),
            )
        except CatalogRefused as exc:
            raise CommandError(f"{one_line(exc)}; nothing was recorded") from None
        problems = report.problems
        failure = ""
        if problems:
            failure = (
                f"{len(problems)} of {len(report.entries)} manifest(s) at {report.location} not imported "
                "(conflict or skipped): see the report"
            )
            if not options["json"]:
                self.stdout.write("\n".join(report_lines(report)))
        self.finish(options, report.as_json(), "\n".join(report_lines(report)), failure=failure)

    def _manifests(self, options: dict[str, Any]) -> None:
        try:
            report = catalog_manifests_write(location_name=options["location"], dry_run=options["dry_run"])
        except CatalogRefused as exc:
            raise CommandError(one_line(exc)) from None
        verb = "to write" if options["dry_run"] else "written"
        lines = [f"  {key}" for key in report.written]
        lines += [f"  problem: {problem}" for problem in report.problems]
        lines.append(
            f"{report.location}: {len(report.written)} manifest(s) {verb}, {report.present} already there, "
            f"{len(report.problems)} problem(s)" + ("; dry run: nothing was written" if options["dry_run"] else "")
        )
        failure = f"{len(report.problems)} file(s) at {report.location} got no manifest: see above"
        if report.problems and not options["json"]:
            self.stdout.write("\n".join(lines))
        self.finish(options, report.as_json(), "\n".join(lines), failure=failure if report.problems else "")
