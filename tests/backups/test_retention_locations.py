"""Retention per location: the primary keeps the datastore's policy, each copy location applies its own to the
verified copies there; files under Object Lock wait for their date (said once), real files in real folders."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import call_command

from audit.models import AuditEvent
from backups.models import ArtifactCopy, BackupArtifact
from backups.retention import Why, copy_retention_previews, retention_apply, retention_apply_all
from backups.sources import artifact_sources
from inventory.models import Datastore, StorageLocation
from tests.factories import BackupArtifactFactory, DatastoreFactory, UserFactory
from tests.support.storage import stored_files

pytestmark = pytest.mark.django_db

FS = "django.core.files.storage.FileSystemStorage"


def location(name: str, folder: Path, **fields: Any) -> StorageLocation:
    return StorageLocation.objects.create(name=name, backend=FS, options={"location": str(folder)}, **fields)


def write(folder: Path, key: str) -> None:
    """A file and the manifest beside it (backups.manifests), as every location holds them."""
    for name in (key, key + ".manifest.json"):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PGDMP fake archive")


def backup(datastore: Datastore, folder: Path, taken: datetime, **fields: Any) -> BackupArtifact:
    key = f"{datastore.name}/{taken:%Y%m%dT%H%M}-{taken.microsecond}.dump"
    write(folder, key)
    return BackupArtifactFactory(
        datastore=datastore,
        status=BackupArtifact.Status.SUCCEEDED,
        verification=BackupArtifact.Verification.VERIFIED,
        created_at=taken,
        started_at=taken,
        finished_at=taken + timedelta(minutes=1),
        storage_key=key,
        size_bytes=18,
        location="local",
        **fields,
    )


def copied(artifact: BackupArtifact, name: str, folder: Path, **fields: Any) -> ArtifactCopy:
    key = artifact.storage_key + ".age"
    write(folder, key)
    return ArtifactCopy.objects.create(
        artifact=artifact,
        location=name,
        status=ArtifactCopy.Status.VERIFIED,
        storage_key=key,
        size_bytes=18,
        verified_at=artifact.finished_at,
        **fields,
    )


def at3(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 3, tzinfo=UTC)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    local, offsite = tmp_path / "local", tmp_path / "offsite"
    location("local", local, role="primary")
    location("offsite", offsite, role="copy", region="eu-west", retention_keep_monthly=2)
    return local, offsite


def test_each_location_keeps_by_its_own_policy_and_a_backup_lives_on_in_its_copies(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """7 daily backups kept locally, 2 monthly ones off site, over 40 days (2026-01-01 .. 02-09)."""
    local, offsite = folders
    datastore = DatastoreFactory(name="prod-db", retention_keep_daily=7, storage_locations=["local", "offsite"])
    backups = {}
    for n in range(40):
        day = date(2026, 1, 1) + timedelta(days=n)
        backups[day] = backup(datastore, local, at3(day))
        copied(backups[day], "offsite", offsite)
    jan31, last_week = backups[date(2026, 1, 31)], [backups[date(2026, 2, d)] for d in range(3, 10)]

    with time_machine.travel(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False):
        call_command("retention", "prod-db", "--dry-run")
        out = capsys.readouterr().out
        assert "copies at offsite (eu-west): keep the last 0, daily 0, weekly 0, monthly 2" in out
        assert "newest of month 2026-01" in out
        outcome = retention_apply(datastore=datastore)

    assert len(outcome.expired) == 33 and len(outcome.copies_expired) == 38
    # Local: the newest of each of the last 7 days; off site: the newest of each of the last 2 months.
    assert stored_files(local) == sorted(b.storage_key for b in last_week)
    assert stored_files(offsite) == sorted(b.storage_key + ".age" for b in (jan31, backups[date(2026, 2, 9)]))
    # The manifests went with their files.
    assert stored_files(local, manifests=True) == sorted(
        [*(b.storage_key for b in last_week), *(b.storage_key + ".manifest.json" for b in last_week)]
    )
    # January 31st lost its primary file and stays a stored backup: a restore reads its off-site copy.
    jan31.refresh_from_db()
    assert jan31.status == BackupArtifact.Status.SUCCEEDED and jan31.expired_at and jan31.file_deleted_at
    assert [source.label for source in artifact_sources(jan31)] == [f"offsite (copy #{jan31.copies.get().pk})"]
    assert "the copies at offsite remain" in jan31.events.last().message
    # One with neither file left is expired; one kept locally and not off site is still a stored backup.
    jan2 = backups[date(2026, 1, 2)]
    jan2.refresh_from_db()
    assert jan2.status == BackupArtifact.Status.EXPIRED
    assert jan2.copies.get().status == ArtifactCopy.Status.EXPIRED and jan2.copies.get().file_deleted_at
    feb3 = backups[date(2026, 2, 3)]
    feb3.refresh_from_db()
    assert feb3.status == BackupArtifact.Status.SUCCEEDED and feb3.expired_at is None
    assert feb3.copies.get().status == ArtifactCopy.Status.EXPIRED
    # Audited like every expiry: which file, at which location.
    events = AuditEvent.objects.filter(action=AuditEvent.Action.BACKUP_EXPIRED)
    assert events.filter(details__location="offsite").count() == 38
    assert events.filter(details__location="local").count() == 33

    with time_machine.travel(datetime(2026, 2, 10, 13, tzinfo=UTC), tick=False):
        again = retention_apply_all()["prod-db"]
    assert again.expired == [] and again.copies_expired == [] and again.files_deleted == 0


def test_the_newest_verified_copy_at_each_location_is_kept_and_pins_hold_everywhere(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    local, offsite = folders
    vault = tmp_path / "vault"
    location("vault", vault, role="copy", retention_keep_last=1)
    StorageLocation.objects.filter(name="offsite").update(retention_keep_monthly=0, retention_keep_last=1)
    datastore = DatastoreFactory(name="prod-db", storage_locations=["local", "offsite", "vault"])
    old, pinned, middle, newest = (
        backup(datastore, local, at3(date(2026, 3, d)), **pin) for d, pin in ((1, {}), (2, _pin()), (3, {}), (4, {}))
    )
    for artifact in (old, pinned, middle, newest):
        copied(artifact, "offsite", offsite)
    for artifact in (old, pinned, middle):  # the newest backup's copy to the vault failed
        copied(artifact, "vault", vault)
    ArtifactCopy.objects.create(artifact=newest, location="vault", status=ArtifactCopy.Status.FAILED, error="x")

    vault_plan = next(p for p in copy_retention_previews(datastore=datastore) if p.location.name == "vault")
    middle_decision = next(d for d in vault_plan.decisions if d.artifact_id == middle.pk)
    assert middle_decision.keep and Why.NEWEST_VERIFIED in {r.why for r in middle_decision.reasons}

    retention_apply(datastore=datastore)

    states = {
        (c.location, c.artifact_id): c.status for c in ArtifactCopy.objects.exclude(status=ArtifactCopy.Status.FAILED)
    }
    assert states == {
        ("offsite", old.pk): "expired",
        ("offsite", pinned.pk): "verified",  # pinned: never expired, at any location
        ("offsite", middle.pk): "expired",
        ("offsite", newest.pk): "verified",
        ("vault", old.pk): "expired",
        ("vault", pinned.pk): "verified",
        ("vault", middle.pk): "verified",  # the vault's newest verified copy, though newer backups exist
    }
    assert stored_files(vault) == sorted(a.storage_key + ".age" for a in (pinned, middle))


def _pin() -> dict[str, Any]:
    return {"pinned_at": datetime(2026, 3, 2, tzinfo=UTC), "pinned_by": UserFactory(), "pin_reason": "legal hold"}


def test_a_locked_file_is_skipped_said_once_and_expired_after_its_date(folders: tuple[Path, Path]) -> None:
    local, offsite = folders
    StorageLocation.objects.filter(name="local").update(object_lock="compliance")
    StorageLocation.objects.filter(name="offsite").update(
        object_lock="compliance", retention_keep_monthly=0, retention_keep_last=1
    )
    datastore = DatastoreFactory(name="prod-db", retention_keep_last=1, storage_locations=["local", "offsite"])
    until = datetime(2026, 4, 20, 3, tzinfo=UTC)
    old = backup(datastore, local, at3(date(2026, 4, 1)), retain_until=until)
    new = backup(datastore, local, at3(date(2026, 4, 2)))
    old_copy = copied(old, "offsite", offsite, retain_until=until)
    copied(new, "offsite", offsite, retain_until=until + timedelta(days=1))

    with time_machine.travel(datetime(2026, 4, 10, tzinfo=UTC), tick=False):
        first = retention_apply(datastore=datastore)
    with time_machine.travel(datetime(2026, 4, 10, 1, tzinfo=UTC), tick=False):
        second = retention_apply_all()["prod-db"]

    assert first.expired == second.expired == [] and first.copies_expired == second.copies_expired == []
    assert first.locked == [
        f"backup #{old.pk} at local (primary): locked until 2026-04-20 03:00 UTC (compliance); expired after",
        f"backup #{old.pk} at offsite (copy #{old_copy.pk}): locked until 2026-04-20 03:00 UTC (compliance); "
        "expired after",
    ]
    assert second.locked == []  # said once: no event at every hourly run
    events = AuditEvent.objects.filter(action=AuditEvent.Action.BACKUP_FILE_LOCKED)
    assert sorted(e.details["location"] for e in events) == ["local", "offsite"]
    assert {e.details["until"] for e in events} == {until.isoformat()}
    old.refresh_from_db()
    old_copy.refresh_from_db()
    assert old.status == BackupArtifact.Status.SUCCEEDED and old.expired_at is None  # the row as it was
    assert old_copy.status == ArtifactCopy.Status.VERIFIED
    assert (local / old.storage_key).exists() and (offsite / old_copy.storage_key).exists()

    with time_machine.travel(until + timedelta(hours=1), tick=False):
        after = retention_apply_all()["prod-db"]
    assert after.expired == [old.pk] and after.copies_expired == [old_copy.pk] and after.files_deleted == 2
    old.refresh_from_db()
    assert old.status == BackupArtifact.Status.EXPIRED and old.file_deleted_at
    assert stored_files(local) == [new.storage_key] and stored_files(offsite) == [new.storage_key + ".age"]
    assert events.count() == 2


def test_a_storage_that_refuses_the_delete_is_left_until_the_date_it_says(folders: tuple[Path, Path]) -> None:
    """A bucket's own default retention, which the console's rows did not know: the storage refuses, the date it
    gives is recorded and said once, and the delete is not asked again before it."""
    local, _offsite = folders
    until = datetime(2026, 6, 1, tzinfo=UTC)
    StorageLocation.objects.filter(name="offsite").update(
        backend="tests.support.storage.RetainingStorage",
        options={"location": str(_offsite), "retain_until": until.isoformat()},
        retention_keep_monthly=0,
        retention_keep_last=1,
        updated_at=datetime.now(UTC),  # a new configuration: a new storage (backups.locations caches them)
    )
    datastore = DatastoreFactory(name="prod-db", storage_locations=["local", "offsite"])
    old = backup(datastore, local, at3(date(2026, 5, 1)))
    new = backup(datastore, local, at3(date(2026, 5, 2)))
    old_copy, _new_copy = copied(old, "offsite", _offsite), copied(new, "offsite", _offsite)

    from backups.locations import location_get

    storage: Any = location_get("offsite").storage()
    with time_machine.travel(datetime(2026, 5, 10, tzinfo=UTC), tick=False):
        first = retention_apply(datastore=datastore)
    with time_machine.travel(datetime(2026, 5, 10, 1, tzinfo=UTC), tick=False):
        second = retention_apply(datastore=datastore)

    assert first.copies_expired == [old_copy.pk] and first.files_deleted == 0 and first.file_errors == []
    assert first.locked == [
        f"backup #{old.pk} at offsite (copy #{old_copy.pk}): locked until 2026-06-01 00:00 UTC (compliance); "
        "expired after"
    ]
    assert second.locked == [] and second.file_errors == [] and storage.refusals == 1  # not asked again
    old_copy.refresh_from_db()
    assert old_copy.retain_until == until and old_copy.file_deleted_at is None
    assert (_offsite / old_copy.storage_key).exists()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.BACKUP_FILE_LOCKED).count() == 1

    with time_machine.travel(until + timedelta(minutes=5), tick=False):
        after = retention_apply(datastore=datastore)
    assert after.files_deleted == 1
    assert not (_offsite / old_copy.storage_key).exists()
