"""Text from outside the console made safe to store, log and show: Redis key names, a tool's stderr, HTTP bodies,
database names, the fields of the application's RQ jobs.

PostgreSQL refuses NUL in a text column and in jsonb (`DataError`), so one odd key name quoted in a failure message
made the failure itself crash. Other control characters are stored, but in a log line or a terminal they forge
lines, recolour the screen or hide what follows. `untrusted_text` escapes them visibly, the way Python writes them
(`\\x00`, `\\x1b`), so the operator still reads what the bytes were. It is for people, not a reversible encoding: a
backslash already in the text stays as it is. Apply it where the bytes come in; `audit_record`, `job_transition` and
the logging filter apply it again as a last line of defence (applying it twice changes nothing).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from dr_console.secrets import mask_secrets, secret_values

# C0 and C1 control characters and DEL; the Unicode line and paragraph separators (line breaks to str.splitlines
# and to some log viewers); lone surrogates (what a `surrogateescape` decode leaves: not UTF-8, refused by psycopg).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_UNSAFE_BUT_NEWLINES_AND_TABS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def untrusted_text(value: str | bytes, *, multiline: bool = False) -> str:
    """`value` safe for a text or JSON column, a log line and a page. Bytes are read as UTF-8, an invalid byte shown
    as `\\xff`. NUL and every other control character become `\\x00`-style escapes; with `multiline`, newlines and
    tabs are kept (a stderr tail, a traceback: text meant to have lines). Without it the result is one line."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes | bytearray) else value
    pattern = _UNSAFE_BUT_NEWLINES_AND_TABS if multiline else _UNSAFE
    if pattern.search(text) is None:  # the usual case: nothing to copy
        return text
    return pattern.sub(_escaped, text)


def untrusted_data(value: Any) -> Any:
    """`value` with `untrusted_text(..., multiline=True)` applied to every string in it, dictionary keys included,
    through dicts, lists and tuples: for JSON columns (audit details, a job's checks). Anything else is returned as
    it is."""
    if isinstance(value, str):
        return untrusted_text(value, multiline=True)
    if isinstance(value, dict):
        return {untrusted_data(key): untrusted_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [untrusted_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(untrusted_data(item) for item in value)
    return value


class UntrustedTextFilter(logging.Filter):
    """Makes a log record safe before any handler writes it: a message whose text (format and arguments together)
    holds a control character or a line break is replaced by its escaped text, so a key name in an argument can
    neither start a forged log line nor reach the terminal raw. The traceback keeps its lines, escaped otherwise.
    Secret values (dr_console.secrets) are masked in the message and the traceback.
    Configured on the handlers in settings.LOGGING, and on the Celery worker's own handlers (dr_console/celery.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed format: the handler reports it as it would have
            return True
        secrets = secret_values()
        masked = mask_secrets(message, secrets)
        if masked != message or _UNSAFE.search(message):
            record.msg, record.args = untrusted_text(masked), ()
        if record.exc_info and not record.exc_text:
            # What Formatter.format would compute, computed here so that it is escaped (and masked) too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = untrusted_text(mask_secrets(record.exc_text, secrets), multiline=True)
        if record.stack_info:
            record.stack_info = untrusted_text(record.stack_info, multiline=True)
        return True
