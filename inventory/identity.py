"""Which database a datastore's URL actually reaches: its identity, asked of the server itself.

Records are only names. Two records (`prod-db` in a protected environment, `prod-alias` in `dev`) can point at the
same database, a URL can change after an approval, and a record can point at the console's own database or broker.
Protection, locks and those guards therefore compare identities, never URL spellings:

- PostgreSQL: the cluster's `system_identifier` (pg_control_system(), fixed at initdb) and the database name;
- Redis: the server's `run_id` (INFO server) and the database number the connection selects.

Each identity also records the server's resolved address (`endpoint`): two identities name the same database when
the database matches and either the server or the endpoint does. So a Redis restart (a new run_id at the same
address) or a PostgreSQL cluster rebuilt at the same address is still "the same target", while a URL that now
reaches another server is not.

Resolving an identity connects to the server (with a short timeout); it runs where the URL is set, usually the
workers. The health check (backups.health) stores each datastore's newest identity, so a process without the URL
(the web process, in compose) still knows it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from django.conf import settings
from django.db import connection
from psycopg.conninfo import conninfo_to_dict

from dr_console.secrets import secret_env

DEFAULT_TIMEOUT_SECONDS = 5


class IdentityUnknown(Exception):
    """The identity could not be resolved from here; the message says why, without the URL."""


@dataclass(frozen=True)
class TargetIdentity:
    kind: str  # Datastore.Kind value: "postgres" or "redis"
    server: str  # PostgreSQL system_identifier, Redis run_id; "" when the server would not say
    endpoint: str  # "10.0.0.5:5432", "unix:/run/redis.sock": the address the connection reached
    database: str  # database name, or Redis database number

    @property
    def lock_key(self) -> str:
        """The target lock's key: the same for every record (and URL spelling) reaching this database."""
        return f"{self.kind}:{self.server or self.endpoint}/{self.database}"

    def same_database(self, other: TargetIdentity | None) -> bool:
        if other is None or self.kind != other.kind or self.database != other.database:
            return False
        return bool(self.server and self.server == other.server) or self.endpoint == other.endpoint

    def with_database(self, database: str) -> TargetIdentity:
        """Another database of the same server (a restore into a new database)."""
        return TargetIdentity(self.kind, self.server, self.endpoint, database)

    def describe(self) -> str:
        """For messages: safe to show (no credentials)."""
        if self.kind == "redis":
            return f"Redis database {self.database} at {self.endpoint} (run_id {self.server[:12] or 'unknown'})"
        return f"database {self.database} at {self.endpoint} (cluster {self.server or 'unknown'})"

    def as_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TargetIdentity | None:
        if not isinstance(data, dict) or not data.get("kind"):
            return None
        return cls(
            kind=str(data["kind"]),
            server=str(data.get("server", "")),
            endpoint=str(data.get("endpoint", "")),
            database=str(data.get("database", "")),
        )


