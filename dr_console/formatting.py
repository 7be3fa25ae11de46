"""How every page, command and message shows times, durations and statuses. Any app may use these (they sit in
the base layer, docs/architecture.md); the template library `console_ui` (dr_console/templatetags/) registers
them for templates.

Status badges carry a word and a symbol (console.css), never colour alone; times are shown relative, with the
exact local time on hover and in a machine-readable `datetime`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from dr_console.notes import note_text
from dr_console.text import untrusted_text

# Status value -> badge class (console.css gives each class its symbol). One table for every job type: the same
# word means the same thing on every page.
BADGE_CLASSES = {
    # jobs (backups, verifications, restores, drills, reprocess batches)
    "pending": "info",
    "queued": "info",
    "running": "info",
    "succeeded": "ok",
    "failed": "bad",
    "errored": "bad",
    "cancelled": "muted",
    # verification of a backup
    "unverified": "muted",
    "verifying": "info",
    "verified": "ok",
    "corrupt": "bad",
    # restores
    "requested": "info",
    "awaiting_approval": "warn",
    "approved": "info",
    "rejected": "muted",
    "expired": "muted",
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
    # datastore health (inventory.DatastoreHealth)
    "ok": "ok",
    "unconfigured": "bad",
    "unreachable": "bad",  # and "refused", as for a scheduled backup
    "tool": "bad",
    "error": "bad",
}


def iso(value: datetime | None) -> str | None:
    """A time for `--json` and scripts: ISO 8601, or None."""
    return value.isoformat() if value else None


def badge(css: str, word: str, title: str = "") -> SafeString:
    if title:
        return format_html('<span class="badge badge-{}" title="{}">{}</span>', css, title, word)
    return format_html('<span class="badge badge-{}">{}</span>', css, word)


def status_badge(obj: Any, field: str = "status") -> SafeString:
    """`{{ artifact|status_badge }}`, `{{ artifact|status_badge:"verification" }}`, `{{ run|status_badge }}`:
    the field's display word in the badge its value calls for."""
    value = getattr(obj, field)
    word = getattr(obj, f"get_{field}_display")()
    return badge(BADGE_CLASSES.get(value, "muted"), word)


def exact_time(value: datetime | None) -> str:
    """The time in the user's time zone, to the second, with the zone's name: 2026-05-01 12:00:03 CEST. The same
    in every language, so strftime, not Django's date_format (ten times slower, and the dashboard shows a hundred)."""
    if value is None:
        return ""
    local = timezone.localtime(value)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or ''}".rstrip()


def timesince_exact(value: datetime | None) -> SafeString:
    """ "3 hours ago", with the exact local time on hover and in a machine-readable `datetime`."""
    if value is None:
        return format_html('<span class="muted">{}</span>', _("never"))
    return _time_element(value)


def when(value: datetime | None) -> SafeString | str:
    """A relative age ("3 minutes ago"), with the exact time on hover and for machines; nothing for None."""
    return "" if value is None else _time_element(value)


def _time_element(value: datetime) -> SafeString:
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact_time(value), naturaltime(value)
    )


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


def untrusted(value: Any) -> str:
    """`{{ queue.name|untrusted }}`: text from outside (the application's Redis) with its control characters
    escaped, where the raw value is still needed elsewhere on the page (in a link)."""
    return untrusted_text(str(value))


def check_text(check: dict[str, Any], part: str) -> str:
    """`{{ check|check_text:"name" }}`, `{{ check|check_text:"detail" }}`: a stored check's name or detail in the
    reader's language when the console worded it (dr_console.notes), as stored otherwise."""
    return note_text(check.get(f"{part}_note"), str(check.get(part, "")))
