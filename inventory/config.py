"""Declarative configuration: environments and datastores from a TOML file (`manage.py loadconfig`).

All or nothing: every entry is checked first (unknown keys, bad values, references), and the file is applied in
one transaction only when it has no error. Applying the same file twice changes nothing.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.models import AuditEvent
from audit.services import audit_record
from dr_console.schedules import DEFAULT_TIMEZONE
from inventory.identity import TargetIdentity
from inventory.models import Datastore, Environment, StorageLocation, storage_locations_problem
from inventory.services import (
    DatastoreRefused,
    datastore_check_change,
    datastore_check_target,
    datastore_configured_notify,
    datastore_identity,
)

ENVIRONMENT_KEYS = {
    "protected": bool,
    "protected_data": bool,
    "required_approvals": int,
    "api_url": str,
    "description": str,
    "safety_backup": bool,
    "webhook_url_env": str,
    "api_token_env": str,
    "reprocess_concurrency": int,
    "reprocess_query": str,
    "reprocess_query_url_env": str,
    "postgres_datastore": str,
    "redis_datastore": str,
}
# Environment keys naming a datastore: set once the file's datastores exist, and checked against them.
ENVIRONMENT_DATASTORE_KEYS = {"postgres_datastore": Datastore.Kind.POSTGRES, "redis_datastore": Datastore.Kind.REDIS}
DATASTORE_KEYS = {
    "name": str,
    "environment": str,
    "kind": str,
    "url_env": str,
    "compression_level": int,
    "rpo_hours": int,
    "rto_minutes": int,
    "drill_schedule": str,
    "drill_server_url_env": str,
    "drill_probes": list,
    "schedule": str,
    "schedule_timezone": str,
    "storage_locations": list,
    "description": str,
}
# File keys whose model field has another name: errors name the key the file uses.
DATASTORE_KEY_FIELDS = {"schedule": "backup_schedule", "schedule_timezone": "backup_schedule_timezone"}
DATASTORE_FIELD_KEYS = {field: key for key, field in DATASTORE_KEY_FIELDS.items()} | {"rpo_target": "rpo_hours"}
DATASTORE_REQUIRED = ("name", "environment", "kind", "url_env")
DEFAULT_RPO_HOURS = 24  # the model's default: a file without `rpo_hours` means 24 h, as a new datastore gets
MAX_RPO_HOURS = 24 * 366
DEFAULT_RTO_MINUTES = 60  # the model's default
MAX_RTO_MINUTES = 60 * 24 * 7
# Keys that, left out of an entry, go back to the model's default: the file describes the whole datastore.
DATASTORE_DEFAULTS: dict[str, Any] = {"drill_schedule": "", "drill_server_url_env": "", "drill_probes": ""}
TOP_LEVEL_KEYS = {"environments", "datastores", "storage_locations"}
STORAGE_LOCATION_KEYS = {
    "name": str,
    "role": str,
    "region": str,
    "backend": str,
    "options": dict,
    "secret_options": dict,
    "object_lock": str,
    "object_lock_days": int,
    "recipients": list,
    "identity_env": str,
    "keep_last": int,
    "keep_daily": int,
    "keep_weekly": int,
    "keep_monthly": int,
    "description": str,
}
STORAGE_LOCATION_REQUIRED = ("name", "backend")
# Left out of an entry, a key goes back to the model's default: the file describes the whole location.
STORAGE_LOCATION_DEFAULTS: dict[str, Any] = {
    "role": StorageLocation.Role.PRIMARY,
    "region": "",
    "options": {},
    "secret_options": {},
    "object_lock": StorageLocation.ObjectLock.OFF,
    "object_lock_days": None,
    "recipients": [],
    "identity_env": "",
    "keep_last": 0,
    "keep_daily": 0,
    "keep_weekly": 0,
    "keep_monthly": 0,
    "description": "",
}
# Keys an older file may still have, and what to write instead.
RETIRED_KEYS = {
    "webhook_url": (
        "a webhook URL is a secret and is no longer kept in the console's database: put it in an environment "
        "variable of the console and its workers (.env; e.g. PROD_WEBHOOK_URL) and name it with webhook_url_env"
    ),
}


class ConfigError(Exception):
    """The file cannot be applied. `errors` lists every problem, each naming where it is."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class ConfigReport:
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def config_load_file(path: str | Path, actor_label: str = "") -> ConfigReport:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return config_apply(data, actor_label=actor_label, source=str(path))


