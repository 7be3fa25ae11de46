"""Job functions for the queue tests: real RQ jobs, run by a real rq worker."""

from __future__ import annotations

import time

from rq import get_current_job


def process(workspace_id: str, document_id: int) -> str:
    """Fails while the key `broken:<document_id>` exists in the job's Redis; succeeds once it is gone."""
    job = get_current_job()
    assert job is not None
    if job.connection.exists(f"broken:{document_id}"):
        raise RuntimeError(f"cannot process document {document_id}")
    return "READY"


def update_missing_table(workspace_id: str, document_id: int) -> str:
    """Fails as a job does while its table is being restored: PostgreSQL's error names the relation, then shows the
    statement and a caret under it."""
    import psycopg

    from tests.support.postgres import PG_ADMIN_URL

    with psycopg.connect(PG_ADMIN_URL) as conn:
        conn.execute("UPDATE documents_being_restored SET status = 'PROCESSING' WHERE id = %s", [document_id])
    return "READY"


def hold(workspace_id: str, document_id: int) -> str:
    """Runs until the key `release` exists (a job that stays started while a test looks at it)."""
    job = get_current_job()
    assert job is not None
    deadline = time.monotonic() + 60
    while not job.connection.exists("release") and time.monotonic() < deadline:
        time.sleep(0.05)
    return "READY"


class Payload:
    """Pickled as a call to os.system: unpickling it would run a shell command."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.path}",))
