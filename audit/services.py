"""Writing the audit log. Every action a person or the console takes goes through audit_record."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import models

from audit.models import AuditEvent
from audit.stream import audit_stream_on_commit
from dr_console.channel import channel_current
from dr_console.notes import Note, actor_note
from dr_console.text import untrusted_data, untrusted_text

logger = logging.getLogger(__name__)


def audit_record(
    *,
    action: str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    actor_label: str = "",
    obj: models.Model | None = None,
    details: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> AuditEvent:
    """Append one event. `actor_label` names a non-person actor ("console", "reaper") or overrides the username.
    Details must never hold secrets: callers pass ids, names and outcomes, not URLs.

    Which way the action came (web, cli, api, system) and, on the command line, the OS user and host are taken
    from dr_console.channel.

    Details often quote what came from outside (an error naming a Redis key, a queue's name): every string in them
    is escaped here too (dr_console.text), so an event is always recorded, whatever its caller forgot.

    The event joins the hash chain (AuditEvent.save, audit.chain): one query more than the INSERT, and appends are
    serialized until the caller's transaction ends, so record late in a long transaction. Once that transaction
    commits, the event goes to the off-box stream too (audit.stream), if one is configured."""
    user = actor if isinstance(actor, User) else None
    channel = channel_current()
    label = actor_label or (user.get_username() if user is not None else "console")
    notes = {"object": _object_note(obj), "actor": None if user is not None and not actor_label else actor_note(label)}
    event = AuditEvent.objects.create(
        action=action,
        actor=user,
        actor_label=untrusted_text(label)[:150],
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=untrusted_text(str(obj))[:200] if obj is not None else "",
        client_ip=client_ip,
        via=channel.via,
        os_user=untrusted_text(channel.os_user)[:150],
        os_host=untrusted_text(channel.host)[:255],
        details=untrusted_data(details or {}),
        labels=untrusted_data({key: note.as_json() for key, note in notes.items() if note is not None}),
    )
    audit_stream_on_commit(event, using=event._state.db or "default")
    return event


def _object_note(obj: models.Model | None) -> Note | None:
    """The object's own words for the log, when its model has them (`audit_note()`)."""
    note = getattr(obj, "audit_note", None)
    return note() if callable(note) else None


def audit_job_finished(
    *, action: str, job: Any, about: models.Model | None = None, actor_label: str = "console", **details: Any
) -> AuditEvent:
    """The audit event of a job that ended (dr_console.jobs calls each type's `on_finished`): its status, error and
    duration, and what the job type adds (`details`). `about`: the object the event is filed under, when it is not
    the job itself (a verification's backup)."""
    return audit_record(
        action=action,
        actor_label=actor_label,
        obj=about if about is not None else job,
        details={"status": job.status, "error": job.error, "duration_seconds": job.duration_seconds, **details},
    )
