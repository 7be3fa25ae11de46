"""The heartbeat a running job keeps from a side thread, and the exception that tells the job's own thread to stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connection

logger = logging.getLogger(__name__)


class JobStopped(Exception):
    """The row left its running state under the job (cancelled, or reaped): stop working, record nothing more."""


class JobHeartbeat(threading.Thread):
    """Keeps a running job's lease fresh from a side thread, whatever the job's own thread is blocked on (pg_dump
    waiting for a lock writes nothing for minutes), and notices when the row leaves its running state: then it
    calls the `on_stop` callbacks once (e.g. to stop the job's subprocess).

    `beat()` records the heartbeat and returns False when the job should stop.
    """

    def __init__(self, beat: Callable[[], bool], interval: float) -> None:
        super().__init__(name="job-heartbeat", daemon=True)
        self._beat = beat
        self._interval = interval
        self._done = threading.Event()
        self._on_stop: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.stopped = threading.Event()

    def on_stop(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self.stopped.is_set():
                callback()
            else:
                self._on_stop.append(callback)

    def check(self) -> None:
        """Raise JobStopped in the job's thread if the job was cancelled or reaped."""
        if self.stopped.is_set():
            raise JobStopped

    def run(self) -> None:
        try:
            while not self._done.wait(self._interval):
                try:
                    alive = self._beat()
                except Exception:  # a database hiccup must not kill the job; the next beat retries
                    logger.warning("heartbeat failed", exc_info=True)
                    continue
                if not alive:
                    with self._lock:
                        self.stopped.set()
                        callbacks, self._on_stop = self._on_stop, []
                    for callback in callbacks:
                        callback()
                    return
        finally:
            connection.close()  # this thread's own database connection

    def __enter__(self) -> JobHeartbeat:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self.join(timeout=30)
