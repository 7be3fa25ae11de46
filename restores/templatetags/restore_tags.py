"""Template helpers of the restore pages. Times, durations and the shared status badges are in
dr_console/formatting.py (`{% load console_ui %}`)."""

from __future__ import annotations

from django import template

from restores.models import RestoreRun

register = template.Library()
Status = RestoreRun.Status

# The badge classes of console.css. Each badge also carries the status's word and a symbol: never colour alone.
RUN_BADGES = {
    Status.SUCCEEDED: "badge-ok",
    Status.FAILED: "badge-bad",
    Status.ERRORED: "badge-bad",
    Status.REJECTED: "badge-bad",
    Status.AWAITING_APPROVAL: "badge-warn",
    Status.EXPIRED: "badge-muted",
    Status.CANCELLED: "badge-muted",
}


@register.filter
def run_badge(status: str) -> str:
    """The badge class of a restore run status: waiting and running ones are "info"."""
    return RUN_BADGES.get(status, "badge-info")  # type: ignore[call-overload]
