"""Configured queries (backups/readonly.py) against a real PostgreSQL: what a query that tries to write, to run
several statements, to undo the read-only transaction or to run for ever gets, and that the data stays as it was."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from audit.models import AuditEvent
from backups.postgres import PgConnection, pg_connection_from_env
from backups.readonly import ConfiguredQueryError, QueryAudit, read_only_query, read_only_session
from dr_console.sqltext import sql_statement_count
from tests.support.postgres import QUERY_ATTACKS, WRITING_FUNCTION, SourceDb, table_fingerprints

pytestmark = pytest.mark.django_db


@pytest.fixture
def app_db(source_db: SourceDb) -> Iterator[tuple[SourceDb, PgConnection]]:
    """The application's database (a documents table and a function that writes), reached as production is."""
    with source_db.connect() as conn:
        conn.execute(WRITING_FUNCTION)
    yield source_db, pg_connection_from_env(source_db.url_env)


def run(database: PgConnection, query: str, timeout_ms: int = 10_000) -> Any:
    with read_only_session(database) as conn:
        return read_only_query(conn, query, database=database, timeout_ms=timeout_ms, audit=QueryAudit("test query"))


@pytest.mark.parametrize(("query", "words"), QUERY_ATTACKS)
def test_a_query_that_tries_to_write_is_refused_changes_nothing_and_is_audited(
    app_db: tuple[SourceDb, PgConnection], query: str, words: str
) -> None:
    source_db, database = app_db
    before = table_fingerprints(source_db.url)
    with pytest.raises(ConfiguredQueryError) as caught:
        run(database, query)
    assert words in str(caught.value)
    assert caught.value.refused is True
    assert table_fingerprints(source_db.url) == before
    event = AuditEvent.objects.get(action=AuditEvent.Action.QUERY_REFUSED)
    assert event.details["query"] == query and words in event.details["problem"]
    assert event.details["purpose"] == "test query" and event.details["database"] == source_db.name


def test_the_server_refuses_several_statements_the_console_reads_as_one(
    app_db: tuple[SourceDb, PgConnection],
) -> None:
    """With standard_conforming_strings off (an old database's setting), a backslash escapes a quote: the
    console's scanner sees one statement in a string where the server sees two. The protocol is the guard."""
    source_db, database = app_db
    with source_db.connect() as conn:
        conn.execute(f'ALTER DATABASE "{source_db.name}" SET standard_conforming_strings = off')
    query = "SELECT 'a\\'' ; UPDATE documents SET title = 'pwned'"
    assert sql_statement_count(query) == 1
    before = table_fingerprints(source_db.url)
    with pytest.raises(ConfiguredQueryError, match="holds more than one statement") as caught:
        run(database, query)
    assert caught.value.refused
    assert table_fingerprints(source_db.url) == before
    assert AuditEvent.objects.filter(action=AuditEvent.Action.QUERY_REFUSED).count() == 1


def test_a_query_cannot_leave_the_session_writable_for_the_next_one(app_db: tuple[SourceDb, PgConnection]) -> None:
    source_db, database = app_db
    before = table_fingerprints(source_db.url)
    with read_only_session(database) as conn:
        audit = QueryAudit("test query")
        for query in (
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT set_config('statement_timeout', '0', false)",
        ):
            read_only_query(conn, query, database=database, timeout_ms=1000, audit=audit)
        result = read_only_query(
            conn,
            "SELECT current_setting('default_transaction_read_only'), current_setting('statement_timeout')",
            database=database,
            timeout_ms=1000,
            audit=audit,
        )
        assert result.rows == [("on", "1s")]  # the transaction's rollback undid both
        with pytest.raises(ConfiguredQueryError, match="cannot execute UPDATE in a read-only transaction"):
            read_only_query(conn, "SELECT mark_all_ready()", database=database, timeout_ms=1000, audit=audit)
    assert table_fingerprints(source_db.url) == before


def test_a_slow_query_is_stopped_by_the_statement_timeout(app_db: tuple[SourceDb, PgConnection]) -> None:
    _source_db, database = app_db
    started = time.monotonic()
    with pytest.raises(ConfiguredQueryError, match=r"^the query ran longer than 1 s and was stopped$") as caught:
        run(database, "SELECT set_config('statement_timeout', '0', true), pg_sleep(10)", timeout_ms=1000)
    assert time.monotonic() - started < 5
    assert caught.value.refused is False
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.QUERY_REFUSED).exists()


def test_a_query_waiting_for_a_lock_is_stopped_by_the_lock_timeout(app_db: tuple[SourceDb, PgConnection]) -> None:
    source_db, database = app_db
    locked, release = threading.Event(), threading.Event()

    def migration() -> None:  # another session holds the table, as a migration would
        with psycopg.connect(source_db.url) as conn:
            conn.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    thread = threading.Thread(target=migration)
    thread.start()
    try:
        assert locked.wait(10)
        with pytest.raises(ConfiguredQueryError, match="waited longer than 1 s for a lock and was stopped"):
            run(database, "SELECT count(*) FROM documents", timeout_ms=2000)
    finally:
        release.set()
        thread.join()


def test_a_read_only_query_returns_its_rows_percent_signs_and_trailing_semicolon_included(
    app_db: tuple[SourceDb, PgConnection],
) -> None:
    _source_db, database = app_db
    result = run(database, "SELECT count(*) AS n, 'x%s' AS s FROM documents WHERE title LIKE 'Doc 1%' ; -- done")
    assert result.columns == ["n", "s"]
    assert result.rows == [(96, "x%s")]
