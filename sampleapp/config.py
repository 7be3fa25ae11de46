"""The sample application's configuration: three environment variables, checked once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
import redis

QUEUE_NAME = "documents"


class ConfigError(Exception):
    """A configuration problem, said in one line (the command prints it and exits, no traceback)."""


@dataclass(frozen=True)
class Config:
    database_url: str
    redis_url: str
    token: str
    job_seconds: float  # how long a job "processes" between PROCESSING and READY (drills want a window)


def config_from_env(*, need_token: bool = True) -> Config:
    missing = [
        name
        for name in ("SAMPLEAPP_DATABASE_URL", "SAMPLEAPP_REDIS_URL", "SAMPLEAPP_TOKEN")
        if not os.environ.get(name) and (need_token or name != "SAMPLEAPP_TOKEN")
    ]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} not set (see sampleapp/config.py)")
    raw_seconds = os.environ.get("SAMPLEAPP_JOB_SECONDS", "0")
    try:
        job_seconds = float(raw_seconds)
    except ValueError:
        raise ConfigError(f"SAMPLEAPP_JOB_SECONDS={raw_seconds!r}: expected a number of seconds") from None
    return Config(
        database_url=os.environ["SAMPLEAPP_DATABASE_URL"],
        redis_url=os.environ["SAMPLEAPP_REDIS_URL"],
        token=os.environ.get("SAMPLEAPP_TOKEN", ""),
        job_seconds=job_seconds,
    )


def safe_location(url: str) -> str:
    """host:port/database of a URL, without the user or password: what error messages may show."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path}"


def check_reachable(config: Config) -> None:
    """Fail at start, in one line, when PostgreSQL or Redis does not answer."""
    try:
        psycopg.connect(config.database_url, connect_timeout=5).close()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"PostgreSQL at {safe_location(config.database_url)} is unreachable: {first_line}") from None
    try:
        redis.Redis.from_url(config.redis_url, socket_connect_timeout=5).ping()
    except (redis.RedisError, ValueError) as exc:
        raise ConfigError(f"Redis at {safe_location(config.redis_url)} is unreachable: {exc}") from None
