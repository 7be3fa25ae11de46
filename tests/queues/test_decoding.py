"""Jobs written to the application's Redis to exhaust the console's memory when someone opens the queue page: a
real RQ job whose stored data is replaced by a crafted pickle (or a zlib bomb), read by the real page. Each is
refused before it allocates, the page says why next to the job, and the job is left as it was."""

from __future__ import annotations

import pickle
import struct
import tracemalloc
import uuid
import zlib
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from queues import decoding
from queues.rqclient import InspectionSerializer
from tests.factories import user_in_groups
from tests.queues import jobs
from tests.queues.conftest import QueueEnv

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
FUNC = "tests.queues.jobs.process"
# Far below what any of these would allocate if decoded: 300 MB, a terabyte, 2**40 list items.
MEMORY_BOUND = 64 * 2**20


class _Call:
    """Pickles as a call of `func` with `args` (REDUCE), without calling it here."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def job_data(*args: Any) -> bytes:
    """What rq stores for `process(*args)`: (func_name, instance, args, kwargs), pickled."""
    return pickle.dumps((FUNC, None, args, {}), protocol=pickle.HIGHEST_PROTOCOL)


def job_data_around(value: bytes) -> bytes:
    """rq's job tuple around an argument given as raw pickle opcodes (for values pickle.dumps cannot make)."""
    return b"\x80\x02(" + pickle.dumps(FUNC, 2)[2:-1] + b"N" + value + b"\x85}t."


def deep_list(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)  # EMPTY_LIST each, then APPEND each into the one before


def billion_laughs(levels: int) -> bytes:
    """A list of two references to a list of two references to ...: 2**levels items when walked."""
    ops = b"]q\x00"  # EMPTY_LIST, memo 0
    for level in range(1, levels + 1):
        ops += b"(h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"lq" + bytes([level])  # [m, m] -> memo
    return ops


def _self_holding() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


BOMBS = {
    "bytearray(10**12)": (job_data(_Call(bytearray, 10**12)), "it calls bytearray() with arguments that could"),
    "bytearray(300 MB)": (job_data(_Call(bytearray, 300 * 2**20)), "it calls bytearray() with arguments that could"),
    "bytearray(range)": (job_data(_Call(bytearray, range(10**12))), "it calls bytearray() with arguments that could"),
    "frozenset(range)": (job_data(_Call(frozenset, range(2 * 10**6))), "it calls frozenset() with arguments"),
    "set(range)": (job_data(_Call(set, range(10**12))), "it calls set() with arguments that could allocate"),
    "NEWOBJ frozenset(range)": (
        # frozenset.__new__(frozenset, range(10**12)): GLOBAL, the range, TUPLE1, NEWOBJ
        job_data_around(b"cbuiltins\nfrozenset\n" + pickle.dumps(range(10**12), 2)[2:-1] + b"\x85\x81"),
        "it is neither JSON nor a well-formed pickle",  # pickle refuses: our checked frozenset is not a type
    ),
    "deep nesting": (job_data_around(deep_list(20_000)), "its values nest more than 32 deep"),
    "billion laughs": (job_data_around(billion_laughs(40)), "its values would print longer than 1,000,000"),
    "large integer": (job_data(1 << 800_000), "it holds an integer of more than 1,000 digits"),
    "many items": (job_data([None] * 200_000), "it holds more than 50,000 pickle operations"),
    "huge memo index": (
        job_data_around(b"N" + b"r" + struct.pack("<I", 0xFFFFFFF0)),  # the C unpickler would grow its memo to it
        "it is neither JSON nor a well-formed pickle",
    ),
    "length past the end": (b"\x80\x04\x8e" + struct.pack("<Q", 10**12) + b"x", "it is neither JSON nor a well-formed"),
    "holds itself": (job_data(_self_holding()), "it holds itself"),
    "zlib bomb": (zlib.compress(job_data("x" * 50 * 2**20)), "it is larger than 256.0\xa0KB"),
    "os.system": (job_data(jobs.Payload("/nonexistent")), "it names posix.system, which the console never loads"),
}


