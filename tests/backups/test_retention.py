"""Retention: the policy (a pure function) on generated two-year histories, table-driven with the exact sets kept;
then expiry against the database and the real artifact storage."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from backups.models import BackupArtifact
from backups.retention import (
    ArtifactFacts,
    Reason,
    RetentionPolicy,
    Why,
    retention_apply,
    retention_apply_all,
    retention_plan,
    retention_preview,
)
from restores.models import RestoreRun
from tests.factories import BackupArtifactFactory, DatastoreFactory, UserFactory
from tests.support.storage import stored_files

UTC_ZONE = ZoneInfo("UTC")
MADRID = ZoneInfo("Europe/Madrid")
START, END = date(2024, 1, 1), date(2025, 12, 31)  # two years, 731 days (2024 is a leap year)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def history(at: Iterable[time] = (time(3),), skip: Iterable[date] = ()) -> list[ArtifactFacts]:
    """A backup at each of the times `at` (UTC) every day of the two years, except on the days `skip`."""
    skipped = set(skip)
    facts = []
    for day in days(START, END):
        if day in skipped:
            continue
        for moment in at:
            facts.append(ArtifactFacts(id=len(facts) + 1, taken_at=datetime.combine(day, moment, tzinfo=UTC)))
    return facts


def kept(facts: list[ArtifactFacts], policy: RetentionPolicy, tz: ZoneInfo = UTC_ZONE) -> list[datetime]:
    by_id = {f.id: f for f in facts}
    decisions = retention_plan(facts, policy, tz)
    assert len(decisions) == len(facts)
    return sorted(by_id[d.artifact_id].taken_at for d in decisions if d.keep)


def at3(*isodates: str) -> list[datetime]:
    return [datetime.combine(date.fromisoformat(d), time(3), tzinfo=UTC) for d in isodates]


MONTH_ENDS = [
    *[f"2024-{m:02d}-{d}" for m, d in zip(range(1, 13), (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), strict=True)],
    *[f"2025-{m:02d}-{d}" for m, d in zip(range(1, 13), (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), strict=True)],
]

GAP = days(date(2025, 12, 20), date(2025, 12, 26))  # beat was down for a week

GFS_CASES = [
    # (name, history, policy, expected kept: exact)
    ("last 3", history(), RetentionPolicy(keep_last=3), at3("2025-12-29", "2025-12-30", "2025-12-31")),
    ("daily 7", history(), RetentionPolicy(keep_daily=7), at3(*[f"2025-12-{d}" for d in range(25, 32)])),
    # 2025-12-31 is a Wednesday of ISO week 2026-W01, which began on Monday 12-29: the week's newest is 12-31.
    (
        "weekly 4",
        history(),
        RetentionPolicy(keep_weekly=4),
        at3("2025-12-14", "2025-12-21", "2025-12-28", "2025-12-31"),
    ),
    ("monthly 24: each month's last day", history(), RetentionPolicy(keep_monthly=24), at3(*MONTH_ENDS)),
    ("monthly 36 keeps what there is", history(), RetentionPolicy(keep_monthly=36), at3(*MONTH_ENDS)),
    (
        "last 2 + daily 5 + weekly 3 + monthly 3: the union",
        history(),
        RetentionPolicy(keep_last=2, keep_daily=5, keep_weekly=3, keep_monthly=3),
        at3(
            "2025-10-31",
            "2025-11-30",
            "2025-12-21",
            "2025-12-27",
            "2025-12-28",
            "2025-12-29",
            "2025-12-30",
            "2025-12-31",
        ),
    ),
    (
        "daily counts days that have a backup: a week-long gap reaches further back",
        history(skip=GAP),
        RetentionPolicy(keep_daily=7),
        at3("2025-12-18", "2025-12-19", "2025-12-27", "2025-12-28", "2025-12-29", "2025-12-30", "2025-12-31"),
    ),
    (
        "weekly across the gap: week 2025-W52 (12-22..28) has only 27 and 28",
        history(skip=GAP),
        RetentionPolicy(keep_weekly=3),
        at3("2025-12-19", "2025-12-28", "2025-12-31"),
    ),
    (
        "two backups a day: the day's newest is kept",
        history(at=(time(3), time(15))),
        RetentionPolicy(keep_daily=2, keep_monthly=2),
        [
            datetime(2025, 11, 30, 15, tzinfo=UTC),
            datetime(2025, 12, 30, 15, tzinfo=UTC),
            datetime(2025, 12, 31, 15, tzinfo=UTC),
        ],
    ),
    ("an empty policy keeps everything", history(), RetentionPolicy(), [f.taken_at for f in history()]),
]


@pytest.mark.parametrize(
    ("history_facts", "policy", "expected"), [c[1:] for c in GFS_CASES], ids=[c[0] for c in GFS_CASES]
)
def test_grandfather_father_son_keeps_exactly_the_expected_backups(
    history_facts: list[ArtifactFacts], policy: RetentionPolicy, expected: list[datetime]
) -> None:
    assert kept(history_facts, policy) == expected


def test_days_are_those_of_the_datastores_time_zone() -> None:
    # At 23:30 UTC it is already the next day in Madrid (00:30 in winter, 01:30 in summer).
    facts = history(at=(time(1), time(23, 30)))
    policy = RetentionPolicy(keep_daily=2)
    assert kept(facts, policy, UTC_ZONE) == [
        datetime(2025, 12, 30, 23, 30, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 30, tzinfo=UTC),
    ]
    assert kept(facts, policy, MADRID) == [  # Madrid's 12-31 is [12-30 23:00, 12-31 23:00) UTC
        datetime(2025, 12, 31, 1, 0, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 30, tzinfo=UTC),  # Madrid's 2026-01-01
    ]


def mark(facts: ArtifactFacts) -> ArtifactFacts:
    """Verified up to 2025-06-30; one pinned, one being verified, the newest corrupt."""
    day = facts.taken_at.date()
    changes: dict[str, Any] = {"verified": day <= date(2025, 6, 30)}
    if day == date(2024, 2, 10):
        changes["pin_reason"] = "legal hold (case 12)"
    if day == date(2025, 7, 2):
        changes["verifying"] = True
    if day == date(2025, 12, 31):
        changes["corrupt"] = True
    return replace(facts, **changes)


def test_each_backup_says_why_it_is_kept_or_expired() -> None:
    facts = [mark(f) for f in history()]
    ids = {f.taken_at.date().isoformat(): f.id for f in facts}
    plan = retention_plan(facts, RetentionPolicy(keep_last=3, keep_monthly=2), UTC_ZONE)
    reasons = {d.artifact_id: d.reasons for d in plan}

    assert reasons[ids["2024-02-10"]] == (Reason(Why.PINNED, "legal hold (case 12)"),)
    assert reasons[ids["2025-06-30"]] == (Reason(Why.NEWEST_VERIFIED),)
    assert reasons[ids["2025-06-29"]] == (Reason(Why.OUTSIDE),)  # verified, but not the newest verified
    assert reasons[ids["2025-07-02"]] == (Reason(Why.VERIFYING),)
    # The corrupt newest fills no slot: the 3 newest and December's newest are the ones before it.
    assert reasons[ids["2025-12-31"]] == (Reason(Why.CORRUPT),)
    assert reasons[ids["2025-12-30"]] == (Reason(Why.LAST, "3"), Reason(Why.MONTHLY, "2025-12"))
    assert reasons[ids["2025-12-28"]] == (Reason(Why.LAST, "3"),)
    assert reasons[ids["2025-12-27"]] == (Reason(Why.OUTSIDE),)
    assert reasons[ids["2025-11-30"]] == (Reason(Why.MONTHLY, "2025-11"),)
    assert sorted(d.artifact_id for d in plan if d.keep) == sorted(
        ids[day]
        for day in ("2024-02-10", "2025-06-30", "2025-07-02", "2025-11-30", "2025-12-28", "2025-12-29", "2025-12-30")
    )
    texts = {d.artifact_id: d.reasons_text for d in plan}
    assert texts[ids["2025-12-30"]] == "one of the 3 newest; newest of month 2025-12"
    assert texts[ids["2024-02-10"]] == "pinned: legal hold (case 12)"
    assert texts[ids["2025-12-31"]] == "corrupt: counts for no rule"


def test_a_backup_used_by_a_restore_is_kept() -> None:
    facts = history()
    old = facts[10]
    facts[10] = replace(old, used_by="restore #5")
    decisions = {d.artifact_id: d for d in retention_plan(facts, RetentionPolicy(keep_last=1), UTC_ZONE)}
    assert decisions[old.id].reasons == (Reason(Why.RESTORE, "restore #5"),)
    assert str(decisions[old.id].reasons[0]) == "used by restore #5"


# --- expiry against the database and the storage -----------------------------------------------------------------


def stored_backup(datastore: Any, artifact_dir: Path, taken: datetime, **fields: Any) -> BackupArtifact:
    key = f"{datastore.name}/{taken:%Y%m%dT%H%M}.dump"
    path = artifact_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PGDMP fake archive")
    return BackupArtifactFactory(
        datastore=datastore,
        status=BackupArtifact.Status.SUCCEEDED,
        created_at=taken,
        started_at=taken,
        finished_at=taken + timedelta(minutes=1),
        storage_key=key,
        size_bytes=18,
        **fields,
    )


@pytest.mark.django_db
def test_expiry_deletes_the_file_keeps_the_row_and_never_touches_protected_backups(artifact_dir: Path) -> None:
    datastore = DatastoreFactory(name="prod-db", retention_keep_last=2)
    base = datetime(2026, 1, 1, 3, tzinfo=UTC)
    verified_old = stored_backup(datastore, artifact_dir, base, verification=BackupArtifact.Verification.VERIFIED)
    pinned = stored_backup(
        datastore, artifact_dir, base + timedelta(days=1), pinned_at=base, pinned_by=UserFactory(), pin_reason="audit"
    )
    in_restore = stored_backup(datastore, artifact_dir, base + timedelta(days=2))
    doomed = stored_backup(datastore, artifact_dir, base + timedelta(days=3))
    already_gone = stored_backup(datastore, artifact_dir, base + timedelta(days=4))
    (artifact_dir / already_gone.storage_key).unlink()
    newest = [stored_backup(datastore, artifact_dir, base + timedelta(days=d)) for d in (5, 6)]
    failed = BackupArtifactFactory(datastore=datastore, status=BackupArtifact.Status.FAILED, created_at=base)
    RestoreRun.objects.create(
        artifact=in_restore,
        artifact_sha256="x",
        target_kind=RestoreRun.TargetKind.NEW_DATABASE,
        target_datastore=datastore,
        new_database_name="check",
        status=RestoreRun.Status.AWAITING_APPROVAL,
        triggered_by=UserFactory(),
        reason="check",
    )

    outcome = retention_apply(datastore=datastore)

    assert sorted(outcome.expired) == [doomed.pk, already_gone.pk]
    assert outcome.files_deleted == 2 and outcome.file_errors == []
    for artifact in (doomed, already_gone):
        artifact.refresh_from_db()
        assert artifact.status == BackupArtifact.Status.EXPIRED
        assert artifact.expired_at and artifact.file_deleted_at and artifact.storage_key  # history stays
        assert artifact.finished_at == artifact.started_at + timedelta(minutes=1)  # its own timings are kept
        assert [e.new_status for e in artifact.events.all()][-1] == "expired"
    assert stored_files(artifact_dir) == sorted(a.storage_key for a in (verified_old, pinned, in_restore, *newest))
    failed.refresh_from_db()
    assert failed.status == BackupArtifact.Status.FAILED
    events = AuditEvent.objects.filter(action=AuditEvent.Action.BACKUP_EXPIRED)
    assert sorted(int(e.object_id) for e in events) == sorted(outcome.expired)
    assert events.first().details["reasons"] == ["outside"]

    again = retention_apply(datastore=datastore)  # nothing left to do
    assert again.expired == [] and again.files_deleted == 0


@pytest.mark.django_db
def test_a_file_the_storage_cannot_delete_is_retried_on_the_next_run(artifact_dir: Path) -> None:
    datastore = DatastoreFactory(name="prod-db", retention_keep_last=1)
    old = stored_backup(datastore, artifact_dir, datetime(2026, 1, 1, tzinfo=UTC))
    stored_backup(datastore, artifact_dir, datetime(2026, 1, 2, tzinfo=UTC))
    # A real storage failure: the key is now a folder that is not empty, which the storage cannot delete.
    stuck = artifact_dir / old.storage_key
    stuck.unlink()
    (stuck / "inside").mkdir(parents=True)

    first = retention_apply(datastore=datastore)
    old.refresh_from_db()
    assert first.expired == [old.pk] and first.files_deleted == 0
    assert first.file_errors and first.file_errors[0].startswith(f"backup #{old.pk}: ")
    assert old.status == BackupArtifact.Status.EXPIRED and old.file_deleted_at is None

    (stuck / "inside").rmdir()
    outcomes = retention_apply_all()
    old.refresh_from_db()
    assert outcomes["prod-db"].files_deleted == 1 and old.file_deleted_at is not None
    assert not stuck.exists()


@pytest.mark.django_db
def test_the_command_prints_the_plan_and_applies_it_only_without_dry_run(
    artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datastore = DatastoreFactory(name="prod-db", retention_keep_daily=1, backup_schedule_timezone="Europe/Madrid")
    old = stored_backup(datastore, artifact_dir, datetime(2026, 1, 1, 3, tzinfo=UTC))
    new = stored_backup(datastore, artifact_dir, datetime(2026, 1, 2, 3, tzinfo=UTC))

    call_command("retention", "prod-db", "--dry-run")
    out = capsys.readouterr().out
    assert "prod-db: keep the last 0, daily 1, weekly 0, monthly 0 (days in Europe/Madrid)" in out
    assert f"keep   #{new.pk:<6} 2026-01-02 04:00 CET  newest of day 2026-01-02" in out
    assert f"EXPIRE #{old.pk:<6} 2026-01-01 04:00 CET  outside the policy" in out
    assert "1 to expire, 1 kept" in out and "dry run: nothing was changed" in out
    old.refresh_from_db()
    assert old.status == BackupArtifact.Status.SUCCEEDED

    call_command("retention", "prod-db")
    assert f"expired: #{old.pk}; stored files deleted: 1" in capsys.readouterr().out
    old.refresh_from_db()
    assert old.status == BackupArtifact.Status.EXPIRED


@pytest.mark.django_db
def test_the_preview_of_a_policy_not_saved_yet_changes_nothing(artifact_dir: Path) -> None:
    datastore = DatastoreFactory(name="prod-db")
    backups = [stored_backup(datastore, artifact_dir, datetime(2026, 1, d, tzinfo=UTC)) for d in (1, 2, 3)]
    preview = retention_preview(datastore=datastore, policy=RetentionPolicy(keep_last=1))
    assert [d.artifact_id for d in preview.to_expire] == [backups[1].pk, backups[0].pk]
    assert retention_apply(datastore=datastore).expired == []  # the saved policy (none) keeps everything