def _check_types(where: str, entry: Any, schema: dict[str, type], errors: list[str]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        errors.append(f"{where}: expected a table of keys, got {type(entry).__name__}")
        return {}
    for key in sorted(set(entry) - set(schema)):
        if key in RETIRED_KEYS:
            errors.append(f"{where}.{key}: {RETIRED_KEYS[key]}")
        else:
            errors.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(schema))})")
    clean = {}
    for key, expected in schema.items():
        if key not in entry:
            continue
        value = entry[key]
        # bool is a subclass of int in Python; `required_approvals = true` is still a mistake.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors.append(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
            continue
        clean[key] = value
    return clean


def _validate(
    where: str,
    obj: Environment | Datastore | StorageLocation,
    errors: list[str],
    exclude: list[str],
    keys: dict[str, str] | None = None,
) -> None:
    try:
        obj.full_clean(exclude=exclude, validate_unique=False)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            label = where if name == "__all__" else f"{where}.{(keys or {}).get(name, name)}"
            errors.extend(f"{label}: {message}" for message in messages)


def config_apply(data: dict[str, Any], actor_label: str = "", source: str = "") -> ConfigReport:
    """Check everything, then create or update in one transaction. Raises ConfigError and applies nothing
    if any entry is wrong."""

    errors: list[str] = []
    report = ConfigReport()
    for key in sorted(set(data) - TOP_LEVEL_KEYS):
        errors.append(f"unknown top-level key {key!r} (allowed: environments, datastores, storage_locations)")

    planned_locations = _plan_storage_locations(data.get("storage_locations", []), errors)
    location_roles = dict(StorageLocation.objects.values_list("name", "role"))
    location_roles.update({location.name: location.role for location in planned_locations})

    environments_in = data.get("environments", {})
    if not isinstance(environments_in, dict):
        errors.append("environments: expected [environments.NAME] tables")
        environments_in = {}
    planned_envs: dict[str, Environment] = {}
    env_links: dict[str, dict[str, str]] = {}  # environment -> {"redis_datastore": "prod-redis", ...}
    for name, entry in environments_in.items():
        where = f"environments.{name}"
        values = _check_types(where, entry, ENVIRONMENT_KEYS, errors)
        env = Environment.objects.filter(name=name).first() or Environment(name=name)
        # Like every key, a link left out of the file leaves the environment's current one; "" unlinks.
        env_links[name] = {key: values.pop(key) for key in ENVIRONMENT_DATASTORE_KEYS if key in values}
        for key, value in values.items():
            setattr(env, key, value)
        _validate(where, env, errors, exclude=list(ENVIRONMENT_DATASTORE_KEYS))
        planned_envs[name] = env

    datastores_in = data.get("datastores", [])
    if not isinstance(datastores_in, list):
        errors.append("datastores: expected [[datastores]] entries")
        datastores_in = []
    planned_stores: list[tuple[Datastore, str]] = []
    planned_identities: dict[str, TargetIdentity | None] = {}
    seen: set[str] = set()
    for index, entry in enumerate(datastores_in):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"datastores[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        values = _check_types(where, entry, DATASTORE_KEYS, errors)
        missing = [
            key for key in DATASTORE_REQUIRED if key not in values and isinstance(entry, dict) and key not in entry
        ]
        errors.extend(f"{where}: missing required key {key!r}" for key in missing)
        if "name" not in values:
            continue
        if values["name"] in seen:
            errors.append(f"{where}: datastore {values['name']!r} is listed twice")
        seen.add(values["name"])
        env_name = values.get("environment", "")
        environment = planned_envs.get(env_name) or Environment.objects.filter(name=env_name).first()
        if env_name and environment is None:
            errors.append(f"{where}.environment: no environment {env_name!r} in this file or in the console")
        store = Datastore.objects.filter(name=values["name"]).first() or Datastore(name=values["name"])
        was = (store.url_env, store.kind, store.environment.name if store.environment_id else env_name)
        if (
            store.pk
            and environment is not None
            and store.environment_id
            and store.environment.name != env_name
            and store.artifacts.exists()
        ):
            errors.append(
                f"{where}.environment: {store.name} has backups in {store.environment.name}; "
                "it cannot move to another environment"
            )
        values.setdefault("storage_locations", [])
        probes = values.pop("drill_probes", [])
        if not all(isinstance(probe, str) and probe.strip() and "\n" not in probe for probe in probes):
            errors.append(f"{where}.drill_probes: expected a list of one-line SQL strings, got {probes!r}")
        values["drill_probes"] = "\n".join(probe.strip() for probe in probes if isinstance(probe, str))
        for key, value in {**DATASTORE_DEFAULTS, **values}.items():
            if key not in ("environment", "rpo_hours", "rto_minutes"):
                setattr(store, DATASTORE_KEY_FIELDS.get(key, key), value)
        if "compression_level" not in values:
            store.compression_level = None
        # Like compression_level, a schedule left out of the file means none (and UTC).
        store.backup_schedule = values.get("schedule", "")
        store.backup_schedule_timezone = values.get("schedule_timezone") or DEFAULT_TIMEZONE
        rpo_hours = values.get("rpo_hours", DEFAULT_RPO_HOURS)
        if not 1 <= rpo_hours <= MAX_RPO_HOURS:
            errors.append(f"{where}.rpo_hours: must be 1 to {MAX_RPO_HOURS} hours, got {rpo_hours}")
        else:
            store.rpo_target = timedelta(hours=rpo_hours)
        rto_minutes = values.get("rto_minutes", DEFAULT_RTO_MINUTES)
        if not 1 <= rto_minutes <= MAX_RTO_MINUTES:
            errors.append(f"{where}.rto_minutes: must be 1 to {MAX_RTO_MINUTES} minutes, got {rto_minutes}")
        else:
            store.rto_target = timedelta(minutes=rto_minutes)
        if problem := storage_locations_problem(store.storage_locations, location_roles):
            errors.append(f"{where}.storage_locations: {problem}")
        exclude = ["environment", "storage_locations"]
        if "kind" in values and values["kind"] not in Datastore.Kind.values:
            valid = ", ".join(Datastore.Kind.values)
            errors.append(f"{where}.kind: unknown kind {values['kind']!r}; valid kinds: {valid}")
            exclude.append("kind")  # said once, above; the checks that need a kind skip this datastore
        _validate(where, store, errors, exclude=exclude, keys=DATASTORE_FIELD_KEYS)
        if store.url_env and store.kind in Datastore.Kind.values:
            moved = [
                field
                for field, before, after in zip(
                    ("url_env", "kind", "environment"), was, (store.url_env, store.kind, env_name), strict=True
                )
                if before != after
            ]
            identity = datastore_identity(store, stored="url_env" not in moved)
            try:
                datastore_check_change(store, moved)
                datastore_check_target(store, identity)
                _check_not_twins(store, identity, planned_stores, planned_identities)
            except DatastoreRefused as exc:
                errors.append(f"{where}: {exc}")
            planned_identities[store.name] = identity
        planned_stores.append((store, env_name))
        if values.get("url_env") and not os.environ.get(values["url_env"]):
            report.warnings.append(
                f"{where}: environment variable {values['url_env']} is not set in this process; "
                "the workers that run its backups must have it"
            )

    planned_by_name = {store.name: (store, env_name) for store, env_name in planned_stores}
    for env_name, links in env_links.items():
        for key, store_name in links.items():
            if store_name:
                _check_link(f"environments.{env_name}.{key}", env_name, store_name, key, planned_by_name, errors)

    if errors:
        audit_record(
            action=AuditEvent.Action.CONFIG_REFUSED,
            actor_label=actor_label or "console",
            details={"source": source, "errors": errors},
        )
        raise ConfigError(errors)

    with transaction.atomic():
        for location in planned_locations:
            report.changes.append(_save(f"storage location {location.name}", location))
        for name, env in planned_envs.items():
            if env.pk is None:
                env.postgres_datastore = env.redis_datastore = None  # linked below, once the datastores are saved
            report.changes.append(_save(f"environment {name}", env, skip=tuple(ENVIRONMENT_DATASTORE_KEYS)))
        for store, env_name in planned_stores:
            env = planned_envs.get(env_name) or Environment.objects.get(name=env_name)
            store.environment = env
            report.changes.append(_save(f"datastore {store.name}", store))
            datastore_configured_notify(datastore=store)
        for name, env in planned_envs.items():
            for key, store_name in env_links[name].items():
                setattr(env, key, Datastore.objects.get(name=store_name) if store_name else None)
            linked = _save(f"environment {name}", env, only=tuple(ENVIRONMENT_DATASTORE_KEYS))
            if not linked.endswith("unchanged") and f"environment {name}: created" not in report.changes:
                report.changes.append(linked)  # a new environment's links are part of "created"
        audit_record(
            action=AuditEvent.Action.CONFIG_LOADED,
            actor_label=actor_label or "console",
            details={"source": source, "changes": report.changes, "warnings": report.warnings},
        )
    return report


