"""Template helpers of the restore and audit pages: status badges and times."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

from restores.models import RestoreRun

register = template.Library()
Status = RestoreRun.Status

# The badge classes of console.css. Each badge also carries the status's word and a symbol: never colour alone.
RUN_BADGES = {
    Status.SUCCEEDED: "badge-ok",
    Status.FAILED: "badge-bad",
    Status.REJECTED: "badge-bad",
    Status.AWAITING_APPROVAL: "badge-warn",
    Status.EXPIRED: "badge-muted",
    Status.CANCELLED: "badge-muted",
}


@register.filter
def run_badge(status: str) -> str:
    """The badge class of a restore run status: waiting and running ones are "info"."""
    return RUN_BADGES.get(status, "badge-info")  # type: ignore[call-overload]


@register.simple_tag
def when(value: datetime | None) -> SafeString | str:
    """A relative age ("3 minutes ago"), with the exact time on hover and for machines."""
    if value is None:
        return ""
    local = timezone.localtime(value)
    exact = f"{date_format(local, 'Y-m-d H:i:s')} {local.tzname() or ''}".strip()
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact, naturaltime(value))
