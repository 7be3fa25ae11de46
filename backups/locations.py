"""Storage locations as the backup, copy, restore and retention code sees them: a name, a role, a Django storage
built with its credentials read from the variables its configuration names, and what it asks of each file written
there (encryption recipients, an Object Lock date).

Locations are configured as `inventory.StorageLocation` rows (loadconfig's `[[storage_locations]]`, the admin). The
built-in `default` location is STORAGES["artifacts"] (ARTIFACT_STORAGE_BACKEND): with nothing configured, every
backup goes there, as before locations existed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.module_loading import import_string

from dr_console.secrets import secret_env
from inventory.models import DEFAULT_STORAGE_LOCATION, Datastore, StorageLocation


class LocationUnavailable(Exception):
    """A location that cannot be used here: unknown, misconfigured, or its credentials are not set on this host."""


@dataclass(frozen=True)
class Location:
    name: str
    role: str = StorageLocation.Role.PRIMARY
    region: str = ""
    backend: str = ""
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    secret_options: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    object_lock: str = StorageLocation.ObjectLock.OFF
    lock_days: int = 0
    recipients: tuple[str, ...] = ()
    identity_env: str = ""
    retention: tuple[int, int, int, int] = (0, 0, 0, 0)  # keep last, daily, weekly, monthly
    builtin: bool = False
    version: str = ""  # the row's updated_at: a changed configuration builds a new storage

    @property
    def is_encrypted(self) -> bool:
        return bool(self.recipients)

    @property
    def is_locked(self) -> bool:
        return self.object_lock != StorageLocation.ObjectLock.OFF

    def retain_until(self, taken_at: datetime) -> datetime | None:
        """The Object Lock date of a file taken at `taken_at` (None: the location does not lock)."""
        return taken_at + timedelta(days=self.lock_days) if self.is_locked else None

    def storage(self) -> Storage:
        """The Django storage of this location, built once per configuration (credentials read here, now)."""
        if self.builtin:
            return storages["artifacts"]
        cache_key = (self.name, self.version, tuple(sorted(self.secret_options.items())))
        with _lock:
            cached = _storages.get(cache_key)
        if cached is not None:
            return cached
        storage = self._build()
        with _lock:
            _storages[cache_key] = storage
        return storage

    def _build(self) -> Storage:
        try:
            backend = import_string(self.backend)
        except ImportError as exc:
            raise LocationUnavailable(
                f"storage location {self.name}: the backend {self.backend} cannot be loaded ({exc})"
            ) from None
        options = dict(self.options)
        for option, variable in self.secret_options.items():
            value = secret_env(variable)
            if not value:
                raise LocationUnavailable(
                    f"storage location {self.name}: {variable} (its {option}) is not set on this host"
                )
            options[option] = value
        if issubclass(backend, FileSystemStorage):
            options.setdefault("file_permissions_mode", 0o600)
            options.setdefault("directory_permissions_mode", 0o700)
        try:
            return backend(**options)
        except TypeError as exc:
            raise LocationUnavailable(
                f"storage location {self.name}: its options do not fit {self.backend}: {exc}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a backend's own configuration error, told as one line
            raise LocationUnavailable(f"storage location {self.name}: {type(exc).__name__}: {exc}") from None

    def describe(self) -> str:
        """What a page or the CLI says about it (never a credential)."""
        parts = [self.name, self.role]
        if self.region:
            parts.append(self.region)
        if self.is_encrypted:
            parts.append("encrypted")
        if self.is_locked:
            parts.append(f"object lock {self.object_lock} {self.lock_days} d")
        return ", ".join(parts)


_lock = threading.Lock()
_storages: dict[tuple[Any, ...], Storage] = {}


def builtin_location() -> Location:
    backend = settings.STORAGES["artifacts"]["BACKEND"]
    return Location(name=DEFAULT_STORAGE_LOCATION, backend=backend, builtin=True)


def location_from_row(row: StorageLocation) -> Location:
    return Location(
        name=row.name,
        role=row.role,
        region=row.region,
        backend=row.backend,
        options=dict(row.options or {}),
        secret_options=dict(row.secret_options or {}),
        object_lock=row.object_lock,
        lock_days=row.lock_days,
        recipients=tuple(row.recipients or ()),
        identity_env=row.identity_env,
        retention=(
            row.retention_keep_last,
            row.retention_keep_daily,
            row.retention_keep_weekly,
            row.retention_keep_monthly,
        ),
        version=row.updated_at.isoformat() if row.updated_at else "",
    )


def location_get(name: str) -> Location:
    """The location called `name`; LocationUnavailable when none is (it was removed from the configuration)."""
    row = StorageLocation.objects.filter(name=name).first()
    if row is not None:
        return location_from_row(row)
    if name == DEFAULT_STORAGE_LOCATION:
        return builtin_location()
    raise LocationUnavailable(f"no storage location is named {name} (it is not in the configuration any more)")


def locations_all() -> list[Location]:
    """Every configured location, and the built-in one unless a row takes its name."""
    rows = [location_from_row(row) for row in StorageLocation.objects.all()]
    if not any(location.name == DEFAULT_STORAGE_LOCATION for location in rows):
        rows.insert(0, builtin_location())
    return rows


def datastore_primary_location(datastore: Datastore) -> Location:
    return location_get(datastore.primary_location_name)


def datastore_copy_locations(datastore: Datastore) -> list[Location]:
    return [location_get(name) for name in datastore.copy_location_names]
