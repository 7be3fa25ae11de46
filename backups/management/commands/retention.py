"""manage.py retention [DATASTORE] [--dry-run]"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django.core.management.base import CommandParser

from backups.management.commands.backup import datastore_by_name
from backups.retention import (
    CopyRetentionPreview,
    RetentionPolicy,
    RetentionPreview,
    copy_retention_previews,
    retention_apply,
    retention_preview,
)
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


def copy_plan_lines(preview: CopyRetentionPreview) -> list[str]:
    """A copy location's plan: its own policy over the verified copies there."""
    datastore = preview.datastore
    zone = ZoneInfo(datastore.backup_schedule_timezone)
    region = f" ({preview.location.region})" if preview.location.region else ""
    policy = describe_policy(preview.policy, datastore.backup_schedule_timezone).replace("backup", "copy")
    lines = [f"  copies at {preview.location.name}{region}: {policy}"]
    for copy, decision in preview.rows():
        taken = copy.artifact.taken_at.astimezone(zone)
        action = "keep  " if decision.keep else "EXPIRE"
        lines.append(
            f"    {action} #{copy.artifact_id:<6} {taken:%Y-%m-%d %H:%M %Z}  copy #{copy.pk}  {decision.reasons_text}"
        )
    lines.append(f"    {len(preview.to_expire)} to expire, {len(preview.to_keep)} kept")
    return lines


class Command(OneLineCommand):
    help = (
        "Apply the retention policies: expire (delete the stored file, keep the row) the backups the datastore's "
        "policy does not keep, and the copies each copy location's own policy does not keep; a file under Object "
        "Lock waits for its date. With --dry-run, only print the plans and why each backup is kept."
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
            copy_previews = copy_retention_previews(datastore=datastore)
            self.stdout.write("\n".join(plan_lines(preview)))
            for copy_preview in copy_previews:
                self.stdout.write("\n".join(copy_plan_lines(copy_preview)))
            active = preview.policy.active or any(p.policy.active for p in copy_previews)
            if options["dry_run"] or not active:
                continue
            outcome = retention_apply(datastore=datastore, actor_label=JobCommand.trigger_label())
            expired = ", ".join(f"#{pk}" for pk in outcome.expired) or "none"
            line = f"  expired: {expired}; stored files deleted: {outcome.files_deleted}"
            if copy_previews:
                line += "; copies expired: " + (", ".join(f"#{pk}" for pk in outcome.copies_expired) or "none")
            self.stdout.write(line)
            for locked in outcome.locked:
                self.stdout.write(f"  skipped: {locked}")
            for error in outcome.file_errors:
                self.stderr.write(f"  warning: {error} (retried on the next run)")
        if options["dry_run"]:
            self.stdout.write("dry run: nothing was changed")
