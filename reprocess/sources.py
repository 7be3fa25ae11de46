"""Where a reprocess batch's documents come from: the environment's configured query against the application's
PostgreSQL, or a CSV of `workspace_id,document_id`. Each returns the pairs, or raises SourceError with every
problem it found (a CSV's bad lines, one per line), so that nothing is half-created."""

from __future__ import annotations

import csv
import io

from django.conf import settings
from django.contrib.auth.models import User
from django.utils.translation import gettext as _

from backups.postgres import PostgresError, pg_connection_from_env
from backups.readonly import ConfiguredQueryError, QueryAudit, QueryResult, read_only_query, read_only_session
from dr_console.text import untrusted_text
from inventory.models import Environment

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
    """(clean value, problem). Ids go into the request path (percent-encoded), so any text works but empty, or
    with a control character: escaping it would send another id, and PostgreSQL refuses NUL in the item's row."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "", _("%(column)s is empty") % {"column": what}
    if len(text) > MAX_ID_LENGTH:
        return "", _("%(column)s is longer than %(max)s characters") % {"column": what, "max": MAX_ID_LENGTH}
    if untrusted_text(text) != text:
        return "", _("%(column)s holds a control character: %(value)s") % {
            "column": what,
            "value": untrusted_text(text),
        }
    return text, ""


def _clean_pair(workspace: object, document: object) -> tuple[tuple[str, str] | None, str]:
    """((workspace_id, document_id), "") or (None, the first problem)."""
    workspace_id, problem = _clean_id(workspace, "workspace_id")
    document_id, problem2 = _clean_id(document, "document_id")
    if problem or problem2:
        return None, problem or problem2
    return (workspace_id, document_id), ""


class _UniqueDocuments:
    """The documents a source names, each once, in the order first seen; more than REPROCESS_MAX_ITEMS is refused
    with `too_many`."""

    def __init__(self, too_many: str) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.duplicates = 0
        self._seen: set[tuple[str, str]] = set()
        self._too_many = too_many

    def add(self, pair: tuple[str, str]) -> None:
        if pair in self._seen:
            self.duplicates += 1
            return
        self._seen.add(pair)
        self.pairs.append(pair)
        if len(self.pairs) > settings.REPROCESS_MAX_ITEMS:
            raise SourceError([self._too_many])


def _line_problem(line: int, problem: str) -> str:
    return _("line %(line)s: %(problem)s") % {"line": line, "problem": problem}


def documents_from_csv(text: str) -> tuple[list[tuple[str, str]], int]:
    """Parse `workspace_id,document_id` lines (a header line is optional). Returns the unique pairs in file order
    and how many duplicate lines were dropped."""
    errors: list[str] = []
    documents = _UniqueDocuments(
        _("more than %(max)s documents; split the file") % {"max": settings.REPROCESS_MAX_ITEMS}
    )
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if not documents.pairs and not errors and tuple(cell.strip().lower() for cell in row) == CSV_HEADER:
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
            documents.add((workspace_id, document_id))
    except csv.Error as exc:
        errors.append(_line_problem(reader.line_num, _("not valid CSV (%(error)s)") % {"error": exc}))
    if errors:
        raise SourceError(errors)
    if not documents.pairs:
        raise SourceError([_("the CSV lists no documents (expected lines of workspace_id,document_id)")])
    return documents.pairs, documents.duplicates


def documents_from_query(environment: Environment, *, requested_by: User | None = None) -> list[tuple[str, str]]:
    """Run the environment's reprocess query the way every configured query runs (backups/readonly.py): one
    statement, read-only, with a statement timeout; as the read-only role of `reprocess_query_url_env` when there
    is one (the datastore's own role may write: it restores)."""
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
    audit = QueryAudit(purpose="reprocess query", about=environment, actor=requested_by)
    try:
        target = pg_connection_from_env(environment.reprocess_query_url_env or store.url_env)
        with read_only_session(target) as conn:
            result = read_only_query(
                conn,
                environment.effective_reprocess_query,
                database=target,
                timeout_ms=settings.REPROCESS_QUERY_TIMEOUT * 1000,
                audit=audit,
            )
    except PostgresError as exc:
        raise SourceError([str(exc)]) from None
    except ConfiguredQueryError as exc:
        message = (
            _("the console refused the reprocess query on %(datastore)s: %(error)s")
            if exc.refused
            else _("the reprocess query failed on %(datastore)s: %(error)s")
        )
        raise SourceError([message % {"datastore": store.name, "error": exc.text()}]) from None
    return _documents_from_rows(result)


def _documents_from_rows(result: QueryResult) -> list[tuple[str, str]]:
    columns = result.columns
    if len(columns) < 2:
        raise SourceError(
            [
                _("the reprocess query must return workspace_id, document_id; it returned %(columns)s")
                % {"columns": columns or _("nothing")}
            ]
        )
    ws_index = columns.index("workspace_id") if "workspace_id" in columns else 0
    doc_index = columns.index("document_id") if "document_id" in columns else 1
    documents = _UniqueDocuments(
        _("the query returned more than %(max)s documents; narrow it") % {"max": settings.REPROCESS_MAX_ITEMS}
    )
    errors: list[str] = []
    for number, row in enumerate(result.rows, start=1):
        pair, problem = _clean_pair(row[ws_index], row[doc_index])
        if pair is None:
            errors.append(_("row %(row)s: %(problem)s") % {"row": number, "problem": problem})
        else:
            documents.add(pair)
    if errors:
        raise SourceError(errors)
    return documents.pairs


def documents_from_failed_jobs(environment: Environment) -> tuple[list[tuple[str, str]], int]:
    """The (workspace_id, document_id) of every failed RQ job in the environment's queues, read through
    queues.selectors (which never unpickles what it reads). Returns the unique pairs and how many failed jobs
    carry no document (left out)."""
    import redis

    from queues.rqclient import QueueUnavailable
    from queues.selectors import environment_failed_jobs

    documents = _UniqueDocuments(
        _("more than %(max)s failed jobs; requeue them in batches") % {"max": settings.REPROCESS_MAX_ITEMS}
    )
    skipped = 0
    try:
        for job in environment_failed_jobs(environment=environment):
            key = job.document_key()
            pair, _problem = _clean_pair(*(key or (None, None)))
            if pair is None:
                skipped += 1
            else:
                documents.add(pair)
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
    return documents.pairs, skipped
