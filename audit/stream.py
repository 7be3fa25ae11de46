"""The audit log's off-box copy: every committed event, as one JSON line, to syslog or to a file a log shipper
reads (settings.AUDIT_STREAM, from AUDIT_STREAM_URL). What reaches another machine cannot be erased by whoever owns
this one's database.

A line holds the event's id, `hash`, and the chained fields exactly as they were hashed (audit.chain.event_values),
so a receiver can check the chain on its own copy. Written once the transaction commits: an event rolled back is
never streamed. A sink that fails (syslog down, disk full) costs one warning line, never the event or the action.
"""

from __future__ import annotations

import json
import logging
import socket
from logging.handlers import SysLogHandler, WatchedFileHandler
from typing import Any

from django.conf import settings
from django.db import transaction

from audit import chain
from dr_console.cli import one_line

logger = logging.getLogger(__name__)

SYSLOG_TAG = "dr-console-audit: "  # RFC 3164 TAG: what a syslog rule matches on


class _RaisingSysLogHandler(SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        raise  # to audit_stream_write, which warns in one line (logging would print a traceback on stderr)


class _RaisingFileHandler(WatchedFileHandler):  # reopens the file a log rotation moved away
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        raise


_handlers: dict[tuple[tuple[str, Any], ...], logging.Handler] = {}


def event_line(event: Any) -> str:
    """One event as the stream carries it: one line of JSON."""
    document = {"id": event.pk, "hash": event.hash, "prev_hash": event.prev_hash, **chain.event_values(event)}
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def audit_stream_on_commit(event: Any, using: str) -> None:
    """Stream `event` once its transaction commits (at once outside one); nothing when no sink is configured."""
    if not settings.AUDIT_STREAM:
        return
    line = event_line(event)
    transaction.on_commit(lambda: audit_stream_write(event.pk, line), using=using, robust=True)


def audit_stream_write(event_id: int, line: str) -> bool:
    config = settings.AUDIT_STREAM
    key = tuple(sorted(config.items()))
    record = logging.LogRecord("dr_console.audit", logging.INFO, __file__, 0, line, None, None)
    try:
        handler = _handlers.get(key)
        if handler is None:
            handler = _handlers[key] = _handler(config)
        handler.handle(record)
    except Exception as exc:
        # The next event builds the sink anew: a syslog server back up, a TCP connection to open again.
        if (broken := _handlers.pop(key, None)) is not None:
            broken.close()
        logger.warning(
            "audit event #%s is recorded but was not streamed to %s: %s", event_id, _describe(config), one_line(exc)
        )
        return False
    return True


def audit_stream_close() -> None:
    """Close the open sinks (a TCP connection, a file); the next event opens them again."""
    while _handlers:
        _handlers.popitem()[1].close()


def _handler(config: dict[str, Any]) -> logging.Handler:
    handler: logging.Handler
    if config["kind"] == "file":
        handler = _RaisingFileHandler(config["path"], encoding="utf-8", delay=True)
    else:
        address: str | tuple[str, int] = config.get("socket") or (config["host"], config["port"])
        tcp = config.get("protocol") == "tcp"
        handler = _RaisingSysLogHandler(
            address=address,
            facility=SysLogHandler.facility_names[config["facility"]],
            socktype=socket.SOCK_STREAM if tcp else None,
        )
        handler.ident = SYSLOG_TAG
        handler.append_nul = False  # RFC 5424/5426: no terminator; over TCP, lines end with a newline instead
        if tcp:
            handler.setFormatter(logging.Formatter("%(message)s\n"))
    return handler


def _describe(config: dict[str, Any]) -> str:
    if config["kind"] == "file":
        return f"the file {config['path']}"
    if config.get("socket"):
        return f"syslog at {config['socket']}"
    return f"syslog at {config['host']}:{config['port']} ({config['protocol'].upper()})"
