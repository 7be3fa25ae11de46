"""The catalog rebuilt from a location's manifests (`manage.py catalog rebuild`), and the manifests that older
backups lack written (`manage.py catalog write-manifests`), so that a console that lost its database gets its
history back and can restore from it.

Every file at a location has a manifest next to it (backups.manifests). A rebuild lists the location's manifests
and, for each one:

1. reads it (at most MANIFEST_MAX_BYTES) and checks its own checksum and every field (`manifest_parse`,
   `_described`): a manifest that is not whole, was altered, or describes another file than the one next to it is
   skipped, and said;
2. checks that the file it describes is there with the size it records, and (unless `hash_files=False`) streams it
   through sha256: a missing, shortened or altered file is skipped, and said;
3. finds the datastore by name in the configuration (loadconfig); one that is not configured is created from the
   manifest (name, kind, URL variable) after the same target checks loadconfig makes, and a missing environment is
   created PROTECTED: a restore into a rebuilt environment needs approval until the operator says otherwise in the
   configuration (an attacker who can write a manifest must not get an unprotected environment out of it);
4. records it, in one transaction for the whole location:
   - a backup id that is free: a succeeded BackupArtifact with that id (an id in an old runbook or audit export
     still names the same backup), origin REBUILT ("catalog:<location>"), every field from the manifest, and as
     its file the file at this location (the one this console can read): the first location rebuilt holds the row's
     file. Its verification stays "not verified": pg_restore has not read it (`manage.py verify` does);
   - a backup id already in the catalog for the same datastore and the same content checksum: "already in the
     catalog" when it records this file; else this file becomes a VERIFIED ArtifactCopy of it at this location
     (a restore falls back to it), only when it was hashed here: with hash_files=False it is not recorded;
   - a backup id in the catalog for another datastore or other content: a conflict, said, never overwritten.

Then the id sequence is moved past the ids it kept (PostgreSQL), and one CATALOG_REBUILT audit event says what was
done. A dry run does all the reading and hashing, and rolls the transaction back: nothing is recorded or audited.
Running it twice records nothing new.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.core.files.storage import FileSystemStorage, Storage
from django.core.management.color import no_style
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.models import AuditEvent
from audit.services import audit_record
from backups import artifacts
from backups.locations import Location, LocationUnavailable, location_get
from backups.manifests import MANIFEST_SUFFIX, ManifestInvalid, manifest_key, manifest_parse, manifest_write
from backups.models import ArtifactCopy, ArtifactCopyEvent, BackupArtifact, BackupArtifactEvent
from backups.object_store import ObjectStoreError
from dr_console.text import untrusted_data, untrusted_text
from inventory.models import Datastore, Environment, StorageLocation
from inventory.services import DatastoreRefused, datastore_check_target, datastore_configured_notify, datastore_identity

MANIFEST_MAX_BYTES = 1024 * 1024  # a manifest is about 2 KB; anything much larger is not one
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
FORMAT_KIND = {
    BackupArtifact.Format.PG_CUSTOM: Datastore.Kind.POSTGRES,
    BackupArtifact.Format.REDIS_SNAPSHOT: Datastore.Kind.REDIS,
}
# What a storage backend raises for a file it cannot read: told as that manifest's problem, never a crash.
READ_ERRORS = (OSError, ObjectStoreError, SuspiciousOperation, ValueError)


class CatalogRefused(Exception):
    """The location cannot be read at all (unknown, misconfigured, unreachable); nothing was recorded."""


class Outcome:
    IMPORTED = "imported"  # a new backup row
    COPY = "copy"  # recorded as a verified copy of a backup already in the catalog
    PRESENT = "present"  # already in the catalog, as this file
    CONFLICT = "conflict"  # the id is another backup's
    SKIPPED = "skipped"  # invalid or altered manifest, missing or altered file, a datastore that cannot be made

    PROBLEMS = frozenset({CONFLICT, SKIPPED})


@dataclass
class CatalogEntry:
    """What the rebuild did with one manifest."""

    manifest: str
    outcome: str
    message: str
    backup_id: int | None = None
    datastore: str = ""

    def __post_init__(self) -> None:
        self.manifest = untrusted_text(self.manifest)  # a file name read from the storage

    @property
    def text(self) -> str:
        """The message, safe for a terminal and a JSON document: it quotes file names and manifest fields."""
        return untrusted_text(self.message)

    def as_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "outcome": self.outcome,
            "backup_id": self.backup_id,
            "datastore": self.datastore,
            "message": self.text,
        }


@dataclass
class RebuildReport:
    location: str
    dry_run: bool
    hashed: bool
    entries: list[CatalogEntry] = field(default_factory=list)
    environments_created: list[str] = field(default_factory=list)
    datastores_created: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        outcomes = (Outcome.IMPORTED, Outcome.COPY, Outcome.PRESENT, Outcome.CONFLICT, Outcome.SKIPPED)
        return {outcome: sum(1 for e in self.entries if e.outcome == outcome) for outcome in outcomes}

    @property
    def problems(self) -> list[CatalogEntry]:
        return [entry for entry in self.entries if entry.outcome in Outcome.PROBLEMS]

    def as_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "dry_run": self.dry_run,
            "hashed": self.hashed,
            "counts": {"manifests": len(self.entries), **self.counts()},
            "environments_created": self.environments_created,
            "datastores_created": self.datastores_created,
            "entries": [entry.as_json() for entry in self.entries],
        }


# --- listing and reading ------------------------------------------------------------------------------------------


def location_manifest_keys(storage: Storage) -> Iterator[str]:
    """The keys of every manifest at a location, sorted, staged writes (tmp/) left out: a local folder walked with
    os.walk, a bucket listed with list_objects_v2, any other storage through listdir."""
    if isinstance(storage, FileSystemStorage):
        root = Path(storage.location)
        if not root.is_dir():
            raise CatalogRefused(f"the folder {root} does not exist")
        keys: list[str] = []
        for folder, subfolders, files in os.walk(root):
            relative = Path(folder).relative_to(root)
            if relative == Path("."):
                subfolders[:] = [name for name in subfolders if f"{name}/" != artifacts.TMP_PREFIX]
            keys.extend((relative / name).as_posix() for name in files if name.endswith(MANIFEST_SUFFIX))
        yield from sorted(key.removeprefix("./") for key in keys)
    elif getattr(storage, "bucket_name", None):
        client = storage.connection.meta.client  # type: ignore[attr-defined]
        prefix = str(getattr(storage, "location", "") or "").strip("/")
        prefix = f"{prefix}/" if prefix else ""
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket_name, Prefix=prefix)  # type: ignore[attr-defined]
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"][len(prefix) :]
                if key.endswith(MANIFEST_SUFFIX) and not key.startswith(artifacts.TMP_PREFIX):
                    yield key
    else:
        yield from sorted(_listdir_manifests(storage, ""))


def _listdir_manifests(storage: Storage, folder: str) -> Iterator[str]:
    subfolders, files = storage.listdir(folder)
    for name in files:
        if name.endswith(MANIFEST_SUFFIX):
            yield f"{folder}{name}"
    for name in subfolders:
        path = f"{folder}{name}/"
        if path != artifacts.TMP_PREFIX:
            yield from _listdir_manifests(storage, path)


def _read_small(storage: Storage, key: str) -> bytes:
    data = bytearray()
    for chunk in artifacts.iter_chunks(key, storage):
        data += chunk
        if len(data) > MANIFEST_MAX_BYTES:
            raise ManifestInvalid(f"{key}: larger than {MANIFEST_MAX_BYTES} bytes, not a manifest")
    return bytes(data)


@dataclass(frozen=True)
class Described:
    """A backup file as its manifest describes it, every field checked."""

    manifest: str
    backup_id: int
    datastore: str
    kind: str
    environment: str
    url_env: str
    format: str
    compression_level: int | None
    created_at: datetime
    taken_at: datetime | None
    finished_at: datetime | None
    written_for: str  # the location the manifest was written for (files may have been moved between buckets)
    key: str
    sha256: str
    size: int
    recipients: list[str]
    content_sha256: str
    content_size: int | None
    archive_entries: int | None
    row_counts: dict[str, int]
    tool_version: str
    server_version: str
    trigger: str


def _described(manifest: str, body: dict[str, Any]) -> Described:
    """The manifest's fields, or ManifestInvalid naming the first wrong one. Its checksum proves it whole, not who
    wrote it: anyone who can write to the location can write one, so nothing in it is taken on trust."""

    def bad(name: str, why: str) -> ManifestInvalid:
        return ManifestInvalid(f"{manifest}: {name}: {why}")

    def text(value: Any, name: str, *, limit: int = 512, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value) or len(value) > limit:
            raise bad(name, f"a text of 1 to {limit} characters expected")
        return untrusted_text(value)

    def number(value: Any, name: str, *, required: bool = False) -> int | None:
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(name, "a whole number of at least 0 expected")
        return value

    def moment(value: Any, name: str, *, required: bool = False) -> datetime | None:
        if value is None and not required:
            return None
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise bad(name, "an ISO 8601 time with its offset expected")
        return parsed

    def checksum(value: Any, name: str) -> str:
        if not isinstance(value, str) or not SHA256.match(value):
            raise bad(name, "a sha256 in hex expected")
        return value

    datastore = body.get("datastore")
    stored = body.get("stored")
    content = body.get("content")
    for name, part in (("datastore", datastore), ("stored", stored), ("content", content)):
        if not isinstance(part, dict):
            raise bad(name, "an object expected")
    assert isinstance(datastore, dict) and isinstance(stored, dict) and isinstance(content, dict)
    backup_id = number(body.get("backup_id"), "backup_id", required=True)
    if not backup_id:
        raise bad("backup_id", "a backup id (1 or more) expected")
    key = text(body.get("key"), "key")
    if manifest_key(key) != manifest:
        raise bad("key", f"it describes {key}, not the file next to it")
    if artifacts.backup_id_of_key(key) != str(backup_id):
        raise bad("key", f"the file {key} is not named as backup #{backup_id}'s")
    artifact_format = body.get("artifact_format")
    if artifact_format not in FORMAT_KIND:
        raise bad("artifact_format", f"one of {', '.join(FORMAT_KIND)} expected")
    kind = datastore.get("kind")
    if kind != FORMAT_KIND[artifact_format]:
        raise bad("datastore.kind", f"{FORMAT_KIND[artifact_format]} expected for a {artifact_format} file")
    recipients = stored.get("recipients")
    if not isinstance(recipients, list) or not all(isinstance(r, str) and 0 < len(r) < 200 for r in recipients):
        raise bad("stored.recipients", "a list of age recipients expected")
    row_counts = body.get("row_counts")
    if not isinstance(row_counts, dict) or not all(
        isinstance(count, int) and not isinstance(count, bool) for count in row_counts.values()
    ):
        raise bad("row_counts", "an object of whole numbers expected")
    stored_sha256 = checksum(stored.get("sha256"), "stored.sha256")
    content_sha256 = checksum(content.get("sha256"), "content.sha256")
    if not recipients and stored_sha256 != content_sha256:
        raise bad("content.sha256", "an unencrypted file's content is the file itself: both checksums must agree")
    size = number(stored.get("size"), "stored.size", required=True)
    assert size is not None
    created_at = moment(body.get("created_at"), "created_at", required=True)
    assert created_at is not None
    return Described(
        manifest=manifest,
        backup_id=backup_id,
        datastore=text(datastore.get("name"), "datastore.name", limit=64),
        kind=str(kind),
        environment=text(datastore.get("environment"), "datastore.environment", limit=64),
        url_env=text(datastore.get("url_env"), "datastore.url_env", limit=128),
        format=str(artifact_format),
        compression_level=number(body.get("compression_level"), "compression_level"),
        created_at=created_at,
        taken_at=moment(body.get("taken_at"), "taken_at"),
        finished_at=moment(body.get("finished_at"), "finished_at"),
        written_for=text(body.get("location"), "location", limit=64),
        key=key,
        sha256=stored_sha256,
        size=size,
        recipients=list(recipients),
        content_sha256=content_sha256,
        content_size=number(content.get("size"), "content.size"),
        archive_entries=number(body.get("archive_entries"), "archive_entries"),
        row_counts=untrusted_data(row_counts),
        tool_version=text(body.get("tool_version"), "tool_version", limit=120, required=False),
        server_version=text(body.get("server_version"), "server_version", limit=120, required=False),
        trigger=text(body.get("trigger"), "trigger", limit=120, required=False),
    )


# --- datastores ---------------------------------------------------------------------------------------------------


@dataclass
class _DatastorePlan:
    """The datastore a manifest's backup belongs to: configured, or to be created from the manifest."""

    name: str
    existing: Datastore | None = None
    new: Datastore | None = None
    new_environment: Environment | None = None
    problem: str = ""


def _datastore_plan(described: Described, location: Location) -> _DatastorePlan:
    plan = _DatastorePlan(name=described.datastore)
    existing = Datastore.objects.select_related("environment").filter(name=described.datastore).first()
    if existing is not None:
        if existing.kind != described.kind:
            plan.problem = (
                f"datastore {existing.name} is configured as {existing.kind}; the manifest describes a "
                f"{described.kind} backup"
            )
        plan.existing = existing
        return plan
    environment = Environment.objects.filter(name=described.environment).first()
    try:
        if environment is None:
            environment = Environment(
                name=described.environment,
                protected=True,
                description="Created by `manage.py catalog rebuild` from a backup's manifest; protected until the "
                "configuration (loadconfig) says otherwise.",
            )
            environment.full_clean(validate_unique=False)
            plan.new_environment = environment
        store = Datastore(
            name=described.datastore,
            kind=described.kind,
            url_env=described.url_env,
            environment=environment,
            storage_locations=[location.name] if location.role == StorageLocation.Role.PRIMARY else [],
            description=f"Created by `manage.py catalog rebuild` from the manifests at {location.name}.",
        )
        store.full_clean(exclude=["environment"], validate_unique=False)
        datastore_check_target(store, datastore_identity(store, stored=False))
    except ValidationError as exc:
        messages = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in exc.message_dict.items())
        plan.problem = f"datastore {described.datastore} is not configured and cannot be made from the manifest: "
        plan.problem += messages
        return plan
    except DatastoreRefused as exc:
        plan.problem = f"datastore {described.datastore} is not configured and is refused as described: {exc}"
        return plan
    plan.new = store
    return plan


# --- the rebuild --------------------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    described: Described
    plan: _DatastorePlan
    hashed: bool
    notes: list[str]


def _same_backup(artifact: BackupArtifact, described: Described) -> bool:
    return artifact.datastore.name == described.datastore and artifact.content_sha256 == described.content_sha256


def _holds_file(artifact: BackupArtifact, location: str, key: str) -> bool:
    if artifact.location == location and artifact.storage_key == key:
        return True
    return artifact.copies.filter(location=location, storage_key=key, status=ArtifactCopy.Status.VERIFIED).exists()


def _conflict(artifact: BackupArtifact, described: Described) -> str:
    return (
        f"backup #{artifact.pk} is already in the catalog as a backup of {artifact.datastore.name} with content "
        f"sha256 {artifact.content_sha256}; the manifest describes one of {described.datastore} with "
        f"{described.content_sha256}: not overwritten"
    )


def catalog_rebuild(
    *,
    location_name: str,
    dry_run: bool = False,
    hash_files: bool = True,
    actor: User | None = None,
    actor_label: str = "",
) -> RebuildReport:
    """Import every backup whose manifest is at `location_name` (see the module's docstring for the rules)."""
    try:
        location = location_get(location_name)
        storage = location.storage()
        keys = list(location_manifest_keys(storage))
    except LocationUnavailable as exc:
        raise CatalogRefused(str(exc)) from None
    except CatalogRefused as exc:
        raise CatalogRefused(f"storage location {location_name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a backend's own listing error (boto3, OSError), told as one line
        raise CatalogRefused(
            f"storage location {location_name} cannot be listed: {type(exc).__name__}: {exc}"
        ) from None
    report = RebuildReport(location=location.name, dry_run=dry_run, hashed=hash_files)
    plans: dict[str, _DatastorePlan] = {}
    candidates: list[_Candidate] = []
    for manifest in keys:
        label = untrusted_text(manifest)
        try:
            candidate = _examine(manifest, storage, location, hash_files, plans)
        except ManifestInvalid as exc:
            report.entries.append(CatalogEntry(label, Outcome.SKIPPED, untrusted_text(str(exc))))
            continue
        except READ_ERRORS as exc:
            message = f"{label}: cannot be read: {type(exc).__name__}: {untrusted_text(str(exc))}"
            report.entries.append(CatalogEntry(label, Outcome.SKIPPED, message))
            continue
        if isinstance(candidate, CatalogEntry):
            report.entries.append(candidate)
        else:
            candidates.append(candidate)
    # No storage I/O from here on: the transaction is short, whatever the size of the files.
    with transaction.atomic():
        for candidate in candidates:
            report.entries.append(_record(candidate, location, report, actor))
        if dry_run:
            transaction.set_rollback(True)
        else:
            if any(entry.outcome == Outcome.IMPORTED for entry in report.entries):
                _sequence_reset()
            audit_record(
                action=AuditEvent.Action.CATALOG_REBUILT,
                actor=actor,
                actor_label=actor_label,
                details={
                    "location": location.name,
                    "hashed": hash_files,
                    "counts": report.as_json()["counts"],
                    "imported": [e.backup_id for e in report.entries if e.outcome == Outcome.IMPORTED],
                    "copies": [e.backup_id for e in report.entries if e.outcome == Outcome.COPY],
                    "problems": [e.text for e in report.problems][:50],
                    "environments_created": report.environments_created,
                    "datastores_created": report.datastores_created,
                },
            )
    report.entries.sort(key=lambda entry: entry.manifest)
    return report


def _examine(
    manifest: str, storage: Storage, location: Location, hash_files: bool, plans: dict[str, _DatastorePlan]
) -> _Candidate | CatalogEntry:
    """Steps 1 to 3 for one manifest, outside any transaction (they read and hash files)."""
    described = _described(manifest, manifest_parse(_read_small(storage, manifest), where=manifest).body)
    entry = CatalogEntry(manifest, Outcome.SKIPPED, "", described.backup_id, described.datastore)
    artifact = BackupArtifact.objects.select_related("datastore").filter(pk=described.backup_id).first()
    if artifact is not None and not _same_backup(artifact, described):
        entry.outcome, entry.message = Outcome.CONFLICT, _conflict(artifact, described)
        return entry
    if artifact is not None and _holds_file(artifact, location.name, described.key):
        entry.outcome, entry.message = Outcome.PRESENT, f"backup #{artifact.pk} is already in the catalog"
        return entry
    if not storage.exists(described.key):
        entry.message = f"the file {described.key} is missing from {location.name} (expired, or deleted)"
        return entry
    size = storage.size(described.key)
    if size != described.size:
        entry.message = f"the file {described.key} holds {size} bytes; its manifest records {described.size}"
        return entry
    if hash_files:
        digest, hashed_size = artifacts.sha256_of(described.key, storage)
        if (digest, hashed_size) != (described.sha256, described.size):
            entry.message = (
                f"the file {described.key} hashes to {digest} ({hashed_size} bytes), not the {described.sha256} "
                "its manifest records: altered, not imported"
            )
            return entry
    if described.datastore not in plans:
        plans[described.datastore] = _datastore_plan(described, location)
    plan = plans[described.datastore]
    if plan.problem:
        entry.message = plan.problem
        return entry
    notes = []
    if described.written_for != location.name:
        notes.append(f"written for location {described.written_for}, found at {location.name}")
    existing = plan.existing
    if existing is not None and (existing.environment.name, existing.url_env) != (
        described.environment,
        described.url_env,
    ):
        notes.append(
            f"the configuration's {existing.name} ({existing.environment.name}, {existing.url_env}) is kept over "
            f"the manifest's ({described.environment}, {described.url_env})"
        )
    return _Candidate(described=described, plan=plan, hashed=hash_files, notes=notes)


def _datastore_for(plan: _DatastorePlan, report: RebuildReport) -> Datastore | None:
    """The plan's datastore, created (with its environment) on first use; None, and the plan's problem set, when
    the configuration created it meanwhile."""
    if plan.existing is not None or plan.problem:
        return plan.existing
    store, environment = plan.new, plan.new_environment
    assert store is not None
    try:
        with transaction.atomic():
            if environment is not None:
                environment.save()
                store.environment = environment
            store.save()
    except IntegrityError:
        plan.problem = f"datastore {plan.name} was configured by someone else during the rebuild: run it again"
        return None
    if environment is not None:
        report.environments_created.append(environment.name)
    report.datastores_created.append(store.name)
    transaction.on_commit(lambda: datastore_configured_notify(datastore=store))
    plan.existing, plan.new, plan.new_environment = store, None, None
    return store


def _record(candidate: _Candidate, location: Location, report: RebuildReport, actor: User | None) -> CatalogEntry:
    """Step 4 for one manifest, in the rebuild's transaction."""
    described = candidate.described
    entry = CatalogEntry(described.manifest, Outcome.SKIPPED, "", described.backup_id, described.datastore)
    checked = "its sha256 checked at import" if candidate.hashed else "its size checked at import, not its sha256"
    notes = "".join(f"; {note}" for note in candidate.notes)
    datastore = _datastore_for(candidate.plan, report)
    if datastore is None:
        entry.message = candidate.plan.problem
        return entry
    try:
        with transaction.atomic():
            artifact = (
                BackupArtifact.objects.select_for_update()
                .select_related("datastore")
                .filter(pk=described.backup_id)
                .first()
            )
            if artifact is None:
                artifact = _artifact_create(described, datastore, location)
                BackupArtifactEvent.objects.create(
                    job=artifact,
                    old_status="",
                    new_status=BackupArtifact.Status.SUCCEEDED,
                    message=f"rebuilt from its manifest at {location.name} ({described.key}), {checked}; not "
                    f"verified since{notes}",
                )
                entry.outcome = Outcome.IMPORTED
                entry.message = f"backup #{artifact.pk} of {datastore.name} imported from {described.key}{notes}"
                return entry
            if not _same_backup(artifact, described):
                entry.outcome, entry.message = Outcome.CONFLICT, _conflict(artifact, described)
                return entry
            if _holds_file(artifact, location.name, described.key):
                entry.outcome, entry.message = Outcome.PRESENT, f"backup #{artifact.pk} is already in the catalog"
                return entry
            if (
                artifact.location == location.name
                or artifact.copies.filter(location=location.name, status=ArtifactCopy.Status.VERIFIED).exists()
            ):
                entry.message = (
                    f"backup #{artifact.pk} is in the catalog with another file at {location.name}; "
                    f"{described.key} is a second file of it there, not recorded"
                )
                return entry
            if not candidate.hashed:
                entry.message = (
                    f"backup #{artifact.pk} is in the catalog; its file here is recorded as a copy only once "
                    "hashed (run without --no-hash)"
                )
                return entry
            copy = _copy_create(artifact, described, location, actor)
            entry.outcome = Outcome.COPY
            entry.message = f"copy #{copy.pk} of backup #{artifact.pk} recorded at {location.name}{notes}"
            return entry
    except IntegrityError:
        # A backup taken meanwhile got this id, or another rebuild recorded this copy first: said, and left alone.
        entry.outcome = Outcome.CONFLICT
        entry.message = f"backup #{described.backup_id} was recorded by someone else during the rebuild"
        return entry


def _artifact_create(described: Described, datastore: Datastore, location: Location) -> BackupArtifact:
    started = described.taken_at or described.created_at
    finished = described.finished_at
    return BackupArtifact.objects.create(
        pk=described.backup_id,
        datastore=datastore,
        status=BackupArtifact.Status.SUCCEEDED,
        verification=BackupArtifact.Verification.UNVERIFIED,
        format=described.format,
        compression_level=described.compression_level,
        created_at=described.created_at,
        started_at=started,
        finished_at=finished,
        duration=finished - started if finished else None,
        size_bytes=described.size,
        bytes_done=described.size,
        sha256=described.sha256,
        storage_key=described.key,
        location=location.name,
        recipients=described.recipients,
        plaintext_sha256=described.content_sha256,
        plaintext_size=described.content_size,
        archive_entries=described.archive_entries,
        row_counts=described.row_counts,
        tool_version=described.tool_version,
        server_version=described.server_version,
        trigger=described.trigger,
        triggered_by=None,  # who took it is not in the manifest; who rebuilt it is in the audit event
        retain_until=location.retain_until(started),
        origin=BackupArtifact.Origin.REBUILT,
        origin_detail=f"catalog:{location.name}",
    )


def _copy_create(
    artifact: BackupArtifact, described: Described, location: Location, actor: User | None
) -> ArtifactCopy:
    now = timezone.now()
    copy = ArtifactCopy.objects.create(
        artifact=artifact,
        location=location.name,
        status=ArtifactCopy.Status.VERIFIED,
        storage_key=described.key,
        size_bytes=described.size,
        bytes_done=described.size,
        sha256=described.sha256,
        recipients=described.recipients,
        retain_until=location.retain_until(artifact.taken_at),
        created_at=now,
        started_at=now,
        finished_at=now,
        verified_at=now,
        trigger=f"catalog:{location.name}",
        triggered_by=actor,
    )
    ArtifactCopyEvent.objects.create(
        job=copy,
        old_status="",
        new_status=ArtifactCopy.Status.VERIFIED,
        message=f"recorded by a catalog rebuild of {location.name}: its file {described.key} hashed there",
    )
    return copy


def _sequence_reset() -> None:
    """Move the backups' id sequence past the ids the rebuild kept, or the next backup would take one of them
    (PostgreSQL; `sqlsequencereset`'s statement. SQLite keeps no sequence to move: no statement)."""
    with connection.cursor() as cursor:
        for statement in connection.ops.sequence_reset_sql(no_style(), [BackupArtifact]):
            cursor.execute(statement)


# --- manifests for older backups ----------------------------------------------------------------------------------


@dataclass
class ManifestsReport:
    location: str
    dry_run: bool
    written: list[str] = field(default_factory=list)
    present: int = 0
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "dry_run": self.dry_run,
            "written": self.written,
            "already_there": self.present,
            "problems": self.problems,
        }


