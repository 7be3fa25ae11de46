"""The console's own notes on a job's status changes ("started on worker-1", "approved by bob"), stored as a code
and its parameters beside the English text, so that a page shows them in its reader's language. The English text
(`JobEvent.message`) stays what logs, exports and old rows read; notes that quote a tool or a server (errors) have
no code and are shown as they were written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

NOTE_TEXTS: dict[str, Promise] = {
    "started_on": _("started on %(host)s"),
    "launched_on": _("launched on %(host)s"),
    "approved_by": _("approved by %(who)s"),
    "cancelled_by": _("cancelled by %(who)s"),
}


@dataclass(frozen=True)
class Note:
    code: str  # a key of NOTE_TEXTS
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.code in NOTE_TEXTS, f"unknown note {self.code!r}"

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "params": self.params}

    def english(self) -> str:
        with translation.override("en"):
            return str(NOTE_TEXTS[self.code]) % self.params


def note_text(note: dict[str, Any] | None, fallback: str) -> str:
    """The note in the active language; `fallback` (the stored English text) for a row without a known code."""
    text = NOTE_TEXTS.get((note or {}).get("code", ""))
    if text is None:
        return fallback
    try:
        return str(text) % dict(note.get("params") or {})  # type: ignore[union-attr]
    except (KeyError, TypeError, ValueError):  # a row written by another version of the console
        return fallback
