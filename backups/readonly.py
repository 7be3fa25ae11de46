"""Running SQL that someone configured (an environment's reprocess query, a datastore's drill probes) so that it can
only read, and only for a while. One way for every caller: `read_only_session` and `read_only_query`.

What the console enforces, and why each part is needed (issue #12):
1. One statement. A query without parameters goes out on the simple query protocol, where `SELECT 1; COMMIT;
   UPDATE ...` is three statements and the COMMIT ends any read-only transaction. The query is sent prepared
   (Parse/Bind/Execute), and the server refuses several commands in a prepared statement.
2. Read-only, by the server. The session's `default_transaction_read_only` is on, and each query runs in a
   transaction begun READ ONLY, where it is refused any write (a data-modifying CTE, SELECT FOR UPDATE, a function
   that writes). The console's own SELECT runs first in that transaction, so the query can no longer turn it
   read-write (`SET TRANSACTION READ WRITE`, `set_config('transaction_read_only', 'off', true)`: PostgreSQL allows
   that only before the transaction's first query). The transaction is always rolled back, which also undoes any
   setting the query changed for the session; a query that ended it (COMMIT) is refused.
3. Bounded in time: statement_timeout and lock_timeout local to the transaction, idle_in_transaction_session_timeout
   for the session (a worker that stops between statements must not hold a snapshot on production).

What it cannot enforce: what the connecting role may do outside a transaction's read-only rule (a superuser can
COPY TO PROGRAM; dblink opens another session). Run these queries as a role that can only read
(docs/configuration.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from psycopg import errors
from psycopg.pq import TransactionStatus

from audit.models import AuditEvent
from audit.services import audit_record
from backups.postgres import PgConnection, PostgresError, first_line
from dr_console.notes import Note
from dr_console.sqltext import sql_statement_count

LOCK_TIMEOUT_MS = 5_000  # at most; a lock held longer is a migration or a stuck session, not worth waiting for
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
_LIMITS_SQL = "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)"


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class ConfiguredQueryError(Exception):
    """The query did not give a result. `detail` is the console's words (a Note: refused, timed out) or the server's
    (a str, scrubbed); `refused` says the console or the server refused what the query tried, and it was audited."""

    def __init__(self, detail: Note | str, *, refused: bool = False) -> None:
        super().__init__(detail.english() if isinstance(detail, Note) else detail)
        self.detail = detail
        self.refused = refused

    def text(self) -> str:
        """The detail in the active language."""
        return self.detail.text() if isinstance(self.detail, Note) else self.detail


@dataclass(frozen=True)
class QueryAudit:
    """What the audit event of a refused query says: what the query is for, and where and for whom it ran."""

    purpose: str  # "reprocess query", "drill probe"
    about: models.Model | None = None
    actor: AbstractBaseUser | None = None
    actor_label: str = ""


@contextlib.contextmanager
def read_only_session(database: PgConnection) -> Iterator[psycopg.Connection[Any]]:
    """A connection for read_only_query. Autocommit, so that the console alone begins and ends transactions."""
    with database.connect(autocommit=True) as conn:
        try:
            conn.execute("SET default_transaction_read_only = on")
            conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}")
        except psycopg.Error as exc:
            raise PostgresError(
                f"cannot set up a read-only session on {database.dbname!r} at {database.server_label}: "
                f"{database.scrub(first_line(str(exc)))}"
            ) from None
        yield conn


def read_only_query(
    conn: psycopg.Connection[Any], query: str, *, database: PgConnection, timeout_ms: int, audit: QueryAudit
) -> QueryResult:
    """Run one configured statement on a read_only_session and return its rows. Raises ConfiguredQueryError; a
    refusal is recorded in the audit log first.

    1. More than one statement is refused before anything is sent (the server would refuse it too: step 3).
    2. BEGIN READ ONLY, then the console's SELECT setting the timeouts (this is the transaction's first query).
    3. The query, prepared: one statement, whatever the text holds.
    4. The transaction must still be open (the query did not COMMIT it); it is rolled back in every case."""
    if sql_statement_count(query) > 1:
        raise _refused(Note("query_several_statements"), query, database, audit)
    lock_ms = max(1, min(LOCK_TIMEOUT_MS, timeout_ms // 2))  # shorter: waiting on a lock is said as such
    try:
        conn.execute("BEGIN READ ONLY")
        conn.execute(_LIMITS_SQL, (str(timeout_ms), str(lock_ms)))
        cursor = conn.cursor()
        cursor.execute(query, prepare=True)  # configured SQL, run as written by design: see the module docstring
    except psycopg.Error as exc:
        _end_transaction(conn)
        raise _server_error(exc, query, database, audit, timeout_ms=timeout_ms, lock_ms=lock_ms) from None
    try:
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            note = Note("query_ended_transaction", {"command": cursor.statusmessage or "?"})
            raise _refused(note, query, database, audit)
        columns = [column.name for column in cursor.description or []]
        return QueryResult(columns, cursor.fetchall() if cursor.description else [])
    finally:
        _end_transaction(conn)


def _server_error(
    exc: psycopg.Error, query: str, database: PgConnection, audit: QueryAudit, *, timeout_ms: int, lock_ms: int
) -> ConfiguredQueryError:
    error = database.scrub(first_line(str(exc)))
    if isinstance(exc, errors.SyntaxError) and "multiple commands" in error:
        return _refused(Note("query_several_statements"), query, database, audit)
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return _refused(Note("query_writes", {"error": error}), query, database, audit)
    if isinstance(exc, errors.ActiveSqlTransaction) and "read-write" in error:
        return _refused(Note("query_read_write", {"error": error}), query, database, audit)
    if isinstance(exc, errors.QueryCanceled) and "statement timeout" in error:
        return ConfiguredQueryError(Note("query_timed_out", {"seconds": _seconds(timeout_ms)}))
    if isinstance(exc, errors.LockNotAvailable):
        return ConfiguredQueryError(Note("query_lock_timeout", {"seconds": _seconds(lock_ms)}))
    return ConfiguredQueryError(error)


def _refused(note: Note, query: str, database: PgConnection, audit: QueryAudit) -> ConfiguredQueryError:
    audit_record(
        action=AuditEvent.Action.QUERY_REFUSED,
        actor=audit.actor,
        actor_label=audit.actor_label,
        obj=audit.about,
        details={
            "purpose": audit.purpose,
            "database": database.dbname,
            "server": database.server_label,
            "query": query[:2000],
            "problem": note.english(),
        },
    )
    return ConfiguredQueryError(note, refused=True)


def _end_transaction(conn: psycopg.Connection[Any]) -> None:
    """Roll back whatever state the transaction is in. A connection that cannot is closed: the next query must
    not run in a transaction the console did not begin."""
    if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        conn.close()


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}"