def _plan_storage_locations(entries: Any, errors: list[str]) -> list[StorageLocation]:
    if not isinstance(entries, list):
        errors.append("storage_locations: expected [[storage_locations]] entries")
        return []
    planned: list[StorageLocation] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"storage_locations[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        values = _check_types(where, entry, STORAGE_LOCATION_KEYS, errors)
        errors.extend(
            f"{where}: missing required key {key!r}"
            for key in STORAGE_LOCATION_REQUIRED
            if key not in values and isinstance(entry, dict) and key not in entry
        )
        if "name" not in values:
            continue
        if values["name"] in seen:
            errors.append(f"{where}: storage location {values['name']!r} is listed twice")
        seen.add(values["name"])
        location = StorageLocation.objects.filter(name=values["name"]).first() or StorageLocation(name=values["name"])
        for key, value in {**STORAGE_LOCATION_DEFAULTS, **values}.items():
            setattr(location, f"retention_{key}" if key.startswith("keep_") else key, value)
        keys = {f"retention_{key}": key for key in STORAGE_LOCATION_KEYS if key.startswith("keep_")}
        _validate(where, location, errors, exclude=[], keys=keys)
        planned.append(location)
    return planned


def _check_not_twins(
    store: Datastore,
    identity: TargetIdentity | None,
    planned: list[tuple[Datastore, str]],
    identities: dict[str, TargetIdentity | None],
) -> None:
    """Two datastores of the same file must not reach the same database either (the check against the console's
    datastores cannot see the ones not saved yet)."""
    for other, _env_name in planned:
        if other.kind != store.kind:
            continue
        if other.url_env == store.url_env or (
            identity is not None and identity.same_database(identities.get(other.name))
        ):
            raise DatastoreRefused(
                f"{store.name} ({store.url_env}) reaches the same database as {other.name} ({other.url_env}), "
                "also in this file; one database must have one record"
            )


