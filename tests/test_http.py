"""Request-wide behaviour: the user's timezone."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from tests.factories import BackupArtifactFactory, user_in_groups

pytestmark = pytest.mark.django_db


def test_times_are_shown_in_the_browsers_timezone(client: Client) -> None:
    client.force_login(user_in_groups("vera", "viewer"))
    artifact = BackupArtifactFactory()
    utc_hour = artifact.created_at.strftime("%H:%M")
    client.cookies["tz"] = "Asia/Kolkata"  # UTC+05:30, no daylight saving
    html = client.get(f"/backups/{artifact.pk}/").content.decode()
    local = artifact.created_at.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%H:%M")
    assert local in html and local != utc_hour
    client.cookies["tz"] = "Not/AZone"  # garbage falls back to the server's zone
    assert client.get(f"/backups/{artifact.pk}/").status_code == 200


def test_favicon_ico_answers_for_the_admin_and_everyone(client: Client) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in response.content
