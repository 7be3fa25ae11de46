"""The Celery app that runs the console's own jobs (dump, verify, restore). Start it with
`celery -A dr_console worker`."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dr_console.settings")

app = Celery("dr_console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