def _check_link(
    where: str,
    env_name: str,
    store_name: str,
    key: str,
    planned: dict[str, tuple[Datastore, str]],
    errors: list[str],
) -> None:
    """An environment's postgres_datastore/redis_datastore must name a datastore of that kind in that environment."""
    if store_name in planned:
        store, store_env = planned[store_name]
    else:
        existing = Datastore.objects.select_related("environment").filter(name=store_name).first()
        if existing is None:
            errors.append(f"{where}: no datastore {store_name!r} in this file or in the console")
            return
        store, store_env = existing, existing.environment.name
    kind = ENVIRONMENT_DATASTORE_KEYS[key]
    if store.kind not in Datastore.Kind.values:  # its unknown kind is reported where the datastore is
        return
    if store.kind != kind:
        errors.append(f"{where}: {store_name} is a {store.kind} datastore, not {kind}")
    elif store_env != env_name:
        errors.append(f"{where}: {store_name} belongs to environment {store_env}, not {env_name}")


def _save(
    label: str,
    obj: Environment | Datastore | StorageLocation,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> str:
    if obj.pk is None:
        obj.save()
        return f"{label}: created"
    model = type(obj)
    stored = model.objects.get(pk=obj.pk)
    changed = [
        f.name
        for f in model._meta.concrete_fields
        if not f.auto_created
        and f.name not in ("created_at", "updated_at", *skip)
        and (only is None or f.name in only)
        and getattr(stored, f.attname) != getattr(obj, f.attname)
    ]
    if not changed:
        return f"{label}: unchanged"
    obj.save(update_fields=[*changed, "updated_at"])
    return f"{label}: updated ({', '.join(changed)})"
