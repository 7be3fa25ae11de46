"""Importing a pg_dump file taken elsewhere (another console, a DBA's laptop) as a backup of a PostgreSQL datastore,
so that it is restored, drilled, copied and expired like any backup the console took.

`backup_artifact_import`:

1. refuses anything but a PostgreSQL datastore, and a file `pg_restore --list` cannot read as a custom-format
   archive (a plain-SQL dump, a tar or directory archive, garbage): one line, nothing stored, no row;
2. records a pending backup (origin IMPORTED, the file's name as origin detail) and runs it as the backup job, in
   this process: the file is streamed to the datastore's primary location (encrypted to its recipients if it has
   any), hashed before and after, published only once whole;
3. like a taken backup, it then gets its manifest, its copies and a verification
   (backups.services.backup_artifact_after_stored).

What the console cannot know of such a file is left empty and said so on its page: the rows per table (a taken
backup counts them in pg_dump's own snapshot). The versions are what the archive's header says.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_record
from backups import artifacts
from backups.artifacts import DumpOutcome
from backups.locations import datastore_primary_location
from backups.models import BackupArtifact
from backups.postgres import PostgresError, archive_listing, pg_tool
from backups.services import BACKUP_JOB, backup_artifact_after_stored
from dr_console.jobs import JobContext, JobOutcome, job_run
from dr_console.text import untrusted_text
from inventory.models import Datastore

IMPORT_PERM = "backups.add_backupartifact"  # operators: whoever may take a backup may bring one


class ImportRefused(Exception):
    """The file or the datastore cannot be imported; nothing was stored."""


def backup_artifact_import(
    *,
    datastore: Datastore,
    path: str,
    imported_by: User | None,
    name: str = "",
    trigger: str = "import",
    verify: bool = True,
    client_ip: str | None = None,
) -> BackupArtifact:
    """Check, record and store the file at `path` as a backup of `datastore` (the module's text says how). `name`
    is what the origin detail says (an uploaded file's name); by default the file's own name, never its folder.
    Returns the backup, succeeded or failed (the storage refused): a refused file raises ImportRefused."""
    if imported_by is not None and not (imported_by.is_active and imported_by.has_perm(IMPORT_PERM)):
        raise ImportRefused(
            _("%(user)s may not import backups (needs the operator role)") % {"user": imported_by.get_username()}
        )
    if datastore.kind != Datastore.Kind.POSTGRES:
        raise ImportRefused(
            _(
                "%(datastore)s is a %(kind)s datastore: only pg_dump custom-format files of PostgreSQL datastores "
                "can be imported"
            )
            % {"datastore": datastore.name, "kind": datastore.get_kind_display()}
        )
    name = untrusted_text(name or os.path.basename(path))[:500]
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImportRefused(_("cannot read %(name)s: %(error)s") % {"name": name, "error": exc.strerror}) from None
    if not stat.S_ISREG(mode):
        raise ImportRefused(_("%(name)s is not a regular file") % {"name": name})
    try:
        listing = archive_listing(pg_tool("pg_restore"), path)
    except PostgresError as exc:
        raise ImportRefused(
            _("%(name)s is not a pg_dump custom-format archive (%(detail)s); nothing was imported")
            % {"name": name, "detail": exc}
        ) from None
    if listing.format != "CUSTOM":
        raise ImportRefused(
            _(
                "%(name)s is a %(format)s archive: only the custom format (pg_dump --format=custom) is imported; "
                "nothing was imported"
            )
            % {"name": name, "format": untrusted_text(listing.format or "unknown")}
        )
    try:
        with transaction.atomic():
            if running := datastore.artifacts.filter(status__in=BackupArtifact.ACTIVE).first():
                raise ImportRefused(
                    _("a backup of %(datastore)s is %(status)s (#%(id)s): import once it ended")
                    % {"datastore": datastore.name, "status": running.get_status_display().lower(), "id": running.pk}
                )
            artifact = BackupArtifact.objects.create(
                datastore=datastore,
                format=BackupArtifact.Format.PG_CUSTOM,
                origin=BackupArtifact.Origin.IMPORTED,
                origin_detail=name,
                trigger=trigger[:120],
                triggered_by=imported_by,
            )
            audit_record(
                action=AuditEvent.Action.BACKUP_IMPORTED,
                actor=imported_by,
                actor_label="" if imported_by else trigger,
                obj=artifact,
                client_ip=client_ip,
                details={"datastore": datastore.name, "file": name, "entries": len(listing.entries)},
            )
    except IntegrityError:  # a backup started between the check and the insert
        raise ImportRefused(
            _("a backup of %(datastore)s is running: import once it ended") % {"datastore": datastore.name}
        ) from None

    def work(ctx: JobContext) -> JobOutcome:
        outcome = _store(artifact, ctx, path, listing.entries, listing.dumped_by, listing.dumped_from)
        storage = datastore_primary_location(datastore).storage()
        return JobOutcome(
            fields=outcome.fields(),
            on_lost=lambda: artifacts.delete_quietly(outcome.storage_key, storage),
            then=lambda: transaction.on_commit(
                lambda: backup_artifact_after_stored(artifact_id=artifact.pk, verify=verify)
            ),
        )

    job_run(dataclasses.replace(BACKUP_JOB, work=work), pk=artifact.pk)
    artifact.refresh_from_db()
    return artifact


def _store(
    artifact: BackupArtifact, ctx: JobContext, path: str, entries: list[str], dumped_by: str, dumped_from: str
) -> DumpOutcome:
    artifact = BackupArtifact.objects.select_related("datastore__environment").get(pk=artifact.pk)
    location = datastore_primary_location(artifact.datastore)
    ctx.progress["bytes_done"] = 0
    with open(path, "rb") as handle:
        reader = artifacts.HashingReader(handle, ctx.progress)
        stored = artifacts.stream_to_location(
            artifact, location, reader, at_end=ctx.check, expected_bytes=os.fstat(handle.fileno()).st_size
        )
    try:
        ctx.check()
        key = stored.staged.publish()
    except BaseException:
        stored.staged.discard()
        raise
    return DumpOutcome(
        storage_key=key,
        # The header's words: the file says who wrote it, the console did not see it happen.
        tool_version=untrusted_text(f"pg_dump {dumped_by} (imported)" if dumped_by else "imported")[:120],
        server_version=untrusted_text(f"PostgreSQL {dumped_from}" if dumped_from else "")[:120],
        archive_entries=len(entries),
        row_counts={},
        stderr_tail="",
        **stored.outcome_fields(),  # type: ignore[arg-type]
    )