@pytest.fixture
def viewer_client() -> Client:
    client = Client()
    client.force_login(user_in_groups("vera", "viewer"))
    return client


def _open_list(client: Client, queue_env: QueueEnv, job_list: str) -> tuple[Any, int]:
    """The queue's job list as the page's htmx part asks for it, and the most memory Python held meanwhile."""
    url = reverse("queues:job_list", args=[queue_env.environment.name, "documents", job_list])
    tracemalloc.start()
    try:
        response = client.get(url, headers=HTMX)
        return response, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("bomb", BOMBS)
def test_a_crafted_job_is_refused_before_it_allocates_and_the_page_says_why(
    viewer_client: Client, queue_env: QueueEnv, bomb: str
) -> None:
    crafted, reason = BOMBS[bomb]
    job = queue_env.enqueue(1, description="crafted")
    queue_env.connection.hset(job.key, "data", crafted)
    stored = queue_env.connection.hgetall(job.key)
    response, peak = _open_list(viewer_client, queue_env, "queued")

    assert response.status_code == 200
    [detail] = response.context["job_page"].jobs
    assert detail.undecodable and detail.func_name is None
    assert detail.undecodable_reason.startswith(reason), detail.undecodable_reason
    assert f'Not decoded</span><span class="muted">: {reason}' in response.content.decode()
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MB"
    assert queue_env.connection.hgetall(job.key) == stored  # reading it changed nothing


def test_a_failed_jobs_error_is_inflated_within_the_bound(viewer_client: Client, queue_env: QueueEnv) -> None:
    """The error rq keeps with a failed job is zlib-compressed too: a bomb there is cut, not inflated."""
    [job] = queue_env.fail(7)
    queue_env.connection.hset(job.key, "exc_info", zlib.compress(b"RuntimeError: " + b"x" * 200 * 2**20))
    response, peak = _open_list(viewer_client, queue_env, "failed")
    assert response.status_code == 200
    assert response.context["job_page"].jobs[0].func_name == FUNC  # its data is fine: decoded
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MB"


PLAIN_VALUES = (
    bytearray(b"\x00ab\xff"),
    {1, 2},
    frozenset({"a"}),
    uuid.UUID(int=12345),
    complex(1, 2),
    Decimal("1.50"),
    datetime(2026, 12, 8, 1, 2, 3, tzinfo=UTC),
    date(2026, 1, 2),
    timedelta(seconds=5),
    timezone(timedelta(hours=2), "X"),
    range(10**12),
    slice(1, 10, 2),
    OrderedDict(a=1),
    [[1, [2, [3]]]],
    10**900,
)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_values_still_decode_in_every_pickle_protocol(protocol: int) -> None:
    data = pickle.dumps((FUNC, None, PLAIN_VALUES, {"k": b"v"}), protocol=protocol)
    assert InspectionSerializer.loads(data) == (FUNC, None, PLAIN_VALUES, {"k": b"v"})


def test_shared_values_count_each_time_they_are_met() -> None:
    """A string referenced twice is printed twice: a few thousand references to one 200 kB string are refused."""
    text = "x" * 200_000
    with pytest.raises(decoding.DecodeRefused, match="would print longer"):
        InspectionSerializer.loads(pickle.dumps([text] * 10, protocol=2))
    assert InspectionSerializer.loads(pickle.dumps([text] * 2, protocol=2)) == [text, text]


def test_json_jobs_are_bounded_too() -> None:
    with pytest.raises(decoding.DecodeRefused, match="nest more than 32 deep"):
        InspectionSerializer.loads(b"[" * 100 + b"]" * 100)
    with pytest.raises(decoding.DecodeRefused, match="neither JSON nor"):
        InspectionSerializer.loads(b"[" * 100_000 + b"]" * 100_000)
