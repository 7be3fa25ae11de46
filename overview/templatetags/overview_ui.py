"""Template helpers of the overview pages: what is wrong with a datastore, the RPO badge of a dashboard row and the
30-day objectives chart."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.template.defaultfilters import filesizeformat
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from backups.selectors import RpoState
from dr_console.formatting import badge, duration_short, timesince_exact
from dr_console.links import object_url
from inventory.models import Datastore
from overview.charts import ObjectiveChart
from overview.selectors import CopyStanding, DatastoreDashboardRow, Problem

register = template.Library()


PROBLEM_DETAIL_CHARS = 160  # the whole text is on the backup's or the datastore's page


@register.simple_tag
def problem_list(row: DatastoreDashboardRow) -> SafeString:
    """What is wrong with the datastore, worst first, each in a sentence with its evidence (the backup, the check,
    the drill) and when it was seen. Nothing when nothing is wrong."""
    if not row.problems:
        return mark_safe("")
    items = format_html_join("", "<li>{}</li>", ((_problem_text(row, problem),) for problem in row.problems))
    return format_html('<ul class="problems" id="problems-{}">{}</ul>', row.datastore.pk, items)


def _artifact_link(artifact_id: int) -> SafeString:
    return format_html('<a href="{}">#{}</a>', object_url("backups:artifact_detail", artifact_id), artifact_id)


def _detail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PROBLEM_DETAIL_CHARS else f"{text[: PROBLEM_DETAIL_CHARS - 1]}…"


def _problem_text(row: DatastoreDashboardRow, problem: Problem) -> SafeString:
    ds = row.datastore
    if problem == Problem.LAST_ATTEMPT_FAILED and row.last_attempt is not None:
        attempt = row.last_attempt
        return format_html(
            _("Last backup attempt {link} failed {when}: {error}"),
            link=_artifact_link(attempt.pk),
            when=timesince_exact(attempt.finished_at or attempt.created_at),
            error=_detail(attempt.error) or _("no reason recorded"),
        )
    if problem == Problem.UNHEALTHY and row.health is not None:
        health = row.health
        same = (
            row.standing.last_attempt_failed
            and row.last_attempt is not None
            and row.last_attempt.error == health.message
        )
        return format_html(
            _("{state} (checked {when} on {host}): {message}"),
            state=health.get_state_display(),
            when=timesince_exact(health.checked_at),
            host=health.checked_on,
            message=_("the same cause as the failed backup") if same else _detail(health.message),
        )
    if problem == Problem.NO_VERIFIED_BACKUP:
        return format_html(
            _("No verified backup, and the first was due {when} (RPO target {target})."),
            when=timesince_exact(ds.created_at + ds.rpo_target),
            target=duration_short(ds.rpo_target),
        )
    if problem == Problem.RPO_MISSED and row.last_verified is not None:
        return format_html(
            _("The newest verified backup, {link}, is {age} old: over the RPO target of {target}."),
            link=_artifact_link(row.last_verified.pk),
            age=duration_short(row.rpo_age),
            target=duration_short(ds.rpo_target),
        )
    if problem == Problem.VERIFICATION_FAILED and row.last_check is not None:
        check = row.last_check
        return format_html(
            _("Backup {link} failed its verification {when}: {error}"),
            link=_artifact_link(check.pk),
            when=timesince_exact(check.verified_at),
            error=_detail(check.verification_error) or _("no reason recorded"),
        )
    if problem == Problem.RTO_MISSED and row.drills is not None and row.drills.last_drill is not None:
        drill = row.drills.last_drill
        if drill.rto is None or drill.status == drill.Status.FAILED:
            return format_html(
                _("Drill #{id} failed {when}: {error}"),
                id=drill.pk,
                when=timesince_exact(drill.finished_at),
                error=_detail(drill.error) or _("no reason recorded"),
            )
        return format_html(
            _("Drill #{id} restored in {rto}: over the RTO target of {target}."),
            id=drill.pk,
            rto=duration_short(drill.rto),
            target=duration_short(ds.rto_target),
        )
    if problem == Problem.SCHEDULE_MISSED and row.schedule is not None:
        count = len(row.schedule.missed)
        return format_html(
            ngettext(
                "{count} scheduled backup did not run: is Celery beat running?",
                "{count} scheduled backups did not run: is Celery beat running?",
                count,
            ),
            count=count,
        )
    if problem == Problem.COPY_MISSING:
        return format_html_join(
            " ",
            "{}",
            (
                (
                    format_html(
                        _("Off-site copy missing: {location} has no verified copy of backup {link}."),
                        location=copy.label,
                        link=_artifact_link(copy.of_backup),
                    ),
                )
                for copy in row.standing.copies_missing
                if copy.of_backup is not None
            ),
        )
    if problem == Problem.COPY_RPO_MISSED:
        return format_html_join(" ", "{}", ((_copy_late_text(copy, ds),) for copy in row.standing.copies_late))
    return format_html("{}", problem)


def _copy_late_text(copy: CopyStanding, ds: Datastore) -> SafeString:
    if copy.newest_id is None or copy.age is None:
        return format_html(
            _("Off-site copy older than the RPO at {location}: it holds no verified copy (RPO target {target})."),
            location=copy.label,
            target=duration_short(ds.rpo_target),
        )
    return format_html(
        _(
            "Off-site copy older than the RPO at {location}: its newest verified copy, of backup {link}, is {age} old "
            "(RPO target {target})."
        ),  # fmt: skip
        location=copy.label,
        link=_artifact_link(copy.newest_id),
        age=duration_short(copy.age),
        target=duration_short(ds.rpo_target),
    )


@register.filter
def rpo_badge(row: DatastoreDashboardRow) -> SafeString:
    """How old the datastore's recovery point (its newest verified backup) is against its RPO target."""
    target = duration_short(row.datastore.rpo_target)
    if row.rpo_state == RpoState.NEW:
        due = naturaltime(row.datastore.created_at + row.datastore.rpo_target)
        explained = _("A new datastore has one RPO period (%(target)s) to take its first verified backup.")
        return badge("muted", _("First backup due %(when)s") % {"when": due}, explained % {"target": target})
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


