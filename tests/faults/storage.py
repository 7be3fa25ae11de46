"""An artifact storage with no local paths, as an object store (S3) is: files live in a local folder that the test
process and its worker share, but `artifacts.local_path` sees no path, so a restore copies the backup to the scratch
folder first, as it does in production with remote storage."""

from __future__ import annotations

from typing import IO, Any

from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, Storage


class PathlessStorage(Storage):
    def __init__(self, location: str) -> None:
        self._files = FileSystemStorage(
            location=location, file_permissions_mode=0o600, directory_permissions_mode=0o700
        )

    def _open(self, name: str, mode: str = "rb") -> File[Any]:
        return self._files.open(name, mode)

    def _save(self, name: str, content: File[IO[bytes]]) -> str:
        return self._files.save(name, content)

    def delete(self, name: str) -> None:
        self._files.delete(name)

    def exists(self, name: str) -> bool:
        return self._files.exists(name)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        return self._files.listdir(path)

    def size(self, name: str) -> int:
        return self._files.size(name)
