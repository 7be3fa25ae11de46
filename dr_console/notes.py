"""The console's own words about a job, stored as a code and its parameters beside the English text, so that a
page shows them in its reader's language: the notes on status changes ("started on worker-1", "approved by bob")
and the names and details of the checks after a restore ("row counts", "returned 1"). The English text
(`JobEvent.message`, a check's `name` and `detail`) stays what logs, exports and old rows read; what quotes a tool
or a server (errors) has no code and is shown as it was written."""

from __future__ import annotations

import re
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
    # checks after a restore or a drill: names
    "check_connect": _("connect"),
    "check_row_counts": _("row counts"),
    "check_probe": _("probe: %(probe)s"),
    "check_keys_restored": _("keys restored"),
    "check_keys_present": _("keys present"),
    # and details
    "returned": _("returned %(value)s"),
    "returned_no_row": _("returned no row"),
    "tables_match": _("tables matching the dump: %(count)s"),
    "keys_restored": _("%(restored)s of %(expected)s keys restored"),
    "keys_present": _("%(present)s keys of the backup are in %(target)s"),
    # why a configured query (a reprocess query, a drill probe) was refused or stopped (backups/readonly.py)
    "query_several_statements": _(
        "the query holds more than one statement; the console runs exactly one (remove the ';' and what follows it)"
    ),
    "query_writes": _("the query tried to write or to lock rows (%(error)s); configured queries run read-only"),
    "query_read_write": _(
        "the query tried to make its transaction read-write (%(error)s); configured queries run read-only"
    ),
    "query_ended_transaction": _(
        "the query ended the console's read-only transaction (%(command)s); a configured query cannot end it"
    ),
    "query_timed_out": _("the query ran longer than %(seconds)s s and was stopped"),
    "query_lock_timeout": _(
        "the query waited longer than %(seconds)s s for a lock and was stopped; another session holds what it reads"
    ),
    # what the audit log names: objects, and actors that are not people
    "backup_of": _("backup #%(id)s of %(datastore)s"),
    "verification_of": _("verification #%(id)s of backup #%(backup)s"),
    "copy_of": _("copy #%(id)s of backup #%(backup)s at %(location)s"),
    "download_request": _("download request #%(id)s of backup #%(backup)s"),
    "restore": _("restore #%(id)s"),
    "drill_of": _("drill #%(id)s of %(datastore)s"),
    "reprocess_batch": _("reprocess batch #%(id)s"),
    "actor_console": _("console"),
    "actor_reaper": _("reaper"),
    "actor_schedule": _("schedule"),
    "actor_safety_backup": _("safety backup before restore #%(id)s"),
}

# Actors that are not people, as audit_record receives them: their note.
_ACTORS = {"console": "actor_console", "reaper": "actor_reaper", "schedule": "actor_schedule"}
_SAFETY_ACTOR = re.compile(r"^safety backup before restore #(\d+)$")


def actor_note(label: str) -> Note | None:
    if code := _ACTORS.get(label):
        return Note(code)
    if match := _SAFETY_ACTOR.match(label):
        return Note("actor_safety_backup", {"id": match[1]})
    return None  # a person's name, or "web:olga": shown as it is


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
            return self.text()

    def text(self) -> str:
        """In the active language."""
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


def check_item(ok: bool, *, name: Note | str, detail: Note | str = "", **extra: Any) -> dict[str, Any]:
    """One post-restore check, as it is stored on the run: its English name and detail, and their notes."""
    item: dict[str, Any] = {"name": name, "ok": ok, "detail": detail, **extra}
    for key in ("name", "detail"):
        value = item[key]
        if isinstance(value, Note):
            item[key], item[f"{key}_note"] = value.english(), value.as_json()
    return item
