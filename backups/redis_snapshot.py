"""Talking to a protected Redis, and the console's Redis snapshot file (docs/redis-snapshot-format.md).

A snapshot is logical: SCAN the database, then DUMP and PTTL every key, pipelined a batch at a time, each key
written as one checksummed record. Memory stays flat: only the current batch (and the keys of the last few batches,
to drop SCAN's repeats) is held, never the key list.

Secrets rule, as for PostgreSQL: the URL lives in the environment variable the datastore names; it never reaches
a message, a log line or the console's database.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import hiredis
import redis
from redis.connection import Connection

from dr_console.jobs.errors import JobFailed
from dr_console.secrets import secret_env
from dr_console.text import untrusted_text

MAGIC = b"DRCREDIS"
FORMAT_VERSION = 1
FLAG_ZLIB = 0x0001
KEY_TAG = b"K"
END_TAG = b"E"
NO_EXPIRY = -1
SCAN_COUNT = 1000
CHUNK_SIZE = 1024 * 1024
SOCKET_TIMEOUT = 300.0  # one DUMP or RESTORE of a very large key may take a while
CONNECT_TIMEOUT = 10.0
# SCAN repeats a key only when the keyspace shrinks during the scan, and then close to where the cursor was:
# remembering the keys of the last few replies drops those repeats without holding the whole key list.
DEDUPE_WINDOW = 4

_HEADER = struct.Struct(">8sHHI")  # magic, version, flags, metadata length
_KEY_HEAD = struct.Struct(">cI")  # tag, key length
_KEY_MID = struct.Struct(">qI")  # expiry (absolute, ms), payload length
_END_HEAD = struct.Struct(">cQI")  # tag, key records, summary length
_CRC = struct.Struct(">I")

# The first byte of a DUMP payload is the RDB object type; several encodings map to one Redis type.
RDB_TYPES = {
    0: "string",
    **dict.fromkeys((1, 10, 14, 18), "list"),
    **dict.fromkeys((2, 11, 20), "set"),
    **dict.fromkeys((3, 5, 12, 17), "zset"),
    **dict.fromkeys((4, 9, 13, 16, 22, 23, 24, 25), "hash"),
    **dict.fromkeys((15, 19, 21), "stream"),
    **dict.fromkeys((6, 7), "module"),
}


class RedisDatastoreError(JobFailed):
    """An expected failure talking to a protected Redis (unset variable, unreachable, refused...)."""


class SnapshotCorrupt(Exception):
    """The snapshot file cannot be read back: the message says where and why."""


def payload_type(payload: bytes) -> str:
    return RDB_TYPES.get(payload[0], "other") if payload else "other"


# --- connecting ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisTarget:
    """How to reach one Redis database. `repr` never shows the URL."""

    url_env: str
    url: str = field(repr=False)
    label: str  # host:port/db, safe to show

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT, decode_responses=False
        )

    def scrub(self, text: str) -> str:
        password = urlsplit(self.url).password
        return text.replace(password, "********") if password else text

    def error(self, what: str, exc: BaseException) -> RedisDatastoreError:
        """A RedisDatastoreError naming the server (never the URL) and what failed. Redis quotes what it was sent
        (a key, a command) in its errors as raw bytes: the detail is escaped (dr_console.text)."""
        detail = untrusted_text(self.scrub(" ".join(str(exc).split()))) or type(exc).__name__
        return RedisDatastoreError(f"{what} at {self.label} (from {self.url_env}): {detail}")


def redis_target_from_env(url_env: str) -> RedisTarget:
    """Read the datastore's Redis URL from the environment variable named `url_env`."""
    value = secret_env(url_env)
    if not value:
        raise RedisDatastoreError(
            f"environment variable {url_env} is not set in the process that ran the job "
            f"(host {socket.gethostname()}); set it to the Redis URL (redis://:password@host:6379/0) in the "
            "worker's environment or .env, then restart it"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise RedisDatastoreError(f"environment variable {url_env} does not hold a Redis URL (expected redis://...)")
    try:
        db = int((parts.path or "/0").strip("/") or 0) if parts.scheme != "unix" else 0
        port = parts.port or 6379
    except ValueError:
        raise RedisDatastoreError(
            f"environment variable {url_env} holds a malformed Redis URL: the port and database must be numbers"
        ) from None
    label = f"{parts.path}" if parts.scheme == "unix" else f"{parts.hostname or 'localhost'}:{port}/{db}"
    return RedisTarget(url_env=url_env, url=value, label=label)


def server_version(client: redis.Redis) -> str:
    """'Redis 7.0.15'."""
    info = client.info("server")
    return f"Redis {info.get('redis_version', '?')}"


def version_tuple(text: str) -> tuple[int, int]:
    match = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def pipelined(conn: Connection, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send `commands` in one write and read every reply, in order. An error reply comes back as the
    ResponseError in its place (so one refused command never leaves the others' replies unread).

    Commands are packed by hiredis directly: redis-py's own packing checks every argument's type in Python, which
    cost more than the rest of a snapshot together (bench/redis_snapshot.py)."""
    if not commands:
        return []
    conn.send_packed_command([b"".join(map(hiredis.pack_command, commands))], check_health=False)
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


def server_time_ms(reply: Sequence[bytes]) -> int:
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


# --- writing ---------------------------------------------------------------------------------------------------


@dataclass
class SnapshotStats:
    """What a snapshot saw; the end record carries it, and the backup row records it."""

    keys: int = 0
    rdb_types: Counter[int] = field(default_factory=Counter)  # by the payload's first byte; named by `types()`
    vanished: int = 0  # SCAN named them, but they were gone (deleted or expired) by the time of DUMP
    repeats: int = 0  # SCAN returned them a second time
    payload_bytes: int = 0

    def types(self) -> dict[str, int]:
        named: Counter[str] = Counter()
        for rdb_type, count in self.rdb_types.items():
            named[RDB_TYPES.get(rdb_type, "other")] += count
        return dict(sorted(named.items()))

    def summary(self) -> dict[str, Any]:
        return {
            "types": self.types(),
            "vanished": self.vanished,
            "repeats": self.repeats,
            "payload_bytes": self.payload_bytes,
        }


class SnapshotWriter:
    """Turns records into the file's bytes, a chunk at a time (compressed when level > 0)."""

    def __init__(self, *, meta: dict[str, Any], compression_level: int) -> None:
        self.stats = SnapshotStats()
        self._buffer = bytearray()
        self._compressor = zlib.compressobj(compression_level) if compression_level > 0 else None
        meta_bytes = json.dumps(meta, sort_keys=True).encode()
        head = _HEADER.pack(MAGIC, FORMAT_VERSION, FLAG_ZLIB if self._compressor else 0, len(meta_bytes)) + meta_bytes
        self._header = head + _CRC.pack(zlib.crc32(head))

    def header(self) -> bytes:
        return self._header

    def add(self, key: bytes, expire_at_ms: int, payload: bytes) -> None:
        record = _KEY_HEAD.pack(KEY_TAG, len(key)) + key + _KEY_MID.pack(expire_at_ms, len(payload))
        crc = zlib.crc32(payload, zlib.crc32(record))
        buffer = self._buffer
        buffer += record
        buffer += payload
        buffer += _CRC.pack(crc)
        stats = self.stats
        stats.keys += 1
        stats.rdb_types[payload[0]] += 1  # a DUMP payload is never empty: it ends with its version and CRC
        stats.payload_bytes += len(payload)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def take(self) -> bytes:
        """The file bytes for what was added since the last call (may be empty while zlib buffers)."""
        data, self._buffer = bytes(self._buffer), bytearray()
        return self._compressor.compress(data) if self._compressor else data

    def finish(self) -> bytes:
        summary = json.dumps(self.stats.summary(), sort_keys=True).encode()
        end = _END_HEAD.pack(END_TAG, self.stats.keys, len(summary)) + summary
        self._buffer += end + _CRC.pack(zlib.crc32(end))
        data = self.take()
        return data + self._compressor.flush() if self._compressor else data


def snapshot_chunks(
    client: redis.Redis,
    writer: SnapshotWriter,
    *,
    checkpoint: Callable[[], None],
    scan_count: int = SCAN_COUNT,
) -> Iterator[bytes]:
    """The snapshot file of `client`'s database, in chunks of about 1 MiB.

    Per SCAN reply, one pipelined round trip: TIME, then DUMP and PTTL of each key. Expiry is stored as an
    absolute time on the server's clock (TIME + PTTL), so a restore days later does not revive keys that would
    have expired by then. A key whose DUMP is nil, or whose PTTL says it is gone, vanished during the scan (deleted
    or expired): it is counted and skipped. Its type is read from the DUMP payload itself, so a key that changed
    type between SCAN and DUMP is recorded consistently as what was dumped. `checkpoint` runs between batches
    (it raises to stop the job).
    """
    yield writer.header()
    conn = client.connection_pool.get_connection()
    stats = writer.stats
    recent: deque[list[bytes]] = deque()  # the keys of the last DEDUPE_WINDOW replies...
    window: set[bytes] = set()  # ...and the same keys as one set, for one lookup per key
    try:
        cursor = b"0"
        while True:
            checkpoint()
            ((cursor, keys),) = pipelined(conn, [("SCAN", cursor, "COUNT", scan_count)])
            fresh: list[bytes] = []
            for key in keys:
                if key in window:
                    stats.repeats += 1
                else:
                    window.add(key)
                    fresh.append(key)
            recent.append(fresh)
            if len(recent) > DEDUPE_WINDOW:
                window.difference_update(recent.popleft())
            commands: list[tuple[Any, ...]] = [("TIME",)]
            for key in fresh:
                commands.append(("DUMP", key))
                commands.append(("PTTL", key))
            replies = pipelined(conn, commands)
            now_ms = server_time_ms(replies[0])
            add = writer.add
            for key, payload, pttl in zip(fresh, replies[1::2], replies[2::2], strict=True):
                if payload is None or pttl == -2:
                    stats.vanished += 1
                elif type(payload) is bytes and type(pttl) is int:
                    add(key, NO_EXPIRY if pttl < 0 else now_ms + pttl, payload)
                else:  # an error reply (a module type without DUMP support, say): the snapshot cannot be complete
                    raise payload if isinstance(payload, redis.ResponseError) else pttl
            if writer.buffered >= CHUNK_SIZE and (data := writer.take()):
                yield data
            if cursor in (b"0", 0):
                break
        yield writer.finish()
    except BaseException:
        conn.disconnect()  # replies may be left unread: never hand this connection back as it is
        raise
    finally:
        client.connection_pool.release(conn)


# --- reading ---------------------------------------------------------------------------------------------------


class SnapshotRecord(NamedTuple):
    """One key of a snapshot. A tuple: a million of them are made per million keys read."""

    key: bytes
    expire_at_ms: int  # NO_EXPIRY, or absolute unix time in ms on the source server's clock
    payload: bytes

    @property
    def type_name(self) -> str:
        return payload_type(self.payload)


class SnapshotReader:
    """Reads a snapshot from chunks of the stored file, checking every record's CRC as it goes.

    `meta` is the header's metadata (after the first record is read); `count` and `summary` come from the end
    record once `records()` is exhausted. Any damage raises SnapshotCorrupt naming the record and what is wrong.
    The buffer (immutable bytes: slicing it gives the key and payload with one copy each) holds about one chunk:
    records are parsed in bulk from what is there, then the partial record left and the next chunk are joined.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._raw = iter(chunks)
        self._buffer = b""
        self._pos = 0
        self._decompressor: Any = None
        self._raw_done = False
        self._ended = False
        self.meta: dict[str, Any] = {}
        self.version = 0
        self.count = 0
        self.summary: dict[str, Any] = {}

    def _next_chunk(self) -> bytes | None:
        """The next non-empty piece of the body (decompressed); None at the end of the file."""
        while not self._raw_done:
            chunk = next(self._raw, None)
            if chunk is None:
                self._raw_done = True
                if self._decompressor is not None:
                    tail = self._decompressor.flush()
                    if not self._decompressor.eof:
                        raise SnapshotCorrupt("the compressed stream is cut short (the file is truncated)")
                    if tail:
                        return bytes(tail)
                return None
            if self._decompressor is not None:
                if self._decompressor.eof:
                    raise SnapshotCorrupt("data after the end of the compressed stream")
                try:
                    chunk = self._decompressor.decompress(chunk)
                except zlib.error as exc:
                    raise SnapshotCorrupt(f"the compressed stream is damaged ({exc})") from None
            if chunk:
                return bytes(chunk)
        return None

    def _need(self, size: int) -> bool:
        """At least `size` unparsed bytes from `_pos` on; False at the end of the file. Joins once, whatever the
        number of chunks a large record spans."""
        have = len(self._buffer) - self._pos
        if have >= size:
            return True
        parts, enough = [self._buffer[self._pos :]], True
        while have < size:
            chunk = self._next_chunk()
            if chunk is None:
                enough = False
                break
            parts.append(chunk)
            have += len(chunk)
        self._buffer, self._pos = b"".join(parts), 0
        return enough

    def _read_header(self) -> None:
        if not self._need(_HEADER.size):
            raise SnapshotCorrupt("not a DR Console Redis snapshot: the file is shorter than its header")
        magic, version, flags, meta_len = _HEADER.unpack_from(self._buffer, 0)
        if magic != MAGIC:
            raise SnapshotCorrupt("not a DR Console Redis snapshot (wrong magic bytes)")
        if version != FORMAT_VERSION:
            raise SnapshotCorrupt(f"snapshot format version {version} is not supported (this console reads 1)")
        end = _HEADER.size + meta_len
        if not self._need(end + _CRC.size):
            raise SnapshotCorrupt("the file is truncated inside its header")
        (crc,) = _CRC.unpack_from(self._buffer, end)
        if zlib.crc32(self._buffer[:end]) != crc:
            raise SnapshotCorrupt("the header's checksum does not match")
        try:
            self.meta = json.loads(self._buffer[_HEADER.size : end])
        except ValueError:
            raise SnapshotCorrupt("the header's metadata is not valid JSON") from None
        self.version = version
        body = self._buffer[end + _CRC.size :]
        if flags & FLAG_ZLIB:
            self._decompressor = zlib.decompressobj()
            try:
                body = self._decompressor.decompress(body)
            except zlib.error as exc:
                raise SnapshotCorrupt(f"the compressed stream is damaged ({exc})") from None
        self._buffer, self._pos = body, 0

    def records(self) -> Iterator[SnapshotRecord]:
        self._read_header()
        number = 0
        while True:
            parsed = self._parse_buffered(number)
            number += len(parsed)
            yield from parsed
            if self._ended:
                return
            # What is left is a partial record (or nothing): more bytes, or the file is cut short.
            remaining = len(self._buffer) - self._pos
            if not self._need(remaining + 1):
                if remaining:
                    raise SnapshotCorrupt(f"record {number + 1}: the file is truncated")
                raise SnapshotCorrupt(f"the file ends after {number} records without its end record (truncated)")

    def _parse_buffered(self, number: int) -> list[SnapshotRecord]:
        """Every complete record in the buffer from the current position; stops at a partial one."""
        data, pos = self._buffer, self._pos
        size = len(data)
        parsed: list[SnapshotRecord] = []
        append, crc32 = parsed.append, zlib.crc32
        key_head, key_mid, crc_unpack = _KEY_HEAD.unpack_from, _KEY_MID.unpack_from, _CRC.unpack_from
        new_record = tuple.__new__  # the NamedTuple's own __new__ is a Python function: a third of the parse time
        head_size, mid_size, key_tag = _KEY_HEAD.size, _KEY_MID.size, KEY_TAG[0]
        while pos + head_size <= size:
            tag = data[pos]
            if tag == key_tag:
                key_len = key_head(data, pos)[1]
                mid = pos + head_size + key_len
                if mid + mid_size > size:
                    break
                expire_at_ms, payload_len = key_mid(data, mid)
                end = mid + mid_size + payload_len
                if end + 4 > size:
                    break
                payload = data[mid + mid_size : end]
                if crc32(payload, crc32(data[pos : mid + mid_size])) != crc_unpack(data, end)[0]:
                    raise SnapshotCorrupt(
                        f"record {number + len(parsed) + 1}: checksum mismatch (the record is damaged)"
                    )
                append(new_record(SnapshotRecord, (data[pos + head_size : mid], expire_at_ms, payload)))
                pos = end + 4
            elif tag == END_TAG[0]:
                self._pos = pos
                self._end_record(number + len(parsed) + 1)
                return parsed
            else:
                raise SnapshotCorrupt(f"record {number + len(parsed) + 1}: unknown record type {bytes([tag])!r}")
        self._pos = pos
        return parsed

    def _end_record(self, number: int) -> None:
        if not self._need(_END_HEAD.size):
            raise SnapshotCorrupt("the end record is truncated")
        _tag, count, summary_len = _END_HEAD.unpack_from(self._buffer, self._pos)
        start = self._pos
        end = start + _END_HEAD.size + summary_len
        if not self._need(end - start + _CRC.size):
            raise SnapshotCorrupt("the end record is truncated")
        start, end = self._pos, self._pos + (end - start)  # _need may have moved the record to the front
        (crc,) = _CRC.unpack_from(self._buffer, end)
        if zlib.crc32(self._buffer[start:end]) != crc:
            raise SnapshotCorrupt("the end record's checksum does not match")
        if count != number - 1:
            raise SnapshotCorrupt(f"the end record counts {count} keys, the file holds {number - 1}")
        try:
            self.summary = json.loads(self._buffer[start + _END_HEAD.size : end])
        except ValueError:
            raise SnapshotCorrupt("the end record's summary is not valid JSON") from None
        self.count = count
        self._pos = end + _CRC.size
        self._ended = True
        if len(self._buffer) > self._pos or self._next_chunk() is not None:
            raise SnapshotCorrupt("data after the end record")


def snapshot_check(chunks: Iterable[bytes], *, expected_keys: int | None) -> SnapshotReader:
    """Read every record of a snapshot (each record's checksum, the end record's count). Raises SnapshotCorrupt."""
    reader = SnapshotReader(chunks)
    for _record in reader.records():
        pass
    if expected_keys is not None and reader.count != expected_keys:
        raise SnapshotCorrupt(f"the file holds {reader.count} keys, the backup recorded {expected_keys}")
    return reader
