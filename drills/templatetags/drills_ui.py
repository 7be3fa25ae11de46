"""Template helpers for drills and the RTO objective. The 30-day objectives chart is in overview_ui."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from dr_console.formatting import badge, duration_short
from drills.selectors import DatastoreDrillState, RtoState

register = template.Library()


@register.filter
def rto_badge(state: DatastoreDrillState | None) -> SafeString:
    """The newest drill against the datastore's RTO target."""
    if state is None or state.rto_state == RtoState.NONE:
        return badge("muted", _("No drill yet"))
    drill = state.last_drill
    assert drill is not None
    target = duration_short(drill.datastore.rto_target)
    if state.rto_state == RtoState.FAILED:
        return badge("bad", _("Drill failed"), drill.error[:200])
    title = _("Restored in %(rto)s; RTO target %(target)s") % {"rto": duration_short(drill.rto), "target": target}
    if state.rto_state == RtoState.OVER:
        return badge("bad", _("Over RTO"), title)
    return badge("ok", _("Within RTO"), title)
