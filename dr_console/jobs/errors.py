"""The expected failure of a job, which every layer may raise."""

from __future__ import annotations


class JobFailed(Exception):
    """An expected failure of a job: recorded on the row as its error (FAILED), with the tool's stderr tail. The
    errors of the tools and services a job talks to (PostgresError, RedisDatastoreError) are kinds of it."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail
