"""Connecting to an environment's RQ Redis, and reading its jobs without running the application's code.

rq stores a job's function and arguments with pickle by default. Unpickling runs whatever the pickle names, so
unpickling what sits in the application's Redis inside the console would let anyone who can write to that Redis
run code where every datastore URL is readable. The console therefore never uses rq's default serializer: pages
decode JSON, or pickles made only of plain values, within bounds on what decoding may allocate (queues.decoding),
and requeueing leaves the stored bytes untouched.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, NoReturn

import redis
from django.utils.translation import gettext as _
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.utils import decode_redis_hash

from dr_console.secrets import secret_env
from inventory.models import Environment
from queues import decoding

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


class InspectionSerializer:
    """For reading jobs on the pages: JSON (rq's JSONSerializer) or a pickle of plain values (rq's default), within
    the bounds of queues.decoding. Anything else is refused; rq then reports the job's data as undecodable, and
    the DecodeRefused it was raised from says why."""

    @staticmethod
    def dumps(obj: Any) -> NoReturn:
        raise TypeError("the console never writes job data")

    @staticmethod
    def loads(data: bytes) -> Any:
        return decoding.loads(data)


class InspectedJob(Job):
    """A job read for a page: its stored data and error are inflated within MAX_DECODE_BYTES (rq's own restore
    inflates whatever is there), and data over that limit is refused, with the reason, when first decoded."""

    _refused: decoding.DecodeRefused | None = None

    def restore(self, raw_data: Any) -> None:
        fields = dict(decode_redis_hash(raw_data))
        data, error = fields.get("data"), fields.pop("exc_info", None)
        fields["data"] = b""  # rq inflates this field itself: give it nothing to inflate, and set it below
        super().restore(fields)
        self._refused = None
        try:
            self.data = decoding.inflate(data) if data else b""
        except decoding.DecodeRefused as exc:
            self._refused = exc
        if error:
            self._exc_info = decoding.inflate(error, head=True).decode("utf-8", "replace")

    def _deserialize_data(self) -> None:
        if self._refused is not None:
            raise DeserializationError() from self._refused
        super()._deserialize_data()


def result_payload_bounded(payload: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """A result's stored fields for rq's Result.restore, with its error inflated within MAX_DECODE_BYTES and
    without its return value (the pages never show it, so it is never decoded)."""
    bounded = {key: value for key, value in payload.items() if key != b"return_value"}
    if error := bounded.get(b"exc_string"):
        head = decoding.inflate(base64.b64decode(error), head=True)
        bounded[b"exc_string"] = base64.b64encode(zlib.compress(head))
    return bounded


class OpaqueSerializer:
    """For requeueing: decodes nothing, so rq keeps the job's stored data and meta as they are (it writes back the
    bytes of a meta it could not read) and the application's own worker reads them as before."""

    @staticmethod
    def dumps(obj: Any) -> NoReturn:
        raise TypeError("the console never writes job data")

    @staticmethod
    def loads(data: bytes) -> NoReturn:
        raise ValueError("not decoded by the console")
