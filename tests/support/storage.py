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


def stored_files(location: Path) -> list[str]:
    """Every file under the artifact storage, temporary ones included."""
    if not location.exists():
        return []
    return sorted(str(p.relative_to(location)) for p in location.rglob("*") if p.is_file())
