"""The audit log's hash chain: every event stores the hash of the one before it (`prev_hash`) and its own `hash`,
sha256 over a canonical JSON of its stored fields plus `prev_hash`. Editing an event breaks its own hash; deleting
one, or slipping one in, breaks the link of the event after it (`manage.py audit verify` names which).

The chain's order is the events' ids. Appends are serialized (`chain_head_locked`) so that ids are handed out in
chain order and two writers never link to the same predecessor; the database refuses a fork anyway (a unique
`prev_hash`). The first event links to GENESIS.

What is hashed must be exactly what the database gives back later, whichever database and Python version reads it:
`event_canonical` turns the values an event is saved with and the values read back into the same text. Adding a
field to AuditEvent does not change old hashes (it is not in CHAINED_FIELDS); hashing a new field needs a new `v`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import DateTimeField, Model

GENESIS = ""  # the first event's prev_hash
VERSION = 1  # of the canonical form below; part of every hash
CHAINED_FIELDS = (
    "created_at",
    "actor_id",
    "actor_label",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "client_ip",
    "via",
    "os_user",
    "os_host",
    "details",
    "labels",
)
# pg_advisory_xact_lock key of the chain's head ("audit" in ASCII): one lock per database.
ADVISORY_LOCK_KEY = 0x6175646974

# Lock, then read: one statement, but PL/pgSQL takes a new snapshot for each query in a VOLATILE function, so the
# head read after the wait sees the event the previous holder committed. (One SELECT doing both would read with the
# snapshot taken before it waited, and link to a stale head.) Installed by migration 0014.
POSTGRES_HEAD_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_auditevent_chain_head() RETURNS varchar AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({ADVISORY_LOCK_KEY});
    RETURN (SELECT hash FROM audit_auditevent ORDER BY id DESC LIMIT 1);
END;
$$ LANGUAGE plpgsql VOLATILE;
"""


def chain_head_locked(using: str) -> str:
    """The newest event's hash (GENESIS for an empty log), with the chain held until the caller's transaction ends:
    call it inside transaction.atomic(). One query.

    PostgreSQL: a transaction-scoped advisory lock, so the next writer waits until this one commits or rolls back
    (READ COMMITTED, Django's default: it then reads the committed head). SQLite: the console opens its transactions
    with BEGIN IMMEDIATE (settings.py), which already serializes writers."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT audit_auditevent_chain_head()")
        else:
            cursor.execute("SELECT hash FROM audit_auditevent ORDER BY id DESC LIMIT 1")
        row = cursor.fetchone()
    return row[0] if row and row[0] is not None else GENESIS


def event_values(event: Model) -> dict[str, Any]:
    """The chained fields in the form they are hashed (and streamed) in: the same for the values an event is saved
    with and those read back from PostgreSQL or SQLite."""
    values = {name: getattr(event, name) for name in CHAINED_FIELDS}
    values["created_at"] = _when(values["created_at"])
    values["client_ip"] = _address(values["client_ip"])
    for name in ("details", "labels"):
        values[name] = _as_stored(values[name])
    for name in CHAINED_FIELDS:
        if name not in ("created_at", "actor_id", "client_ip", "details", "labels"):
            values[name] = "" if values[name] is None else str(values[name])
    return values


def event_canonical(event: Model, prev_hash: str) -> bytes:
    payload = {"v": VERSION, "prev_hash": prev_hash, **event_values(event)}
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def event_hash(event: Model, prev_hash: str) -> str:
    return hashlib.sha256(event_canonical(event, prev_hash)).hexdigest()


def _when(value: Any) -> str:
    if not isinstance(value, datetime):  # a string given to create(): what the column will hold
        value = DateTimeField().to_python(value)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _address(value: str | None) -> str | None:
    """IPv6 written out in full: PostgreSQL's inet output and Python's (which changed for IPv4-mapped addresses in
    3.13) may shorten the same address differently."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return value
    return address.exploded if address.version == 6 else str(address)


def _as_stored(value: Any) -> Any:
    """What a JSON column gives back: JSON types only (tuples become lists, keys strings), and whole floats as
    integers, since PostgreSQL's jsonb prints 1e16 as 10000000000000000 and 2.0 may come back either way."""
    return _whole_floats(json.loads(json.dumps(value, allow_nan=False)))


def _whole_floats(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_floats(item) for key, item in value.items()}
    return value
