"""Fixtures of the backups tests that several modules share: a real age key, and two storage locations (a local
primary, an encrypted local copy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory.models import StorageLocation
from tests.support.age import age_keypair


@pytest.fixture
def age_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A real age key pair: the public recipient, and the key file (its identity also in OFFSITE_AGE_IDENTITY)."""
    key_file = tmp_path / "key.txt"
    recipient, text = age_keypair(key_file)
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
