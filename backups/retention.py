"""Retention: which stored backups a datastore's policy keeps, and why; expiring the rest.

`retention_plan` is a pure function (facts about backups in, one decision with its reasons per backup out): the
datastore page's preview, `manage.py retention --dry-run` and the periodic expiry all use it, so what an operator
is shown is what runs.

The policy is grandfather-father-son, rule by rule as restic's `forget` reads it: keep the newest N backups; the
newest backup of each of the last N days (weeks, months) that have one; a backup is kept if any rule keeps it.
Days, weeks (ISO, Monday to Sunday) and months are those of the datastore's schedule time zone.

Each copy location applies its own policy (StorageLocation.retention_keep_*) to the verified copies there, with the
same plan: "the newest verified" is then the newest verified copy at that location. A file under Object Lock is
never asked to be deleted before its date.

Never expired, whatever the policy: pinned backups (anywhere), the newest verified backup (at each location),
backups a restore is using or waiting to use, backups being verified. A corrupt backup fills no rule's slot (it is
not a backup anyone can restore), so it is expired unless something above protects it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import audit_record
from backups import artifacts
from backups.locations import Location, LocationUnavailable, location_get
from backups.manifests import manifest_key
from backups.models import ArtifactCopy, BackupArtifact, BackupArtifactEvent
from backups.signals import artifacts_in_use
from dr_console.jobs import IllegalTransition, job_transition
from inventory.models import Datastore, StorageLocation

logger = logging.getLogger(__name__)
Status = BackupArtifact.Status
Verification = BackupArtifact.Verification


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    @property
    def active(self) -> bool:
        """A policy of all zeros is no policy: everything is kept (it never means "keep nothing")."""
        return any((self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly))

    @classmethod
    def of(cls, datastore: Datastore) -> RetentionPolicy:
        return cls(
            keep_last=datastore.retention_keep_last,
            keep_daily=datastore.retention_keep_daily,
            keep_weekly=datastore.retention_keep_weekly,
            keep_monthly=datastore.retention_keep_monthly,
        )


@dataclass(frozen=True)
class ArtifactFacts:
    """What the policy needs to know about one stored backup."""

    id: int
    taken_at: datetime  # its recovery point
    verified: bool = False
    corrupt: bool = False
    verifying: bool = False
    pin_reason: str | None = None  # None: not pinned
    used_by: str = ""  # e.g. "restore #5": a restore running or waiting to run from it


class Why(StrEnum):
    # kept
    LAST = "last"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    PINNED = "pinned"
    NEWEST_VERIFIED = "newest_verified"
    RESTORE = "restore"
    VERIFYING = "verifying"
    NO_POLICY = "no_policy"
    # expired
    OUTSIDE = "outside"
    CORRUPT = "corrupt"


@dataclass(frozen=True, order=True)
class Reason:
    why: Why
    detail: str = ""  # the period ("2026-03-10", "2026-W11", "2026-03"), the rank, the pin's reason, the restore

    def __str__(self) -> str:
        texts: dict[Why, Callable[[], str]] = {
            Why.LAST: lambda: _("one of the %(count)s newest") % {"count": self.detail},
            Why.DAILY: lambda: _("newest of day %(period)s") % {"period": self.detail},
            Why.WEEKLY: lambda: _("newest of week %(period)s") % {"period": self.detail},
            Why.MONTHLY: lambda: _("newest of month %(period)s") % {"period": self.detail},
            Why.PINNED: lambda: _("pinned: %(reason)s") % {"reason": self.detail},
            Why.NEWEST_VERIFIED: lambda: _("newest verified backup"),
            Why.RESTORE: lambda: _("used by %(restore)s") % {"restore": self.detail},
            Why.VERIFYING: lambda: _("being verified"),
            Why.NO_POLICY: lambda: _("no retention policy"),
            Why.OUTSIDE: lambda: _("outside the policy"),
            Why.CORRUPT: lambda: _("corrupt: counts for no rule"),
        }
        return texts[self.why]()


@dataclass(frozen=True)
class Decision:
    artifact_id: int
    keep: bool
    reasons: tuple[Reason, ...]

    @property
    def reasons_text(self) -> str:
        return "; ".join(str(reason) for reason in self.reasons)


PERIODS: tuple[tuple[Why, str, Callable[[datetime], str]], ...] = (
    (Why.DAILY, "keep_daily", lambda t: t.date().isoformat()),
    (Why.WEEKLY, "keep_weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    (Why.MONTHLY, "keep_monthly", lambda t: f"{t.year}-{t.month:02d}"),
)


def retention_plan(facts: Iterable[ArtifactFacts], policy: RetentionPolicy, tz: ZoneInfo) -> list[Decision]:
    """One decision per backup, newest first. Pure: no database, no clock."""
    ordered = sorted(facts, key=lambda a: (a.taken_at, a.id), reverse=True)
    reasons: defaultdict[int, list[Reason]] = defaultdict(list)
    newest_verified = next((a for a in ordered if a.verified and not a.corrupt), None)
    for artifact in ordered:
        if artifact.pin_reason is not None:
            reasons[artifact.id].append(Reason(Why.PINNED, artifact.pin_reason))
        if artifact is newest_verified:
            reasons[artifact.id].append(Reason(Why.NEWEST_VERIFIED))
        if artifact.used_by:
            reasons[artifact.id].append(Reason(Why.RESTORE, artifact.used_by))
        if artifact.verifying:
            reasons[artifact.id].append(Reason(Why.VERIFYING))
    if not policy.active:
        for artifact in ordered:
            reasons[artifact.id].append(Reason(Why.NO_POLICY))
    good = [a for a in ordered if not a.corrupt]
    for artifact in good[: policy.keep_last]:
        reasons[artifact.id].append(Reason(Why.LAST, str(policy.keep_last)))
    local: dict[int, datetime] = {}  # each backup's local time, computed once for the three rules
    for why, count_name, period_of in PERIODS:
        wanted = getattr(policy, count_name)
        seen: set[str] = set()
        for artifact in good:  # newest first: the first backup met in a period is that period's newest
            if len(seen) >= wanted:
                break
            if artifact.id not in local:
                local[artifact.id] = artifact.taken_at.astimezone(tz)
            period = period_of(local[artifact.id])
            if period not in seen:
                seen.add(period)
                reasons[artifact.id].append(Reason(why, period))
    return [
        Decision(a.id, True, tuple(reasons[a.id]))
        if a.id in reasons
        else Decision(a.id, False, CORRUPT if a.corrupt else OUTSIDE)
        for a in ordered
    ]


# Shared by every expired backup: a first run on a long history builds thousands of decisions.
OUTSIDE = (Reason(Why.OUTSIDE),)
CORRUPT = (Reason(Why.CORRUPT),)


# --- the database side -------------------------------------------------------------------------------------------


PREVIEW_EXPIRED_SHOWN = 200  # a first policy on a long history may expire thousands: the page lists the newest
# With no policy (or a generous one) every backup is kept: thousands of rows drew the page in a second. The newest
# kept ones are listed up to this, the count of the rest said.
PREVIEW_KEPT_SHOWN = 200


@dataclass
class RetentionPreview:
    """A plan with the backups it is about, for the page and the command."""

    datastore: Datastore
    policy: RetentionPolicy
    decisions: list[Decision]
    artifacts: dict[int, BackupArtifact] = field(default_factory=dict)

    @property
    def to_expire(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    @property
    def to_keep(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    def rows(self) -> list[tuple[BackupArtifact, Decision]]:
        return [(self.artifacts[d.artifact_id], d) for d in self.decisions]

    def shown_rows(self) -> list[tuple[BackupArtifact, Decision]]:
        """What a page lists: the newest kept backups up to PREVIEW_KEPT_SHOWN, and the newest expired ones up to
        PREVIEW_EXPIRED_SHOWN (decisions are newest first)."""
        rows, kept, expired = [], 0, 0
        for decision in self.decisions:
            if decision.keep:
                kept += 1
                if kept > PREVIEW_KEPT_SHOWN:
                    continue
            else:
                expired += 1
                if expired > PREVIEW_EXPIRED_SHOWN:
                    continue
            rows.append((self.artifacts[decision.artifact_id], decision))
        return rows

    @property
    def hidden_count(self) -> int:
        return max(0, len(self.to_expire) - PREVIEW_EXPIRED_SHOWN)

    @property
    def hidden_kept_count(self) -> int:
        return max(0, len(self.to_keep) - PREVIEW_KEPT_SHOWN)


def _artifacts_in_use(artifact_ids: Sequence[int] | None, datastore: Datastore) -> dict[int, str]:
    """Which of the datastore's backups a job above backups is reading or about to read ("restore #5"): the apps
    that read backups answer through backups.signals.artifacts_in_use (backups may not import them)."""
    used: dict[int, str] = {}
    answers = artifacts_in_use.send(sender=BackupArtifact, datastore=datastore, artifact_ids=artifact_ids)
    for _receiver, answer in answers:
        uses: dict[int, str] = answer  # type: ignore[assignment]  # django-stubs types every answer as str | None
        for artifact_id, label in uses.items():
            used.setdefault(artifact_id, label)
    return used


def _facts(artifact: BackupArtifact, used_by: dict[int, str]) -> ArtifactFacts:
    return ArtifactFacts(
        id=artifact.pk,
        taken_at=artifact.started_at or artifact.created_at,
        verified=artifact.verification == Verification.VERIFIED,
        corrupt=artifact.verification == Verification.CORRUPT,
        verifying=artifact.verification == Verification.VERIFYING,
        pin_reason=artifact.pin_reason if artifact.pinned_at else None,
        used_by=used_by.get(artifact.pk, ""),
    )


def retention_preview(*, datastore: Datastore, policy: RetentionPolicy | None = None) -> RetentionPreview:
    """What `policy` (default: the datastore's own) would do now to the datastore's stored backups."""
    policy = policy or RetentionPolicy.of(datastore)
    stored = list(_primary_files(datastore).select_related("pinned_by"))
    used_by = _artifacts_in_use(None, datastore)
    zone = ZoneInfo(datastore.backup_schedule_timezone)
    decisions = retention_plan([_facts(a, used_by) for a in stored], policy, zone)
    by_id = {a.pk: a for a in stored}
    return RetentionPreview(datastore=datastore, policy=policy, decisions=decisions, artifacts=by_id)


@dataclass
class CopyRetentionPreview:
    """What a copy location's own policy would do now to the datastore's verified copies there. The decisions are
    the same GFS plan as the primary's (`retention_plan`), one per copy, by the id of the backup it copies."""

    datastore: Datastore
    location: Location
    policy: RetentionPolicy
    decisions: list[Decision]
    copies: dict[int, ArtifactCopy] = field(default_factory=dict)  # by backup id (one verified copy per location)

    @property
    def to_expire(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    @property
    def to_keep(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    def rows(self) -> list[tuple[ArtifactCopy, Decision]]:
        return [(self.copies[d.artifact_id], d) for d in self.decisions]

    def shown_rows(self) -> list[tuple[ArtifactCopy, Decision]]:
        kept = [row for row in self.rows() if row[1].keep][:PREVIEW_KEPT_SHOWN]
        expired = [row for row in self.rows() if not row[1].keep][:PREVIEW_EXPIRED_SHOWN]
        return sorted([*kept, *expired], key=lambda row: self.decisions.index(row[1]))


def _copy_facts(copy: ArtifactCopy, used_by: dict[int, str]) -> ArtifactFacts:
    """A verified copy as the policy sees it: the recovery point and the pin are its backup's."""
    artifact = copy.artifact
    return ArtifactFacts(
        id=artifact.pk,
        taken_at=artifact.taken_at,
        verified=True,
        pin_reason=artifact.pin_reason if artifact.pinned_at else None,
        used_by=used_by.get(artifact.pk, ""),
    )


def copy_retention_previews(*, datastore: Datastore) -> list[CopyRetentionPreview]:
    """One preview per copy location of the datastore (a location no longer configured is left alone: its copies
    are not touched)."""
    previews = []
    used_by: dict[int, str] | None = None
    zone = ZoneInfo(datastore.backup_schedule_timezone)
    for name in datastore.copy_location_names:
        try:
            location = location_get(name)
        except LocationUnavailable:
            continue
        verified = list(
            ArtifactCopy.objects.filter(
                artifact__datastore=datastore, location=name, status=ArtifactCopy.Status.VERIFIED
            ).select_related("artifact")
        )
        if used_by is None:
            used_by = _artifacts_in_use(None, datastore)
        policy = RetentionPolicy(*location.retention)
        decisions = retention_plan([_copy_facts(c, used_by) for c in verified], policy, zone)
        copies = {c.artifact_id: c for c in verified}
        previews.append(CopyRetentionPreview(datastore, location, policy, decisions, copies))
    return previews


@dataclass
class RetentionOutcome:
    expired: list[int] = field(default_factory=list)  # backups whose primary file the policy expired
    copies_expired: list[int] = field(default_factory=list)  # copies a location's policy expired
    files_deleted: int = 0
    file_errors: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # files found under Object Lock this run, said for the first time


def retention_apply(*, datastore: Datastore, actor_label: str = "retention") -> RetentionOutcome:
    """Expire what the policies do not keep, then delete the expired files.

    1. The primary location: the datastore's policy (`retention_preview`). A backup it does not keep loses its
       primary file; the row becomes `expired` unless verified copies of it remain elsewhere, which it keeps (it
       stays succeeded, restorable from them; `expired_at` says the primary file expired).
    2. Each copy location: its own policy over the verified copies there (`copy_retention_previews`). A copy it
       does not keep becomes `expired`; the backup with it once its primary file and every copy are gone.
    3. Each expiry in its own transaction, after locking the row and checking again what may have changed since
       the plan (pinned, verified, a restore asked for it, a newer verified copy). A file still under Object Lock
       is skipped before anything changes, said once (an audit event per file and date), and expired at the first
       run after its date.
    4. The files (and the manifests beside them) are deleted after the rows are committed. A file already gone is
       fine; a storage that fails leaves the file for the next run (file_deleted_at stays empty); a storage that
       refuses because of a lock the row did not know records the date, said once, and the file waits for it.
    """
    outcome = RetentionOutcome()
    preview = retention_preview(datastore=datastore)
    if preview.policy.active:
        for decision in preview.to_expire:
            if _expire_one(decision, datastore, actor_label, outcome):
                outcome.expired.append(decision.artifact_id)
    for copy_preview in copy_retention_previews(datastore=datastore):
        if not copy_preview.policy.active:
            continue
        for decision in copy_preview.to_expire:
            copy = copy_preview.copies[decision.artifact_id]
            if _expire_copy(copy.pk, decision, copy_preview.location, datastore, actor_label, outcome):
                outcome.copies_expired.append(copy.pk)
    _delete_primary_files(datastore, actor_label, outcome)
    _delete_copy_files(datastore, actor_label, outcome)
    return outcome


def _expire_one(decision: Decision, datastore: Datastore, actor_label: str, outcome: RetentionOutcome) -> bool:
    with transaction.atomic():
        artifact = BackupArtifact.objects.select_for_update().filter(pk=decision.artifact_id).first()
        if artifact is None or artifact.status != Status.SUCCEEDED or artifact.expired_at is not None:
            return False
        facts = _facts(artifact, _artifacts_in_use([artifact.pk], datastore))
        newer_verified = _primary_files(datastore).filter(
            Q(created_at__gt=artifact.created_at) | Q(created_at=artifact.created_at, pk__gt=artifact.pk),
            verification=Verification.VERIFIED,
        )
        if facts.pin_reason is not None or facts.used_by or facts.verifying:
            return False
        if facts.verified and not newer_verified.exists():
            return False
        if _still_locked(artifact, artifact, artifact.location, artifact.storage_key, actor_label, outcome):
            return False
        now = timezone.now()
        message = f"expired by the retention policy: {decision.reasons_text}"
        remaining = sorted(
            artifact.copies.filter(status=ArtifactCopy.Status.VERIFIED).values_list("location", flat=True)
        )
        if remaining:
            # Its copies stay, and a restore reads them: the backup is still a stored one, without its primary file.
            BackupArtifact.objects.filter(pk=artifact.pk).update(expired_at=now)
            BackupArtifactEvent.objects.create(
                job=artifact,
                old_status=artifact.status,
                new_status=artifact.status,
                message=f"primary file at {artifact.location} {message}; the copies at {', '.join(remaining)} remain",
            )
        else:
            try:
                job_transition(
                    BackupArtifact, pk=artifact.pk, to=Status.EXPIRED, event_message=message, fields={"expired_at": now}
                )
            except IllegalTransition:
                return False
        audit_record(
            action=AuditEvent.Action.BACKUP_EXPIRED,
            actor_label=actor_label,
            obj=artifact,
            details={
                "datastore": datastore.name,
                "location": artifact.location,
                "reasons": [reason.why.value for reason in decision.reasons],
                "storage_key": artifact.storage_key,
                "copies_remain": remaining,
            },
        )
    return True


def _expire_copy(
    copy_id: int,
    decision: Decision,
    location: Location,
    datastore: Datastore,
    actor_label: str,
    outcome: RetentionOutcome,
) -> bool:
    with transaction.atomic():
        copy = ArtifactCopy.objects.select_for_update().select_related("artifact").filter(pk=copy_id).first()
        if copy is None or copy.status != ArtifactCopy.Status.VERIFIED:
            return False
        artifact = BackupArtifact.objects.select_for_update().get(pk=copy.artifact_id)
        facts = _copy_facts(copy, _artifacts_in_use([artifact.pk], datastore))
        if facts.pin_reason is not None or facts.used_by:
            return False
        newer_verified = ArtifactCopy.objects.filter(
            Q(artifact__created_at__gt=artifact.created_at)
            | Q(artifact__created_at=artifact.created_at, artifact__pk__gt=artifact.pk),
            artifact__datastore=datastore,
            location=copy.location,
            status=ArtifactCopy.Status.VERIFIED,
        )
        if not newer_verified.exists():  # the newest verified copy at each location stays, whatever the policy
            return False
        if _still_locked(copy, artifact, copy.location, copy.storage_key, actor_label, outcome, copy_id=copy.pk):
            return False
        now = timezone.now()
        message = f"expired by the retention policy of {location.name}: {decision.reasons_text}"
        try:
            job_transition(
                ArtifactCopy,
                pk=copy.pk,
                to=ArtifactCopy.Status.EXPIRED,
                event_message=message,
                fields={"expired_at": now},
            )
        except IllegalTransition:
            return False
        audit_record(
            action=AuditEvent.Action.BACKUP_EXPIRED,
            actor_label=actor_label,
            obj=artifact,
            details={
                "datastore": datastore.name,
                "location": copy.location,
                "copy": copy.pk,
                "reasons": [reason.why.value for reason in decision.reasons],
                "storage_key": copy.storage_key,
            },
        )
        last_file = (
            artifact.status == Status.SUCCEEDED
            and artifact.expired_at is not None
            and not artifact.copies.filter(status=ArtifactCopy.Status.VERIFIED).exists()
        )
        if last_file:  # its primary file expired earlier; with its last copy, nothing of it is stored any more
            with contextlib.suppress(IllegalTransition):
                job_transition(
                    BackupArtifact,
                    pk=artifact.pk,
                    to=Status.EXPIRED,
                    event_message=f"its last copy ({copy.location}, copy #{copy.pk}) expired",
                )
    return True


def _primary_files(datastore: Datastore) -> QuerySet[BackupArtifact]:
    """The datastore's backups whose primary file the policy has not expired: what the primary policy plans over."""
    return BackupArtifact.objects.filter(datastore=datastore, status=Status.SUCCEEDED, expired_at__isnull=True)


def _still_locked(
    row: BackupArtifact | ArtifactCopy,
    artifact: BackupArtifact,
    location_name: str,
    key: str,
    actor_label: str,
    outcome: RetentionOutcome,
    *,
    copy_id: int | None = None,
    until: datetime | None = None,
    mode: str = "",
) -> bool:
    """Whether the file is still under Object Lock (its row's retain_until, or the `until` a storage answered):
    then it is said, once per file and date, as an audit event and in the outcome."""
    until = until or row.retain_until
    if until is None or until <= timezone.now():
        return False
    if not mode:
        try:  # a location whose lock was turned off since keeps the dates its files were written with
            mode = location_get(location_name).object_lock
        except LocationUnavailable:
            mode = StorageLocation.ObjectLock.OFF
        if mode == StorageLocation.ObjectLock.OFF:
            mode = "object lock"
    where = f"{location_name} (copy #{copy_id})" if copy_id else f"{location_name} (primary)"
    said = AuditEvent.objects.filter(
        action=AuditEvent.Action.BACKUP_FILE_LOCKED,
        object_type=artifact._meta.label_lower,
        object_id=str(artifact.pk),
        details__location=location_name,
        details__storage_key=key,
        details__until=until.isoformat(),
    ).exists()
    if said:
        return True
    text = f"backup #{artifact.pk} at {where}: locked until {until:%Y-%m-%d %H:%M} UTC ({mode}); expired after"
    logger.info("retention: %s", text)
    outcome.locked.append(text)
    audit_record(
        action=AuditEvent.Action.BACKUP_FILE_LOCKED,
        actor_label=actor_label,
        obj=artifact,
        details={
            "location": location_name,
            "copy": copy_id,
            "storage_key": key,
            "until": until.isoformat(),
            "mode": mode,
        },
    )
    return True


def _unlocked_now(rows: QuerySet[Any]) -> QuerySet[Any]:
    """Files whose lock (if any) has passed: a locked one waits for its date without a call to the storage."""
    return rows.filter(Q(retain_until__isnull=True) | Q(retain_until__lte=timezone.now()))


def _delete_files(location_name: str, key: str) -> None:
    """The file and the manifest beside it (backups.manifests), at its location."""
    location = location_get(location_name)
    artifacts.delete_file(location, key)
    artifacts.delete_file(location, manifest_key(key))


def _delete_primary_files(datastore: Datastore, actor_label: str, outcome: RetentionOutcome) -> None:
    pending = _unlocked_now(
        BackupArtifact.objects.filter(datastore=datastore, expired_at__isnull=False, file_deleted_at__isnull=True)
    )
    for artifact in pending.only("pk", "location", "storage_key", "retain_until"):
        try:
            if artifact.storage_key:
                _delete_files(artifact.location, artifact.storage_key)  # deleting a missing file is no error
        except artifacts.FileLocked as exc:
            BackupArtifact.objects.filter(pk=artifact.pk).update(retain_until=exc.until)
            _still_locked(
                artifact, artifact, artifact.location, artifact.storage_key, actor_label, outcome,
                until=exc.until, mode=exc.mode,
            )  # fmt: skip
            continue
        except Exception as exc:  # any storage backend's error: the next run tries again
            logger.warning("backup #%s: could not delete %s: %s", artifact.pk, artifact.storage_key, exc)
            outcome.file_errors.append(f"backup #{artifact.pk}: {exc}")
            continue
        BackupArtifact.objects.filter(pk=artifact.pk).update(file_deleted_at=timezone.now())
        outcome.files_deleted += 1


def _delete_copy_files(datastore: Datastore, actor_label: str, outcome: RetentionOutcome) -> None:
    pending = _unlocked_now(
        ArtifactCopy.objects.filter(
            artifact__datastore=datastore, status=ArtifactCopy.Status.EXPIRED, file_deleted_at__isnull=True
        ).select_related("artifact")
    )
    for copy in pending:
        try:
            if copy.storage_key:
                _delete_files(copy.location, copy.storage_key)
        except artifacts.FileLocked as exc:
            ArtifactCopy.objects.filter(pk=copy.pk).update(retain_until=exc.until)
            _still_locked(
                copy, copy.artifact, copy.location, copy.storage_key, actor_label, outcome,
                copy_id=copy.pk, until=exc.until, mode=exc.mode,
            )  # fmt: skip
            continue
        except Exception as exc:  # any storage backend's error (or a location gone): the next run tries again
            logger.warning("copy #%s: could not delete %s at %s: %s", copy.pk, copy.storage_key, copy.location, exc)
            outcome.file_errors.append(f"copy #{copy.pk} at {copy.location}: {exc}")
            continue
        ArtifactCopy.objects.filter(pk=copy.pk).update(file_deleted_at=timezone.now())
        outcome.files_deleted += 1


def retention_apply_all(*, actor_label: str = "retention") -> dict[str, RetentionOutcome]:
    """The periodic run: every datastore with a policy, with copy locations (theirs have their own), or with an
    expired file still to delete."""
    outcomes = {}
    pending_files = Q(artifacts__expired_at__isnull=False, artifacts__file_deleted_at__isnull=True)
    pending_copies = Q(artifacts__copies__status=ArtifactCopy.Status.EXPIRED, artifacts__copies__file_deleted_at=None)
    with_policy = (
        Q(retention_keep_last__gt=0)
        | Q(retention_keep_daily__gt=0)
        | Q(retention_keep_weekly__gt=0)
        | Q(retention_keep_monthly__gt=0)
    )
    with_copies = ~Q(storage_locations=[])
    wanted = Datastore.objects.filter(with_policy | with_copies | pending_files | pending_copies).distinct()
    for datastore in wanted:
        outcomes[datastore.name] = retention_apply(datastore=datastore, actor_label=actor_label)
    return outcomes


# --- what people do: pin, unpin, change the policy ------------------------------------------------------------------


class RetentionRefused(Exception):
    """A pin, unpin or policy change that cannot be done; nothing was changed."""


PIN_PERM = "backups.pin_backupartifact"
POLICY_PERM = "inventory.change_datastore_retention"


def _require(user: User, perm: str, refusal: str) -> None:
    """`refusal` names the user as %(user)s."""
    if not user.is_active or not user.has_perm(perm):
        raise RetentionRefused(refusal % {"user": user.get_username()})


def backup_artifact_pin(*, artifact: BackupArtifact, user: User, reason: str, client_ip: str | None = None) -> None:
    """Pin a stored backup: the retention policy never expires it while it is pinned."""
    _require(user, PIN_PERM, _("%(user)s may not pin backups (needs the operator role)"))
    reason = " ".join(reason.split())
    if not reason:
        raise RetentionRefused(_("say why this backup must be kept (e.g. legal hold)"))
    with transaction.atomic():
        pinned = BackupArtifact.objects.filter(pk=artifact.pk, status=Status.SUCCEEDED, pinned_at__isnull=True).update(
            pinned_at=timezone.now(), pinned_by=user, pin_reason=reason[:500]
        )
        if not pinned:
            current = BackupArtifact.objects.get(pk=artifact.pk)
            if current.pinned_at:
                raise RetentionRefused(_("backup #%(id)s is already pinned") % {"id": artifact.pk})
            raise RetentionRefused(
                _("backup #%(id)s is %(status)s; only a stored backup can be pinned")
                % {"id": artifact.pk, "status": current.get_status_display().lower()}
            )
        audit_record(
            action=AuditEvent.Action.BACKUP_PINNED,
            actor=user,
            obj=artifact,
            client_ip=client_ip,
            details={"reason": reason},
        )


def backup_artifact_unpin(*, artifact: BackupArtifact, user: User, client_ip: str | None = None) -> None:
    _require(user, PIN_PERM, _("%(user)s may not unpin backups (needs the operator role)"))
    with transaction.atomic():
        current = BackupArtifact.objects.select_for_update().get(pk=artifact.pk)
        if current.pinned_at is None:
            raise RetentionRefused(_("backup #%(id)s is not pinned") % {"id": artifact.pk})
        audit_record(
            action=AuditEvent.Action.BACKUP_UNPINNED,
            actor=user,
            obj=artifact,
            client_ip=client_ip,
            details={
                "pinned_by": current.pinned_by.get_username() if current.pinned_by else "",
                "reason": current.pin_reason,
            },
        )
        BackupArtifact.objects.filter(pk=artifact.pk).update(pinned_at=None, pinned_by=None, pin_reason="")


def datastore_retention_save(
    *, datastore: Datastore, policy: RetentionPolicy, user: User, client_ip: str | None = None
) -> bool:
    """Save a datastore's retention policy. False when it is the policy it already had."""
    _require(user, POLICY_PERM, _("%(user)s may not change retention policies (needs the operator role)"))
    before = RetentionPolicy.of(datastore)
    if before == policy:
        return False
    with transaction.atomic():
        Datastore.objects.filter(pk=datastore.pk).update(
            retention_keep_last=policy.keep_last,
            retention_keep_daily=policy.keep_daily,
            retention_keep_weekly=policy.keep_weekly,
            retention_keep_monthly=policy.keep_monthly,
            updated_at=timezone.now(),
        )
        audit_record(
            action=AuditEvent.Action.RETENTION_CHANGED,
            actor=user,
            obj=datastore,
            client_ip=client_ip,
            details={"before": asdict(before), "after": asdict(policy)},
        )
    datastore.refresh_from_db()
    return True
