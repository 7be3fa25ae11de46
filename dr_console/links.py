"""Links to one object's page, fast: `object_url("backups:artifact_detail", 42)` is what
`reverse("backups:artifact_detail", args=[42])` returns, from the URL reversed once per name with a placeholder.
reverse() walks the resolver and its converters on every call (tens of microseconds); the dashboard draws some two
hundred links a page. Only for URLs of one argument that is an id or a slug (nothing to quote)."""

from __future__ import annotations

import re

from django.urls import NoReverseMatch, get_script_prefix, get_urlconf, reverse

# Placeholders any int or slug converter accepts, and no URL contains otherwise.
_PLACEHOLDERS = ("9081726354", "drc-placeholder-9081726354")
_SAFE_ARGUMENT = re.compile(r"[A-Za-z0-9_.-]+")
_templates: dict[tuple[str, str, str | None], tuple[str, str]] = {}


def _template(name: str) -> tuple[str, str]:
    key = (name, get_script_prefix(), get_urlconf())
    found = _templates.get(key)
    if found is None:
        for placeholder in _PLACEHOLDERS:
            try:
                url = reverse(name, args=[placeholder])
            except NoReverseMatch:
                continue
            if url.count(placeholder) == 1:
                prefix, suffix = url.split(placeholder)
                found = _templates[key] = (prefix, suffix)
                break
        else:
            raise NoReverseMatch(f"{name} does not take one id or slug argument")
    return found


def object_url(name: str, argument: int | str) -> str:
    """reverse(name, args=[argument]), for an id or a slug. Anything else goes through reverse() itself, which
    checks and quotes it."""
    text = str(argument)
    if not _SAFE_ARGUMENT.fullmatch(text):
        return reverse(name, args=[argument])
    prefix, suffix = _template(name)
    return f"{prefix}{text}{suffix}"
