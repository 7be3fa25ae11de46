"""Artifact storage, real files on disk: every test gets its own folder for the console's artifact storage
backend and scratch space (autouse), so a test sees exactly the files it made, temporary ones included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def artifact_dir(settings: Any, tmp_path: Path) -> Path:
    """Each test gets its own artifact storage folder (a fresh local storage backend)."""
    location = tmp_path / "artifacts"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
        },
    }
    settings.DR_SCRATCH_DIR = str(tmp_path / "scratch")
    return location


def stored_files(location: Path, *, manifests: bool = False) -> list[str]:
    """Every file under the artifact storage, temporary ones included; the manifests next to backups only when
    asked (backups.manifests: a backup's file is published with one)."""
    if not location.exists():
        return []
    return sorted(
        str(p.relative_to(location))
        for p in location.rglob("*")
        if p.is_file() and (manifests or not p.name.endswith(".manifest.json"))
    )


@pytest.fixture(autouse=True)
def mail_dir(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where unsent email goes (no EMAIL_URL: Django's file backend), for the test and the manage.py processes it
    starts: its own folder, never var/mail. In the test's own process Django keeps mail in `mail.outbox`."""
    path = tmp_path / "mail"
    settings.EMAIL_FILE_PATH = str(path)
    monkeypatch.setenv("EMAIL_FILE_PATH", str(path))
    monkeypatch.delenv("EMAIL_URL", raising=False)
    return path
