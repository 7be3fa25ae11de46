"""The console's shared template helpers (dr_console/formatting.py): `{% load console_ui %}` in any app's
template. App-specific helpers stay in the app's own library (backups_ui, restore_tags, drills_ui, overview_ui)."""

from __future__ import annotations

from django import template

from dr_console import formatting
from dr_console.links import object_url

register = template.Library()

register.filter("status_badge", formatting.status_badge)


@register.filter(name="object_url")
def object_url_filter(argument: int | str, name: str) -> str:
    """`{{ ds.pk|object_url:"overview:datastore_row" }}`: {% url %} for one id or slug, without walking the
    resolver each time (dr_console/links.py); for pages that draw many rows."""
    return object_url(name, argument)


register.filter("exact_time", formatting.exact_time)
register.filter("timesince_exact", formatting.timesince_exact)
register.filter("duration_short", formatting.duration_short)
register.simple_tag(formatting.when, name="when")
register.filter("untrusted", formatting.untrusted)
register.filter("check_text", formatting.check_text)
