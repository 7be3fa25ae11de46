"""Where a reprocess batch's documents come from: the environment's configured query against the application's
PostgreSQL, or a CSV of `workspace_id,document_id`. Each returns the pairs, or raises SourceError with every
problem it found (a CSV's bad lines, one per line), so that nothing is half-created."""

from __future__ import annotations

import csv
import io

import psycopg
from django.conf import settings

from backups.models import Environment
from backups.postgres import PostgresError, first_line, pg_connection_from_env

MAX_ID_LENGTH = 64
MAX_LISTED_ERRORS = 20
CSV_HEADER = ("workspace_id", "document_id")


class SourceError(Exception):
    """The batch cannot be built. `errors` lists each problem (for a CSV: one per bad line)."""

    def __init__(self, errors: list[str]) -> None:
        shown = errors[:MAX_LISTED_ERRORS]
        more = len(errors) - len(shown)
        super().__init__("; ".join(shown) + (f"; and {more} more" if more else ""))
        self.errors = shown + ([f"... and {more} more"] if more else [])


def _clean_id(value: object, what: str) -> tuple[str, str]:
    """(clean value, problem). Ids go into the request path (percent-encoded), so any text works but empty."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "", f"{what} is empty"
    if len(text) > MAX_ID_LENGTH:
        return "", f"{what} is longer than {MAX_ID_LENGTH} characters"
    return text, ""


def documents_from_csv(text: str) -> tuple[list[tuple[str, str]], int]:
    """Parse `workspace_id,document_id` lines (a header line is optional). Returns the unique pairs in file order
    and how many duplicate lines were dropped."""
    errors: list[str] = []
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if not pairs and not errors and tuple(cell.strip().lower() for cell in row) == CSV_HEADER:
                continue
            if len(row) != 2:
                errors.append(f"line {line}: expected 2 columns (workspace_id,document_id), got {len(row)}")
                continue
            workspace_id, problem = _clean_id(row[0], "workspace_id")
            if problem:
                errors.append(f"line {line}: {problem}")
                continue
            document_id, problem = _clean_id(row[1], "document_id")
            if problem:
                errors.append(f"line {line}: {problem}")
                continue
            pair = (workspace_id, document_id)
            if pair in seen:
                duplicates += 1
                continue
            seen.add(pair)
            pairs.append(pair)
            if len(pairs) > settings.REPROCESS_MAX_ITEMS:
                raise SourceError([f"more than {settings.REPROCESS_MAX_ITEMS} documents; split the file"])
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: not valid CSV ({exc})")
    if errors:
        raise SourceError(errors)
    if not pairs:
        raise SourceError(["the CSV lists no documents (expected lines of workspace_id,document_id)"])
    return pairs, duplicates


def documents_from_query(environment: Environment) -> list[tuple[str, str]]:
    """Run the environment's reprocess query in a read-only transaction with a statement timeout."""
    store = environment.postgres_datastore
    if store is None:
        raise SourceError(
            [
                f"environment {environment.name} has no postgres_datastore: set the datastore holding the "
                "application's documents in the admin or with loadconfig"
            ]
        )
    query = environment.effective_reprocess_query
    try:
        target = pg_connection_from_env(store.url_env)
        with target.connect() as conn:
            conn.read_only = True
            timeout_ms = settings.REPROCESS_QUERY_TIMEOUT * 1000
            conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
            try:
                cursor = conn.execute(query)
            except psycopg.errors.QueryCanceled:
                raise SourceError(
                    [f"the reprocess query ran longer than {settings.REPROCESS_QUERY_TIMEOUT} s and was stopped"]
                ) from None
            except psycopg.Error as exc:
                raise SourceError(
                    [f"the reprocess query failed on {store.name}: {target.scrub(first_line(str(exc)))}"]
                ) from None
            columns = [column.name for column in cursor.description or []]
            if len(columns) < 2:
                raise SourceError(
                    [f"the reprocess query must return workspace_id, document_id; it returned {columns or 'nothing'}"]
                )
            ws_index = columns.index("workspace_id") if "workspace_id" in columns else 0
            doc_index = columns.index("document_id") if "document_id" in columns else 1
            pairs: list[tuple[str, str]] = []
            seen: set[tuple[str, str]] = set()
            errors: list[str] = []
            for number, row in enumerate(cursor, start=1):
                workspace_id, problem = _clean_id(row[ws_index], "workspace_id")
                document_id, problem2 = _clean_id(row[doc_index], "document_id")
                if problem or problem2:
                    errors.append(f"row {number}: {problem or problem2}")
                    continue
                if (workspace_id, document_id) not in seen:
                    seen.add((workspace_id, document_id))
                    pairs.append((workspace_id, document_id))
                if len(pairs) > settings.REPROCESS_MAX_ITEMS:
                    raise SourceError(
                        [f"the query returned more than {settings.REPROCESS_MAX_ITEMS} documents; narrow it"]
                    )
    except PostgresError as exc:
        raise SourceError([str(exc)]) from None
    if errors:
        raise SourceError(errors)
    return pairs


def documents_from_failed_jobs(environment: Environment) -> tuple[list[tuple[str, str]], int]:
    """The (workspace_id, document_id) of every failed RQ job in the environment's queues, read through
    queues.selectors (which never unpickles what it reads). Returns the unique pairs and how many failed jobs
    carry no document (left out)."""
    import redis

    from queues.rqclient import QueueUnavailable
    from queues.selectors import environment_failed_jobs

    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    skipped = 0
    try:
        for job in environment_failed_jobs(environment=environment):
            key = job.document_key()
            workspace_id, problem = _clean_id(key[0] if key else None, "workspace_id")
            document_id, problem2 = _clean_id(key[1] if key else None, "document_id")
            if problem or problem2:
                skipped += 1
            elif (workspace_id, document_id) not in seen:
                seen.add((workspace_id, document_id))
                pairs.append((workspace_id, document_id))
            if len(pairs) > settings.REPROCESS_MAX_ITEMS:
                raise SourceError([f"more than {settings.REPROCESS_MAX_ITEMS} failed jobs; requeue them in batches"])
    except QueueUnavailable as exc:
        raise SourceError([str(exc)]) from None
    except redis.RedisError as exc:
        store = environment.redis_datastore
        raise SourceError(
            [f"reading the failed jobs from {store.name if store else 'Redis'} failed: {type(exc).__name__}"]
        ) from None
    return pairs, skipped
