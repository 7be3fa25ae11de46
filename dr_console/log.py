"""Logging filters of the console's own log configuration (settings.LOGGING)."""

from __future__ import annotations

import logging


class RefusalFilter(logging.Filter):
    """A refusal is one line: Django logs every 403 (PermissionDenied) on `django.request` with the exception's
    traceback, which says nothing an operator needs. The line keeps the path and gains the user's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403:
            record.exc_info, record.exc_text = None, None
            request = getattr(record, "request", None)
            user = getattr(request, "user", None)
            if user is not None and getattr(user, "is_authenticated", False):
                record.msg = f"{record.msg} (user %s)"
                record.args = (*(record.args if isinstance(record.args, tuple) else ()), user.get_username())
        return True
