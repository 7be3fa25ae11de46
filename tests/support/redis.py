"""Real Redis datastores, never mocked: the protected application's Redis databases on the broker's server, each
number from the environment and emptied with FLUSHDB on that number only (never FLUSHALL: other suites may share
the server), and helpers that fill a Redis with every key type and read it back for comparison."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

# Each number comes from the environment so that several test runs on one Redis never share a database; the broker
# has its own (CELERY_BROKER_URL).
APP_REDIS_DB = int(os.environ.get("TEST_APP_REDIS_DB", "14"))  # the application's queue Redis
SECOND_REDIS_DB = int(os.environ.get("TEST_SECOND_REDIS_DB", "13"))  # a second, independent Redis


def redis_fill_all_types(client: redis.Redis) -> None:
    """15 keys of every type, in their small and large encodings, some with a TTL."""
    client.set("s:plain", "hello")
    client.set("s:ttl", "bye", px=600_000)
    client.set(b"s:bin\xff\x00", b"\x00\x01\xfe")
    client.set("s:int", 12345)
    client.set("s:long", "x" * 5000)  # DUMP compresses it
    client.set("s:utf8 ñandú ✓", "ü")
    client.rpush("l:small", "a", "b", "c")
    client.rpush("l:big", *[f"item{i}" for i in range(2000)])
    client.expire("l:big", 3600)
    client.hset("h:small", mapping={"a": "1", "b": "2"})
    client.hset("h:big", mapping={f"f{i}": "v" * 100 for i in range(600)})
    client.sadd("set:ints", *range(100))
    client.sadd("set:strs", "x", "y", "z")
    client.zadd("z:small", {"a": 1.5, "b": -2})
    client.zadd("z:big", {f"m{i}": i for i in range(300)})
    client.xadd("st:events", {"k": "v1"})
    client.xadd("st:events", {"k": "v2"})
    client.xgroup_create("st:events", "workers", id="0")
    client.pexpire("st:events", 900_000)


def redis_contents(client: redis.Redis) -> dict[bytes, tuple[bytes, Any]]:
    """Every key's type and value, compared as values (DUMP bytes of a hash or a set depend on insertion order)."""
    readers: dict[bytes, Any] = {
        b"string": client.get,
        b"list": lambda key: client.lrange(key, 0, -1),
        b"hash": client.hgetall,
        b"set": client.smembers,
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"stream": lambda key: (client.xrange(key), client.xinfo_groups(key)),
    }
    contents = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        contents[key] = (kind, readers[kind](key))
    return contents


def redis_db_url(db_number: int) -> str:
    """A Redis URL on the broker's server, with database `db_number`."""
    return urlsplit(os.environ["CELERY_BROKER_URL"])._replace(path=f"/{db_number}").geturl()


@dataclass
class AppRedis:
    """One Redis database of the protected application, its URL in an environment variable (as in production)."""

    url: str
    url_env: str
    client: redis.Redis


def _app_redis(monkeypatch: pytest.MonkeyPatch, db_number: int, url_env: str) -> Iterator[AppRedis]:
    url = redis_db_url(db_number)
    assert url != os.environ["CELERY_BROKER_URL"], f"Redis database {db_number} is the tests' broker: choose another"
    client = redis.Redis.from_url(url)
    client.flushdb()  # only this test run's own database number
    monkeypatch.setenv(url_env, url)
    yield AppRedis(url=url, url_env=url_env, client=client)
    client.flushdb()
    client.close()


@pytest.fixture
def app_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppRedis]:
    """The application's queue Redis (database TEST_APP_REDIS_DB), empty, its URL in TEST_APP_REDIS_URL."""
    yield from _app_redis(monkeypatch, APP_REDIS_DB, "TEST_APP_REDIS_URL")


@pytest.fixture
def second_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppRedis]:
    """Another Redis database (TEST_SECOND_REDIS_DB), empty, its URL in TEST_SECOND_REDIS_URL."""
    yield from _app_redis(monkeypatch, SECOND_REDIS_DB, "TEST_SECOND_REDIS_URL")
