"""Where a reprocess batch's documents come from: the environment's configured query against the application's
PostgreSQL, or a CSV of `workspace_id,document_id`. Each returns the pairs, or raises SourceError with every
problem it found (a CSV's bad lines, one per line), so that nothing is half-created."""

from __future__ import annotations

import csv
import io

import psycopg
from django.conf import settings
from django.utils.translation import gettext as _

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
        super().__init__("; ".join(shown) + ("; " + _("and %(count)s more") % {"count": more} if more else ""))
        self.errors = shown + ([_("... and %(count)s more") % {"count": more}] if more else [])


def _clean_id(value: object, what: str) -> tuple[str, str]:
    """(clean value, problem). Ids go into the request path (percent-encoded), so any text works but empty."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "", _("%(column)s is empty") % {"column": what}
    if len(text) > MAX_ID_LENGTH:
        return "", _("%(column)s is longer than %(max)s characters") % {"column": what, "max": MAX_ID_LENGTH}
    return text, ""


def _line_problem(line: int, problem: str) -> str:
    return _("line %(line)s: %(problem)s") % {"line": line, "problem": problem}


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
                errors.append(
                    _("line %(line)s: expected 2 columns (workspace_id,document_id), got %(count)s")
                    % {"line": line, "count": len(row)}
                )
                continue
            workspace_id, problem = _clean_id(row[0], "workspace_id")
            if problem:
                errors.append(_line_problem(line, problem))
                continue
            document_id, problem = _clean_id(row[1], "document_id")
            if problem:
                errors.append(_line_problem(line, problem))
                continue
            pair = (workspace_id, document_id)
            if pair in seen:
                duplicates += 1
                continue
            seen.add(pair)
            pairs.append(pair)
            if len(pairs) > settings.REPROCESS_MAX_ITEMS:
                raise SourceError(
                    [_("more than %(max)s documents; split the file") % {"max": settings.REPROCESS_MAX_ITEMS}]
                )
    except csv.Error as exc:
        errors.append(_line_problem(reader.line_num, _("not valid CSV (%(error)s)") % {"error": exc}))
    if errors:
        raise SourceError(errors)
    if not pairs:
        raise SourceError([_("the CSV lists no documents (expected lines of workspace_id,document_id)")])
    return pairs, duplicates


def documents_from_query(environment: Environment) -> list[tuple[str, str]]:
    """Run the environment's reprocess query in a read-only transaction with a statement timeout."""
    store = environment.postgres_datastore
    if store is None:
        raise SourceError(
            [
                _(
                    "environment %(environment)s has no postgres_datastore: set the datastore holding the "
                    "application's documents in the admin or with loadconfig"
                )
                % {"environment": environment.name}
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
                    [
                        _("the reprocess query ran longer than %(seconds)s s and was stopped")
                        % {"seconds": settings.REPROCESS_QUERY_TIMEOUT}
                    ]
                ) from None
            except psycopg.Error as exc:
                raise SourceError(
                    [
                        _("the reprocess query failed on %(datastore)s: %(error)s")
                        % {"datastore": store.name, "error": target.scrub(first_line(str(exc)))}
                    ]
                ) from None
            columns = [column.name for column in cursor.description or []]
            if len(columns) < 2:
                raise SourceError(
                    [
                        _("the reprocess query must return workspace_id, document_id; it returned %(columns)s")
                        % {"columns": columns or _("nothing")}
                    ]
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
                    errors.append(_("row %(row)s: %(problem)s") % {"row": number, "problem": problem or problem2})
                    continue
                if (workspace_id, document_id) not in seen:
                    seen.add((workspace_id, document_id))
                    pairs.append((workspace_id, document_id))
                if len(pairs) > settings.REPROCESS_MAX_ITEMS:
                    raise SourceError(
                        [
                            _("the query returned more than %(max)s documents; narrow it")
                            % {"max": settings.REPROCESS_MAX_ITEMS}
                        ]
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
                raise SourceError(
                    [
                        _("more than %(max)s failed jobs; requeue them in batches")
                        % {"max": settings.REPROCESS_MAX_ITEMS}
                    ]
                )
    except QueueUnavailable as exc:
        raise SourceError([str(exc)]) from None
    except redis.RedisError as exc:
        store = environment.redis_datastore
        raise SourceError(
            [
                _("reading the failed jobs from %(datastore)s failed: %(error)s")
                % {"datastore": store.name if store else "Redis", "error": type(exc).__name__}
            ]
        ) from None
    return pairs, skipped
