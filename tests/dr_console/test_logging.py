"""The console's real logging configuration (settings.LOGGING, as Django applies it with DEBUG on, as `make run`
runs): a refusal is one line, not two tracebacks."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils.log import configure_logging

from tests.factories import DatastoreFactory, user_in_groups

pytestmark = pytest.mark.django_db


@pytest.fixture
def console_log() -> Iterator[io.StringIO]:
    """What the console handler writes, configured exactly as the settings say, into a buffer."""
    buffer = io.StringIO()
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"]["stream"] = buffer
    configure_logging(settings.LOGGING_CONFIG, config)
    try:
        yield buffer
    finally:
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def test_a_403_is_one_log_line_naming_the_path_and_the_user(console_log: io.StringIO, settings: Any) -> None:
    settings.DEBUG = True  # as `make run` runs: Django's own console handler is on too
    datastore = DatastoreFactory(name="prod-db")
    client = Client()
    client.force_login(user_in_groups("vera", "viewer"))
    url = reverse("overview:datastore_backup", args=[datastore.pk])
    assert client.post(url).status_code == 403
    lines = [line for line in console_log.getvalue().splitlines() if line.strip()]
    assert "Traceback" not in console_log.getvalue() and "PermissionDenied" not in console_log.getvalue()
    assert len(lines) == 1, lines
    assert "WARNING django.request: Forbidden (Permission denied): " + url + " (user vera)" in lines[0]
