"""Artifact storage, real files on disk: every test gets its own folder for the console's artifact storage
backend and scratch space (autouse), so a test sees exactly the files it made, temporary ones included."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import FileSystemStorage
from django.utils import timezone

from backups.object_store import ObjectLocked


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


class RetainingStorage(FileSystemStorage):
    """A local folder that keeps a bucket's Object Lock in compliance mode: every file in it is locked until
    `retain_until` (ISO), and a delete before then is refused, as S3 refuses it. For a location whose lock the
    console's rows do not know about (a bucket with a default retention)."""

    def __init__(self, *, retain_until: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retain_until = datetime.fromisoformat(retain_until)
        self.refusals = 0

    def delete(self, name: str) -> None:
        if self.exists(name) and timezone.now() < self.retain_until:
            self.refusals += 1
            raise ObjectLocked(name, self.retain_until, "COMPLIANCE")  # what object_store says of a locked object
        super().delete(name)
