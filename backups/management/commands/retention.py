"""manage.py retention [DATASTORE] [--dry-run]"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django.core.management.base import CommandParser

from backups.management.commands.backup import datastore_by_name
from backups.retention import RetentionPolicy, RetentionPreview, retention_apply, retention_preview
from dr_console.cli import JobCommand, OneLineCommand
from inventory.models import Datastore


def describe_policy(policy: RetentionPolicy, timezone: str) -> str:
    if not policy.active:
        return "no retention policy: every backup is kept"
    return (
        f"keep the last {policy.keep_last}, daily {policy.keep_daily}, weekly {policy.keep_weekly}, "
        f"monthly {policy.keep_monthly} (days in {timezone})"
    )


def plan_lines(preview: RetentionPreview) -> list[str]:
    datastore = preview.datastore
    zone = ZoneInfo(datastore.backup_schedule_timezone)
    lines = [f"{datastore.name}: {describe_policy(preview.policy, datastore.backup_schedule_timezone)}"]
    for artifact, decision in preview.rows():
        taken = (artifact.started_at or artifact.created_at).astimezone(zone)
        action = "keep  " if decision.keep else "EXPIRE"
        lines.append(f"  {action} #{artifact.pk:<6} {taken:%Y-%m-%d %H:%M %Z}  {decision.reasons_text}")
    lines.append(f"  {len(preview.to_expire)} to expire, {len(preview.to_keep)} kept")
    return lines


class Command(OneLineCommand):
    help = (
        "Apply the retention policy: expire (delete the stored file, keep the row) the backups the policy does not "
        "keep. With --dry-run, only print the plan and why each backup is kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("datastore", nargs="?", help="One datastore; default: all of them.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would be expired; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["datastore"]:
            datastores = [datastore_by_name(options["datastore"])]
        else:
            datastores = list(Datastore.objects.select_related("environment"))
        for datastore in datastores:
            preview = retention_preview(datastore=datastore)
            self.stdout.write("\n".join(plan_lines(preview)))
            if options["dry_run"] or not preview.policy.active:
                continue
            outcome = retention_apply(datastore=datastore, actor_label=JobCommand.trigger_label())
            expired = ", ".join(f"#{pk}" for pk in outcome.expired) or "none"
            self.stdout.write(f"  expired: {expired}; stored files deleted: {outcome.files_deleted}")
            for error in outcome.file_errors:
                self.stderr.write(f"  warning: {error} (retried on the next run)")
        if options["dry_run"]:
            self.stdout.write("dry run: nothing was changed")
