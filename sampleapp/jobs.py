"""The RQ job the worker runs: process one document (PENDING -> PROCESSING -> READY)."""

from __future__ import annotations

import threading
import time
from typing import Any

from psycopg_pool import ConnectionPool

from sampleapp import db
from sampleapp.config import config_from_env

_pool: ConnectionPool[Any] | None = None
_pool_lock = threading.Lock()


def _connection_pool() -> ConnectionPool[Any]:
    # The worker runs jobs one at a time in its own process (rq's SimpleWorker): one pooled connection is reused
    # by every job instead of a new connection per job.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = db.pool_open(config_from_env(need_token=False).database_url, max_size=2)
        return _pool


class DocumentNotFound(LookupError):
    pass


def reprocess_document(workspace_id: str, document_id: int) -> str:
    """Mark the document PROCESSING, "process" it, mark it READY. A document that does not exist (any more)
    fails the job, which then shows in RQ's failed registry."""
    pool = _connection_pool()
    with pool.connection() as conn:
        found = conn.execute(
            "UPDATE documents SET status = 'PROCESSING', updated_at = now() "
            "WHERE id = %s AND workspace_id = %s RETURNING id",
            [document_id, workspace_id],
        ).fetchone()
    if found is None:
        raise DocumentNotFound(f"document {document_id} of workspace {workspace_id} does not exist")
    seconds = config_from_env(need_token=False).job_seconds
    if seconds > 0:
        time.sleep(seconds)
    with pool.connection() as conn:
        conn.execute("UPDATE documents SET status = 'READY', updated_at = now() WHERE id = %s", [document_id])
    return "READY"