def catalog_manifests_write(*, location_name: str, dry_run: bool = False) -> ManifestsReport:
    """Write the manifest of every file this console records at `location_name` (succeeded backups whose primary is
    there, verified copies there) that has none, so that the catalog can be rebuilt from it later. An existing
    manifest is left as it is; a file that is missing gets none."""
    try:
        location = location_get(location_name)
        storage = location.storage()
    except LocationUnavailable as exc:
        raise CatalogRefused(str(exc)) from None
    report = ManifestsReport(location=location.name, dry_run=dry_run)
    files: list[tuple[BackupArtifact, str, str, int, list[str]]] = []
    backups = BackupArtifact.objects.filter(
        location=location.name, status=BackupArtifact.Status.SUCCEEDED, file_deleted_at__isnull=True
    ).exclude(storage_key="")
    for artifact in backups.select_related("datastore__environment").order_by("pk"):
        files.append((artifact, artifact.storage_key, artifact.sha256, artifact.size_bytes or 0, artifact.recipients))
    copies = ArtifactCopy.objects.filter(location=location.name, status=ArtifactCopy.Status.VERIFIED)
    for copy in copies.select_related("artifact__datastore__environment").order_by("artifact_id", "pk"):
        files.append((copy.artifact, copy.storage_key, copy.sha256, copy.size_bytes or 0, copy.recipients))
    for artifact, key, sha256, size, recipients in files:
        try:
            if storage.exists(manifest_key(key)):
                report.present += 1
                continue
            if not storage.exists(key):
                report.problems.append(f"backup #{artifact.pk}: its file {key} is missing; no manifest written")
                continue
            if not dry_run:
                manifest_write(artifact, location, key=key, sha256=sha256, size=size, recipients=list(recipients))
            report.written.append(manifest_key(key))
        except READ_ERRORS as exc:
            report.problems.append(f"backup #{artifact.pk}: {key}: {type(exc).__name__}: {untrusted_text(str(exc))}")
    return report
