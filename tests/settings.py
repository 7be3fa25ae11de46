"""Settings for the test suite: the one real settings file, loaded with test defaults in the environment.

pytest-django loads settings before any conftest.py runs, so the defaults live here. `make test` exports the
same; anything already set in the environment wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dr_console")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
os.environ.setdefault("JOB_HEARTBEAT_SECONDS", "1")
# pytest-django's live_server (the browser tests): 127.0.0.1 and a free port, like every server the tests start.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")

from dr_console.settings import *  # noqa: E402,F403

# The test client speaks plain HTTP, and static files are served from the apps (no collectstatic in tests).
SECURE_SSL_REDIRECT = False
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
