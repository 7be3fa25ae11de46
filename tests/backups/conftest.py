"""Fixtures of the backups tests that several modules share: a real age key, and two storage locations (a local
primary, an encrypted local copy)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from inventory.models import StorageLocation


@pytest.fixture
def age_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A real age key pair: the public recipient, and the key file (its identity also in OFFSITE_AGE_IDENTITY)."""
    key_file = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key_file)], check=True, capture_output=True)
    text = key_file.read_text()
    recipient = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("# public key: "))
    monkeypatch.setenv("OFFSITE_AGE_IDENTITY", text)
    return recipient, key_file


@pytest.fixture
def two_locations(tmp_path: Path, age_key: tuple[str, Path]) -> tuple[Path, Path]:
    local, offsite = tmp_path / "local", tmp_path / "offsite"
    StorageLocation.objects.create(
        name="local",
        role="primary",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(local)},
    )
    StorageLocation.objects.create(
        name="offsite",
        role="copy",
        region="eu-west",
        backend="django.core.files.storage.FileSystemStorage",
        options={"location": str(offsite)},
        recipients=[age_key[0]],
        identity_env="OFFSITE_AGE_IDENTITY",
    )
    return local, offsite