def identity_from_env(kind: str, url_env: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> TargetIdentity:
    """The identity of what the URL in variable `url_env` reaches, asked of its server. Raises IdentityUnknown."""
    url = secret_env(url_env)
    if not url:
        raise IdentityUnknown(f"environment variable {url_env} is not set on host {socket.gethostname()}")
    if kind == "redis":
        return redis_identity(url, what=url_env, timeout=timeout)
    return postgres_identity(url, what=url_env, timeout=timeout)


def postgres_identity(url: str, *, what: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> TargetIdentity:
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.Error:
        raise IdentityUnknown(f"{what} holds a malformed PostgreSQL URL") from None
    params["connect_timeout"] = str(max(1, int(timeout)))
    params["application_name"] = "dr-console identity"
    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            return postgres_identity_of(conn, params)
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        password = params.get("password")
        if password:
            detail = detail.replace(str(password), "********")
        raise IdentityUnknown(f"cannot ask the server in {what} which database it is: {detail[:300]}") from None


def postgres_identity_of(conn: Any, params: dict[str, Any]) -> TargetIdentity:
    """The identity of the database an open psycopg connection reached; `params` are its connection parameters
    (for a Unix socket's directory)."""
    row = conn.execute(
        "SELECT current_database(), inet_server_addr()::text, inet_server_port(), "
        "has_function_privilege('pg_control_system()', 'EXECUTE')"
    ).fetchone()
    database, address, port, may_read_control = row
    server = ""  # pg_control_system() revoked from PUBLIC by a careful admin: the address alone then
    if may_read_control:
        server = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
    if address is None:  # a Unix socket: its directory and port name it
        host = str(params.get("host") or "/var/run/postgresql").split(",")[0]
        endpoint = f"unix:{os.path.realpath(host)}/.s.PGSQL.{port or params.get('port') or 5432}"
    else:
        endpoint = f"{_address(address.split('/')[0])}:{port}"
    return TargetIdentity("postgres", server, endpoint, str(database))


def redis_identity(url: str, *, what: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> TargetIdentity:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError:
        raise IdentityUnknown(f"{what} holds a malformed Redis URL") from None
    try:
        with client:
            info = client.info("server")
    except redis.ResponseError:  # INFO renamed or denied by ACL: the address alone then
        info = {}
    except (redis.RedisError, OSError) as exc:
        password = urlsplit(url).password
        detail = " ".join(str(exc).split())
        if password:
            detail = detail.replace(password, "********")
        raise IdentityUnknown(f"cannot ask the Redis in {what} which server it is: {detail[:300]}") from None
    return redis_identity_of(client, info)


def redis_identity_of(client: redis.Redis, info: dict[str, Any]) -> TargetIdentity:
    """The identity of the database a Redis client selects, given the server's INFO server reply."""
    kwargs = client.connection_pool.connection_kwargs
    database = str(kwargs.get("db", 0))  # what the client selects: the path, or ?db= when both are given
    if "path" in kwargs:
        endpoint = f"unix:{os.path.realpath(kwargs['path'])}"
    else:
        endpoint = f"{_resolve(str(kwargs.get('host', 'localhost')))}:{kwargs.get('port', 6379)}"
    return TargetIdentity("redis", str(info.get("run_id", "")), endpoint, database)


def _resolve(host: str) -> str:
    """The address a host name resolves to (the first); the name itself when it does not resolve (the
    connection then fails and says so)."""
    try:
        return _address(str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]))
    except (OSError, IndexError):
        return host


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


# --- the console's own --------------------------------------------------------------------------------------------


# The console's own identities are asked for before every job and for every datastore of a health check: each
# answer is kept a few seconds (they change only when a server is rebuilt or restarted).
_OWN_TTL_SECONDS = 30
_own_cache: dict[tuple[str, str], tuple[float, TargetIdentity]] = {}


def _cached(key: tuple[str, str], resolve: Callable[[], TargetIdentity | None]) -> TargetIdentity | None:
    now = time.monotonic()
    hit = _own_cache.get(key)
    if hit is not None and now - hit[0] < _OWN_TTL_SECONDS:
        return hit[1]
    identity = resolve()
    if identity is not None:
        _own_cache[key] = (now, identity)
    return identity


def console_database_identity() -> TargetIdentity | None:
    """The console's own database, asked over its own connection; None when it is not PostgreSQL (SQLite)."""
    if connection.vendor != "postgresql":
        return None

    def resolve() -> TargetIdentity:
        with connection.cursor() as cursor:
            return postgres_identity_of(cursor.connection, connection.get_connection_params())

    return _cached(("database", str(connection.settings_dict["NAME"])), resolve)


def broker_identity() -> TargetIdentity | None:
    """The console's Redis broker; None when the broker is not Redis (the embedded one), or does not answer (the
    broker guard then cannot compare, and the job could not be queued anyway)."""
    url = settings.CELERY_BROKER_URL
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        return None

    def resolve() -> TargetIdentity | None:
        try:
            return redis_identity(url, what="CELERY_BROKER_URL", timeout=2)
        except IdentityUnknown:
            return None

    return _cached(("broker", url), resolve)
