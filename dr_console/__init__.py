from __future__ import annotations

from dr_console.celery import app as celery_app

__all__ = ["celery_app"]
