"""Template helpers of the backup pages: backup status words, the schedule badge and the history rows. The helpers
every app shares (status badges, times, durations) are in dr_console/formatting.py (`{% load console_ui %}`)."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from backups.encryption import short_recipient
from backups.models import BackupArtifact
from backups.scheduling import ScheduleState
from backups.selectors import artifact_copies_state, backup_artifact_in_progress
from dr_console.formatting import BADGE_CLASSES, badge, duration_short, exact_time, status_badge, timesince_exact

register = template.Library()


@register.filter
def backup_status_label(value: str) -> str:
    """A backup status value ("running") in the reader's language; an unknown value as it is."""
    choices = BackupArtifact.Status
    return str(choices(value).label) if value in choices.values else value


@register.filter
def in_progress(artifact: BackupArtifact) -> bool:
    """Being taken or verified: its row or status box keeps polling."""
    return backup_artifact_in_progress(artifact)


@register.filter
def schedule_badge(state: ScheduleState | None, troubled: bool = False) -> SafeString:
    """Whether the datastore's backup schedule runs as it should: missed fire times, a skipped or refused last
    run, or on schedule. `troubled`: the datastore has a problem of another kind (its backups fail), so a schedule
    that fires is not worth a green tick next to it: it says "Scheduled", plainly."""
    if state is None:
        return badge("muted", _("No schedule"))
    if state.overdue:
        count = len(state.missed)
        title = _("No scheduled run since %(time)s: is Celery beat running?") % {"time": exact_time(state.missed[0])}
        return badge("bad", ngettext("Missed %(n)d run", "Missed %(n)d runs", count) % {"n": count}, title)
    last = state.last_run
    if last is not None and last.outcome != last.Outcome.STARTED:
        return badge(BADGE_CLASSES[last.outcome], last.get_outcome_display(), last.message)
    if troubled:
        return badge("muted", _("Scheduled"))
    return badge("ok", _("On schedule"))


@register.filter
def short_recipients(recipients: list[str]) -> str:
    """age recipients, each shortened (age1abcd…wxyz): which keys open the file, without a line of 62 characters."""
    return ", ".join(short_recipient(recipient) for recipient in recipients)


@register.filter
def copies_badge(artifact: BackupArtifact) -> SafeString:
    """ "2 of 2 copies", or "1 of 2 copies verified" as a warning; nothing for a datastore without copy locations.
    A page of rows sets `copies_state` on each (backups.selectors.backup_artifact_page); one row reads its own."""
    state = getattr(artifact, "copies_state", None)
    if state is None:
        if not artifact.datastore.storage_locations:
            return mark_safe("")
        state = artifact_copies_state(artifact)
    verified, wanted = state
    if not wanted:
        return mark_safe("")
    if verified >= wanted:
        text = ngettext("%(verified)d of %(wanted)d copy", "%(verified)d of %(wanted)d copies", wanted)
        return format_html(" {}", badge("ok", text % {"verified": verified, "wanted": wanted}))
    text = ngettext(
        "%(verified)d of %(wanted)d copy verified", "%(verified)d of %(wanted)d copies verified", wanted
    ) % {"verified": verified, "wanted": wanted}
    return format_html(" {}", badge("warn", text, _("A copy location has no verified copy of this backup.")))


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
    if artifact.status == BackupArtifact.Status.SUCCEEDED:
        status += copies_badge(artifact)
    verification = (
        status_badge(artifact, "verification")
        if artifact.status == BackupArtifact.Status.SUCCEEDED
        else mark_safe('<span class="muted">–</span>')
    )
    # On a phone the table stacks (table.stack): each cell then carries its label, and nothing scrolls sideways.
    labels = _artifact_cell_labels()
    return format_html(
        '<tr id="artifact-row-{}"{}><th scope="row"><a href="{}">#{}</a></th>'
        '<td class="nowrap"><span class="cell-label">{}</span>{}</td>'
        '<td class="optional"><span class="cell-label">{}</span>{}</td>'
        '<td><span class="cell-label">{}</span>{}</td><td><span class="cell-label">{}</span>{}</td>'
        '<td><span class="cell-label">{}</span>{}</td>'
        '<td class="optional nowrap"><span class="cell-label">{}</span>{}</td>'
        '<td class="optional nowrap"><span class="cell-label">{}</span>{}</td>'
        '<td class="optional"><span class="cell-label">{}</span>{}</td></tr>',
        pk,
        polling,
        reverse("backups:artifact_detail", args=[pk]),
        pk,
        labels[0],
        artifact.datastore.name,
        labels[1],
        artifact.datastore.environment.name,
        labels[2],
        status,
        labels[3],
        verification,
        labels[4],
        timesince_exact(artifact.taken_at),
        labels[5],
        filesizeformat(artifact.size_bytes) if artifact.size_bytes is not None else "",
        labels[6],
        duration_short(artifact.duration) if artifact.duration else "",
        labels[7],
        _triggered(artifact),
    )


def _triggered(artifact: BackupArtifact) -> SafeString:
    who = artifact.triggered_by.get_username() if artifact.triggered_by else artifact.trigger
    if artifact.origin == BackupArtifact.Origin.IMPORTED:
        return format_html('<span class="badge badge-info">{}</span> {}', _("Imported"), who)
    return format_html("{}", who)


def _artifact_cell_labels() -> tuple[str, ...]:
    """The column headers of the backups list (templates/backups/partials/artifact_results.html), in order."""
    return (
        _("Datastore"),
        _("Environment"),
        _("Status"),
        _("Verification"),
        _("Started"),
        _("Size"),
        _("Duration"),
        _("Triggered by"),
    )
