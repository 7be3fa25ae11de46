"""manage.py loadconfig FILE.toml"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dr_console.cli import JobCommand, OneLineCommand
from inventory.config import ConfigError, config_load_file


class Command(OneLineCommand):
    help = "Create or update environments and datastores from a TOML file. All or nothing; safe to re-run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path of the TOML file (see docs/configuration.md).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = config_load_file(options["file"], actor_label=JobCommand.trigger_label())
        except ConfigError as exc:
            for error in exc.errors:
                self.stderr.write(f"error: {error}")
            raise CommandError(f"{options['file']}: {len(exc.errors)} error(s); nothing was applied") from None
        for warning in report.warnings:
            self.stderr.write(f"warning: {warning}")
        for change in report.changes:
            self.stdout.write(change)