@register.simple_tag
def objective_chart(chart: ObjectiveChart | None, datastore: Datastore) -> SafeString:
    """A datastore's last 30 days as inline SVG (backup size, backup duration, drill RTO with the RTO target
    dashed, failed drills marked), described for screen readers, with the same numbers in a table below it.

    Built with format_html rather than template loops: a dashboard of many datastores draws thousands of points,
    and this is ten times cheaper to render. Coordinates are formatted here, never localized ("12,5" is no
    number in SVG)."""
    if chart is None:
        return mark_safe("")
    pk = datastore.pk
    target = duration_short(datastore.rto_target)
    day = partial(date_format, format="SHORT_DATE_FORMAT")
    title = _("%(name)s: backups and drills, last 30 days") % {"name": datastore.name}
    backup_days = len(chart.size.points)
    description = ngettext(
        "Backup size and duration on %(count)d day, and drill restore times on %(drills)d days, "
        "against an RTO target of %(target)s.",
        "Backup size and duration on %(count)d days, and drill restore times on %(drills)d days, "
        "against an RTO target of %(target)s.",
        backup_days,
    ) % {"count": backup_days, "drills": len(chart.rto.points), "target": target}
    labels = format_html_join(
        "",
        '<text class="chart-label" x="0" y="{}">{}</text>',
        (
            (f"{band.label_y:.1f}", word)
            for band, word in ((chart.size, _("Size")), (chart.duration, _("Duration")), (chart.rto, _("RTO")))
        ),
    )
    lines = format_html_join(
        "",
        '<polyline class="chart-line" points="{}"/>',
        ((band.polyline,) for band in (chart.size, chart.duration) if len(band.points) > 1),
    )
    # Every day's value is a marker too: a line needs two points, and one backup must still show.
    markers = format_html_join(
        "",
        '<circle class="chart-point" cx="{}" cy="{}" r="2.5"><title>{}: {}</title></circle>',
        (
            (f"{p.x:.1f}", f"{p.y:.1f}", day(p.day), text(p.value))
            for band, text in ((chart.size, filesizeformat), (chart.duration, duration_short))
            for p in band.points
        ),
    )
    target_line = (
        format_html(
            '<line class="chart-target" x1="{}" x2="{}" y1="{}" y2="{}"><title>{}</title></line>',
            f"{chart.left:.1f}",
            f"{chart.width:.1f}",
            f"{chart.rto.target_y:.1f}",
            f"{chart.rto.target_y:.1f}",
            _("RTO target %(target)s") % {"target": target},
        )
        if chart.rto.target_y is not None
        else ""
    )
    rto_dots = format_html_join(
        "",
        '<circle class="chart-dot{}" cx="{}" cy="{}" r="3"><title>{}: {}</title></circle>',
        (
            (
                " chart-failed" if p.failed else "",
                f"{p.x:.1f}",
                f"{p.y:.1f}",
                day(p.day),
                _point_text(p.value, p.failed),
            )
            for p in chart.rto.points
        ),
    )
    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th><td>{}</td><td>{}</td><td>{}{}</td></tr>',
        (
            (
                day(d.day),
                filesizeformat(d.size_bytes) if d.size_bytes is not None else "–",
                duration_short(d.backup_duration),
                duration_short(d.rto),
                format_html(
                    ' <span class="error">{}</span>',
                    ngettext("%(count)d failed", "%(count)d failed", d.drills_failed) % {"count": d.drills_failed},
                )
                if d.drills_failed
                else "",
            )
            for d in chart.days
        ),
    ) or format_html('<tr><td colspan="4" class="muted">{}</td></tr>', _("No backup or drill in the last 30 days."))
    return format_html(
        '<figure class="objective-chart" id="objective-chart-{pk}">'
        '<svg role="img" aria-labelledby="chart-title-{pk} chart-desc-{pk}" viewBox="0 0 {w} {h}" width="{w}" '
        'height="{h}"><title id="chart-title-{pk}">{title}</title><desc id="chart-desc-{pk}">{description}</desc>'
        "{labels}{lines}{markers}{target_line}{rto_dots}</svg>"
        '<details><summary>{numbers}</summary><table class="compact"><caption class="visually-hidden">{caption}'
        '</caption><thead><tr><th scope="col">{h_day}</th><th scope="col">{h_size}</th><th scope="col">{h_duration}'
        '</th><th scope="col">{h_rto}</th></tr></thead><tbody>{rows}</tbody></table></details></figure>',
        pk=pk,
        w=f"{chart.width:.0f}",
        h=f"{chart.height:.0f}",
        title=title,
        description=description,
        labels=labels,
        lines=lines,
        markers=markers,
        target_line=target_line,
        rto_dots=rto_dots,
        numbers=_("Numbers"),
        caption=_("%(name)s: each day's largest backup and slowest drill, last 30 days") % {"name": datastore.name},
        h_day=_("Day"),
        h_size=_("Backup size"),
        h_duration=_("Backup duration"),
        h_rto=_("Drill RTO"),
        rows=rows,
    )


def _point_text(rto: timedelta | None, failed: bool) -> str:
    words = [duration_short(rto) if rto else "", _("(a drill failed)") if failed else ""]
    return " ".join(word for word in words if word)
