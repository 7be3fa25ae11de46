"""Template helpers for the console's pages: status badges (a word and a symbol, never colour alone), times
shown relative with the exact local time on hover, and short durations."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from backups.models import BackupArtifact
from backups.scheduling import ScheduleState
from backups.selectors import DatastoreDashboardRow, RpoState, backup_artifact_in_progress
from dr_console.text import untrusted_text

register = template.Library()

# Status value -> badge class (console.css gives each class its symbol). Shared by backups and restores: the same
# word means the same thing in both.
BADGE_CLASSES = {
    # backups
    "pending": "info",
    "running": "info",
    "succeeded": "ok",
    "failed": "bad",
    # verification of a backup
    "unverified": "muted",
    "verifying": "info",
    "verified": "ok",
    "corrupt": "bad",
    # restores
    "requested": "info",
    "awaiting_approval": "warn",
    "approved": "info",
    "queued": "info",
    "rejected": "muted",
    "expired": "muted",
    "cancelled": "muted",
    # drills
    "checking": "info",
    # reprocess batches and their items
    "draft": "warn",
    "discarded": "muted",
    "accepted": "ok",
    # scheduled backups
    "started": "ok",
    "skipped": "warn",
    "refused": "bad",
}

EXACT_TIME_FORMAT = "Y-m-d H:i:s T"


def badge(css: str, word: str, title: str = "") -> SafeString:
    if title:
        return format_html('<span class="badge badge-{}" title="{}">{}</span>', css, title, word)
    return format_html('<span class="badge badge-{}">{}</span>', css, word)


@register.filter
def status_badge(obj: Any, field: str = "status") -> SafeString:
    """`{{ artifact|status_badge }}`, `{{ artifact|status_badge:"verification" }}`, `{{ run|status_badge }}`:
    the field's display word in the badge its value calls for."""
    value = getattr(obj, field)
    word = getattr(obj, f"get_{field}_display")()
    return badge(BADGE_CLASSES.get(value, "muted"), word)


@register.filter
def backup_status_label(value: str) -> str:
    """A backup status value ("running") in the reader's language; an unknown value as it is."""
    choices = BackupArtifact.Status
    return str(choices(value).label) if value in choices.values else value


@register.filter
def untrusted(value: Any) -> str:
    """`{{ queue.name|untrusted }}`: text from outside (the application's Redis) with its control characters
    escaped, where the raw value is still needed elsewhere on the page (in a link)."""
    return untrusted_text(str(value))


@register.filter
def in_progress(artifact: BackupArtifact) -> bool:
    """Being taken or verified: its row or status box keeps polling."""
    return backup_artifact_in_progress(artifact)


@register.filter
def rpo_badge(row: DatastoreDashboardRow) -> SafeString:
    """How old the datastore's recovery point (its newest verified backup) is against its RPO target."""
    target = duration_short(row.datastore.rpo_target)
    if row.rpo_state == RpoState.NONE:
        return badge("bad", _("No verified backup"), _("RPO target: %(target)s") % {"target": target})
    title = _("Newest verified backup is %(age)s old; RPO target %(target)s") % {
        "age": duration_short(row.rpo_age),
        "target": target,
    }
    if row.rpo_state == RpoState.VERY_LATE:
        return badge("bad", _("Over twice the RPO"), title)
    if row.rpo_state == RpoState.LATE:
        return badge("warn", _("Over RPO"), title)
    return badge("ok", _("Within RPO"), title)


@register.filter
def exact_time(value: datetime | None) -> str:
    """The time in the user's time zone, to the second, with the zone's name."""
    if value is None:
        return ""
    return formats.date_format(timezone.localtime(value), EXACT_TIME_FORMAT)


@register.filter
def timesince_exact(value: datetime | None) -> SafeString:
    """ "3 hours ago", with the exact local time on hover and in a machine-readable `datetime`."""
    if value is None:
        return format_html('<span class="muted">{}</span>', _("never"))
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact_time(value), naturaltime(value)
    )


@register.filter
def duration_short(value: timedelta | float | int | None) -> str:
    """3.1 s, 4 min 12 s, 5 h 3 min, 24 h, 3 d 2 h."""
    if value is None:
        return "–"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60:
        # number_format: "3.1" in English, "3,1" in Spanish, like the sizes next to it.
        return _("%(seconds)s s") % {"seconds": formats.number_format(seconds, 1)}
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if whole < 3600:
        return _("%(m)d min %(s)d s") % {"m": minutes, "s": secs} if secs else _("%(m)d min") % {"m": minutes}
    if whole < 2 * 86400:
        hours += days * 24
        return _("%(h)d h %(m)d min") % {"h": hours, "m": minutes} if minutes else _("%(h)d h") % {"h": hours}
    return _("%(d)d d %(h)d h") % {"d": days, "h": hours} if hours else _("%(d)d d") % {"d": days}


@register.filter
def schedule_badge(state: ScheduleState | None) -> SafeString:
    """Whether the datastore's backup schedule runs as it should: missed fire times, a skipped or refused last
    run, or on schedule."""
    if state is None:
        return badge("muted", _("No schedule"))
    if state.overdue:
        count = len(state.missed)
        title = _("No scheduled run since %(time)s: is Celery beat running?") % {"time": exact_time(state.missed[0])}
        return badge("bad", ngettext("Missed %(n)d run", "Missed %(n)d runs", count) % {"n": count}, title)
    last = state.last_run
    if last is not None and last.outcome != last.Outcome.STARTED:
        return badge(BADGE_CLASSES[last.outcome], last.get_outcome_display(), last.message)
    return badge("ok", _("On schedule"))


@register.simple_tag
def artifact_row(artifact: BackupArtifact) -> SafeString:
    """One row of the backups list, built here rather than in a template: a page has 50 of them, and the template
    engine's per-variable cost made the rows most of the page's server time (bench/pages.py). A row that is still
    being taken or verified polls for itself until it ends (its endpoint answers 286)."""
    pk = artifact.pk
    polling = (
        format_html(
            ' hx-get="{}" hx-trigger="every 3s" hx-swap="outerHTML"', reverse("backups:artifact_row", args=[pk])
        )
        if backup_artifact_in_progress(artifact)
        else ""
    )
    status = status_badge(artifact)
    if artifact.status == BackupArtifact.Status.RUNNING and artifact.bytes_done:
        status += format_html(' <span class="muted">{}</span>', filesizeformat(artifact.bytes_done))
    if artifact.status == BackupArtifact.Status.FAILED and artifact.error:
        status += format_html('<div class="error">{}</div>', Truncator(artifact.error).chars(100))
    verification = (
        status_badge(artifact, "verification")
        if artifact.status == BackupArtifact.Status.SUCCEEDED
        else mark_safe('<span class="muted">–</span>')
    )
    return format_html(
        '<tr id="artifact-row-{}"{}><td><a href="{}">#{}</a></td><td class="nowrap">{}</td>'
        '<td class="optional">{}</td><td>{}</td><td>{}</td><td>{}</td><td class="optional nowrap">{}</td>'
        '<td class="optional nowrap">{}</td><td class="optional">{}</td></tr>',
        pk,
        polling,
        reverse("backups:artifact_detail", args=[pk]),
        pk,
        artifact.datastore.name,
        artifact.datastore.environment.name,
        status,
        verification,
        timesince_exact(artifact.started_at or artifact.created_at),
        filesizeformat(artifact.size_bytes) if artifact.size_bytes is not None else "",
        duration_short(artifact.duration) if artifact.duration else "",
        artifact.triggered_by.get_username() if artifact.triggered_by else artifact.trigger,
    )
