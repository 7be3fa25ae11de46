"""Template helpers of the audit log page."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils.text import Truncator

from audit.models import AuditEvent
from dr_console.notes import note_text

register = template.Library()

# Where an event's object has a page. A missing page (not built yet) leaves the object as plain text.
OBJECT_PAGES = {
    "restores.restorerun": "restores:run_detail",
    "backups.backupartifact": "backups:artifact_detail",
}


@register.filter
def audit_object(event: AuditEvent) -> str:
    """What the event is about, in the reader's language when the console worded it."""
    return note_text(event.labels.get("object"), event.object_repr)


@register.filter
def audit_actor(event: AuditEvent) -> str:
    """Who acted: a person's name as it is; "console", "reaper"... in the reader's language."""
    return note_text(event.labels.get("actor"), event.actor_label)


@register.simple_tag
def audit_object_url(event: AuditEvent) -> str:
    name = OBJECT_PAGES.get(event.object_type)
    if not name or not event.object_id.isdigit():
        return ""
    try:
        return reverse(name, args=[int(event.object_id)])
    except NoReverseMatch:
        return ""


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return Truncator(text).chars(40)


@register.filter
def details_summary(details: dict[str, Any]) -> str:
    """One short line: key=value pairs, long values cut; the full JSON is shown on demand next to it."""
    if not isinstance(details, dict):
        return _short(details)
    pairs = (f"{key}={_short(value)}" for key, value in details.items() if value not in ("", None, [], {}))
    return Truncator(" · ".join(pairs)).chars(140)


@register.filter
def details_json(details: Any) -> str:
    return json.dumps(details, indent=2, sort_keys=True, ensure_ascii=False)
