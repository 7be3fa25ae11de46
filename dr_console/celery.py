"""The Celery app that runs the console's own jobs (dump, verify, restore). Start it with
`celery -A dr_console worker`."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from dr_console.text import UntrustedTextFilter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dr_console.settings")

app = Celery("dr_console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _escape_untrusted_text_in_worker_logs(logger: logging.Logger, **kwargs: Any) -> None:
    """A worker replaces the root logger's handlers with its own (settings.LOGGING's filter goes with them): give
    them the filter too, so a key name logged by a job is escaped there as well."""
    for handler in logger.handlers:
        if not any(isinstance(existing, UntrustedTextFilter) for existing in handler.filters):
            handler.addFilter(UntrustedTextFilter())
