"""Connecting to an environment's RQ Redis, and reading its jobs without running the application's code.

rq stores a job's function and arguments with pickle by default. Unpickling runs whatever the pickle names, so
unpickling what sits in the application's Redis inside the console would let anyone who can write to that Redis
run code where every datastore URL is readable. The console therefore never uses rq's default serializer: pages
decode JSON, or pickles made only of plain values, and requeueing leaves the stored bytes untouched.
"""

from __future__ import annotations

import io
import json
import pickle
from typing import Any, NoReturn

import redis
from django.utils.translation import gettext as _

from dr_console.secrets import secret_env
from inventory.models import Environment

CONNECT_TIMEOUT = 3  # seconds; a page must say "unreachable" quickly, not hang
READ_TIMEOUT = 5


class QueueUnavailable(Exception):
    """The environment's queues cannot be read; the message says why, in one line, without the URL."""


def environment_redis(environment: Environment) -> redis.Redis:
    """A client for the environment's RQ Redis (its `redis_datastore`), checked with a PING."""
    store = environment.redis_datastore
    if store is None:
        raise QueueUnavailable(
            _("No Redis datastore is linked to %(environment)s: set its redis_datastore in the configuration.")
            % {"environment": environment.name}
        )
    url = secret_env(store.url_env)
    if not url:
        raise QueueUnavailable(
            _("%(variable)s (the URL of %(datastore)s) is not set in the console's environment.")
            % {"variable": store.url_env, "datastore": store.name}
        )
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=READ_TIMEOUT)
        client.ping()
    except ValueError:
        raise QueueUnavailable(_("%(variable)s does not hold a Redis URL.") % {"variable": store.url_env}) from None
    except redis.RedisError as exc:
        raise QueueUnavailable(
            _("The Redis of %(datastore)s does not answer: %(reason)s")
            % {"datastore": store.name, "reason": redis_error_reason(exc)}
        ) from None
    return client


def redis_error_reason(exc: redis.RedisError) -> str:
    """What went wrong, without the host or the URL that redis-py puts in its messages."""
    if isinstance(exc, redis.AuthenticationError):
        return _("authentication failed")
    if isinstance(exc, redis.TimeoutError):
        return _("timed out")
    if isinstance(exc, redis.ConnectionError):
        return _("connection refused or lost")
    return type(exc).__name__


# Classes a job's arguments may name and still be decoded: plain values only, nothing with behaviour.
SAFE_PICKLE_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "range"),
        ("builtins", "slice"),
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("uuid", "UUID"),
        ("collections", "OrderedDict"),
    }
)


class _PlainValuesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


class InspectionSerializer:
    """For reading jobs on the pages: JSON (rq's JSONSerializer) or a pickle of plain values (rq's default).
    A pickle naming any other class or function is refused; rq then reports the job's data as undecodable."""

    @staticmethod
    def dumps(obj: Any) -> NoReturn:
        raise TypeError("the console never writes job data")

    @staticmethod
    def loads(data: bytes) -> Any:
        if data[:1] == b"\x80":  # every pickle protocol >= 2 starts with PROTO
            return _PlainValuesUnpickler(io.BytesIO(data)).load()
        return json.loads(data.decode("utf-8"))


class OpaqueSerializer:
    """For requeueing: decodes nothing, so rq keeps the job's stored data and meta as they are (it writes back the
    bytes of a meta it could not read) and the application's own worker reads them as before."""

    @staticmethod
    def dumps(obj: Any) -> NoReturn:
        raise TypeError("the console never writes job data")

    @staticmethod
    def loads(data: bytes) -> NoReturn:
        raise ValueError("not decoded by the console")
