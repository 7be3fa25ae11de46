"""The Redis restore primitive: RESTORE every record of a snapshot into a Redis database, pipelined a batch at a
time, and the checks after it.

restores/services.py decides when and whether a restore runs; this module only knows how. Three passes over the
stored file, none holding more than a batch of keys:

1. `redis_preflight`, before anything is written: the file's sha256 and (unless existing keys are to be replaced,
   or the target is empty) which keys of the backup already exist in the target: conflicts.
2. `redis_restore`: RESTORE key ttl payload ABSTTL [REPLACE]. Expiry is absolute, so a key that would have expired
   by now is not revived; an existing key without REPLACE is a conflict, counted and named, not an error.
3. `redis_checks`: PING, what RESTORE answered against what the file holds, and an independent count of the
   backup's keys present in the target afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import redis
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from backups.models import BackupArtifact
from backups.redis_snapshot import (
    NO_EXPIRY,
    RedisDatastoreError,
    RedisTarget,
    SnapshotCorrupt,
    SnapshotReader,
    SnapshotRecord,
    pipelined,
    redis_target_from_env,
    server_time_ms,
    version_tuple,
)
from backups.sources import (
    ArtifactSource,
    NoUsableSource,
    ReadFile,
    SourceUnusable,
    artifact_source_choose,
    source_chunks,
)
from dr_console.jobs import JobContext, JobFailed
from dr_console.notes import Note, check_item
from dr_console.text import untrusted_text
from restores.models import RestoreRun

BATCH = 1000
SAMPLE = 10  # key names quoted in a message


class KeyPatternError(ValueError):
    pass


# Bytes of the glob syntax.
_STAR, _ANY, _OPEN, _CLOSE, _NOT, _RANGE, _ESCAPE = b"*?[]^-\\"
_ALL = b"\x01" * 256
_ONE = [bytes(256)[:c] + b"\x01" + bytes(255 - c) for c in range(256)]


class KeyPattern:
    """A Redis glob (SCAN MATCH, KEYS): * ? [abc] [^a-z] and \\ to escape, matched against whole key names byte by
    byte as Redis's own stringmatchlen reads it.

    Matching is the greedy walk that goes back to the last star passed when a byte does not match: at most
    len(key) x len(pattern) steps, whatever the pattern. A regular expression built from the glob backtracked
    exponentially instead: `*a*a*a*a*a*a*a*a*b` took 0.8 s per 40-byte key, holding the GIL, so the job's
    heartbeat stalled. `steps` adds up the steps of every key matched, for the tests to bound."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        # None for a star (a run of them is one); else a 256-byte table, 1 at each byte value the position takes.
        self.tokens = _glob_tokens(pattern)
        self.steps = 0

    def __call__(self, key: bytes) -> bool:
        if self.pattern == "*":  # SCAN and KEYS take a lone star as every key, the empty name included
            return True
        if not key:  # stringmatchlen matches no other pattern against an empty name
            return False
        tokens = self.tokens
        count, end = len(tokens), len(key)
        p = k = steps = 0
        star = resume = -1  # the last star passed, and where in the key it stopped swallowing bytes
        while k < end:
            steps += 1
            if p < count:
                token = tokens[p]
                if token is None:
                    if p == count - 1:  # a star at the end takes the rest, whatever it is
                        self.steps += steps
                        return True
                    star, resume = p, k
                    p += 1
                    continue
                if token[key[k]]:
                    p += 1
                    k += 1
                    continue
            if star < 0:
                self.steps += steps
                return False
            resume += 1  # the last star swallows one byte more; match again from the token after it
            p, k = star + 1, resume
        self.steps += steps
        while p < count and tokens[p] is None:
            p += 1
        return p == count


def _glob_tokens(pattern: str) -> list[bytes | None]:
    """The pattern's positions. Raises KeyPatternError for a pattern Redis would read differently than it looks."""
    source = pattern.encode()
    tokens: list[bytes | None] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == _STAR:
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
            i += 1
        elif char == _ANY:
            tokens.append(_ALL)
            i += 1
        elif char == _OPEN:
            i, table = _glob_class(source, i + 1, pattern)
            tokens.append(table)
        else:
            if char == _ESCAPE and i + 1 < len(source):  # a backslash at the very end is itself
                i += 1
            tokens.append(_ONE[source[i]])
            i += 1
    return tokens


def _glob_class(source: bytes, i: int, pattern: str) -> tuple[int, bytes]:
    """The [...] whose first member is at `i`, read in stringmatchlen's order (an escape, then the closing ], then
    a range x-y, then one byte); returns the index after its ] and its table."""
    negate = source[i : i + 1] == bytes([_NOT])
    i += negate
    members = bytearray(256)
    first = i
    while True:
        left = len(source) - i
        if left == 0:  # Redis would take the class to run to the end of the pattern
            raise KeyPatternError(_("unclosed [ in the key pattern %(pattern)s") % {"pattern": repr(pattern)})
        char = source[i]
        if char == _ESCAPE and left >= 2:
            members[source[i + 1]] = 1
            i += 2
        elif char == _CLOSE:
            break
        elif left >= 3 and source[i + 1] == _RANGE:  # x-y, z-a as a-z; "[a-]" is a range up to "]"
            low, high = sorted((char, source[i + 2]))
            if high >= 0x80:  # Redis compares signed chars here: the range would depend on the server's CPU
                raise KeyPatternError(
                    _("a range in [] must be between two ASCII characters, in the key pattern %(pattern)s")
                    % {"pattern": repr(pattern)}
                )
            members[low : high + 1] = _ALL[: high - low + 1]
            i += 3
        else:
            members[char] = 1
            i += 1
    if i == first:
        raise KeyPatternError(_("empty [] in the key pattern %(pattern)s") % {"pattern": repr(pattern)})
    if negate:
        members = members.translate(bytes([1, 0]) + bytes(254))
    return i + 1, bytes(members)


def key_matcher(pattern: str) -> Callable[[bytes], bool]:
    if not pattern:
        return lambda key: True
    return KeyPattern(pattern)


def _exist(conn: Any, keys: list[bytes]) -> list[bool]:
    """Whether each key exists: one multi-key EXISTS (a count) for the batch, and one EXISTS per key only when
    that count says some are there, to tell which (the common cases, all or none, cost one reply)."""
    if not keys:
        return []
    (count,) = pipelined(conn, [("EXISTS", *keys)])
    if count == 0:
        return [False] * len(keys)
    if count == len(keys) and len(set(keys)) == len(keys):
        return [True] * len(keys)
    return [reply == 1 for reply in pipelined(conn, [("EXISTS", key) for key in keys])]


def _batches(records: Iterable[SnapshotRecord], size: int = BATCH) -> Iterator[list[SnapshotRecord]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass
class KeyList:
    """A count of keys and the first few of their names, for a message."""

    count: int = 0
    sample: list[str] = field(default_factory=list)

    def add(self, key: bytes, note: str = "") -> None:
        self.count += 1
        if len(self.sample) < SAMPLE:
            # A key name is any bytes (NUL included, which PostgreSQL refuses in the messages that quote it).
            shown = untrusted_text(key) + (f" ({untrusted_text(note)})" if note else "")
            self.sample.append(shown)

    def named(self) -> str:
        more = f" and {self.count - len(self.sample)} more" if self.count > len(self.sample) else ""
        return ", ".join(self.sample) + more


@dataclass
class Preflight:
    sha256: str
    conflicts: KeyList


def redis_preflight(
    client: redis.Redis,
    chunks: Iterable[bytes],
    *,
    match: Callable[[bytes], bool],
    check_conflicts: bool,
    checkpoint: Callable[[], None],
) -> Preflight:
    """Read the whole file before anything is written: its sha256 (which the run compares with the one it was
    requested for: the records are then those the verification checked) and, with `check_conflicts`, the keys of
    the backup that exist in the target already (reading every record, its checksum included)."""
    digest = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for chunk in chunks:
            checkpoint()
            digest.update(chunk)
            yield chunk

    conflicts = KeyList()
    if not check_conflicts:  # nothing to look up: the checksum alone, without parsing a record
        for _chunk in hashed():
            pass
        return Preflight(sha256=digest.hexdigest(), conflicts=conflicts)
    conn = client.connection_pool.get_connection()
    try:
        for batch in _batches(SnapshotReader(hashed()).records()):
            wanted = [record.key for record in batch if match(record.key)]
            for key, exists in zip(wanted, _exist(conn, wanted), strict=True):
                if exists:
                    conflicts.add(key)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)
    return Preflight(sha256=digest.hexdigest(), conflicts=conflicts)


@dataclass
class RedisRestoreResult:
    """What RESTORE answered, record by record."""

    records: int = 0  # in the file
    matched: int = 0  # matching the key pattern: the ones the run restores
    restored: int = 0
    expired: int = 0  # their expiry passed since the backup: not revived
    conflicts: KeyList = field(default_factory=KeyList)  # existed in the target, kept (no REPLACE)
    refused: KeyList = field(default_factory=KeyList)  # the server refused the payload

    @property
    def expected(self) -> int:
        return self.matched - self.expired

    def summary(self) -> str:
        return (
            f"{self.records} keys in the backup, {self.matched} matching: {self.restored} restored, "
            f"{self.expired} expired since the backup, {self.conflicts.count} conflicts, {self.refused.count} refused"
        )


def redis_restore(
    client: redis.Redis,
    records: Iterable[SnapshotRecord],
    *,
    match: Callable[[bytes], bool],
    replace: bool,
    checkpoint: Callable[[], None],
) -> RedisRestoreResult:
    """RESTORE every matching record, one pipelined round trip per batch (TIME first, to tell which keys expired
    since the backup: Redis drops those itself). `checkpoint` runs between batches and raises to stop."""
    result = RedisRestoreResult()
    flags = ("ABSTTL", "REPLACE") if replace else ("ABSTTL",)
    conn = client.connection_pool.get_connection()
    try:
        for batch in _batches(records):
            checkpoint()
            result.records += len(batch)
            wanted = [record for record in batch if match(record.key)]
            result.matched += len(wanted)
            commands: list[tuple[Any, ...]] = [("TIME",)]
            for record in wanted:
                ttl = 0 if record.expire_at_ms == NO_EXPIRY else record.expire_at_ms
                commands.append(("RESTORE", record.key, ttl, record.payload, *flags))
            replies = pipelined(conn, commands)
            now_ms = server_time_ms(replies[0])
            for record, reply in zip(wanted, replies[1:], strict=True):
                if isinstance(reply, redis.ResponseError):
                    message = str(reply)
                    if message.startswith("BUSYKEY") or "already exists" in message:
                        result.conflicts.add(record.key)
                    else:
                        result.refused.add(record.key, message)
                elif record.expire_at_ms != NO_EXPIRY and record.expire_at_ms <= now_ms:
                    result.expired += 1
                else:
                    result.restored += 1
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)
    return result


def redis_keys_present(
    client: redis.Redis, records: Iterable[SnapshotRecord], *, match: Callable[[bytes], bool]
) -> tuple[int, int, KeyList]:
    """Count, independently of what RESTORE answered, the backup's keys that are in the target now. Returns
    (present, expired since the backup, missing)."""
    present = expired = 0
    missing = KeyList()
    conn = client.connection_pool.get_connection()
    try:
        for batch in _batches(records):
            wanted = [record for record in batch if match(record.key)]
            (server_time,) = pipelined(conn, [("TIME",)])
            now_ms = server_time_ms(server_time)
            for record, exists in zip(wanted, _exist(conn, [record.key for record in wanted]), strict=True):
                if exists == 1:
                    present += 1
                elif record.expire_at_ms != NO_EXPIRY and record.expire_at_ms <= now_ms:
                    expired += 1
                else:
                    missing.add(record.key)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)
    return present, expired, missing


def redis_checks(
    client: redis.Redis,
    records: Iterable[SnapshotRecord],
    *,
    match: Callable[[bytes], bool],
    result: RedisRestoreResult,
    target_label: str,
) -> list[dict[str, Any]]:
    """The post-restore checks, each a checklist item: PING, keys restored = expected, keys present."""
    checks: list[dict[str, Any]] = []
    try:
        pong = client.ping()
        checks.append({"name": "PING", "ok": bool(pong), "detail": "PONG" if pong else f"returned {pong!r}"})
    except redis.RedisError as exc:
        return [{"name": "PING", "ok": False, "detail": f"{type(exc).__name__}: {untrusted_text(str(exc))}"}]

    problems = []
    if result.conflicts.count:
        problems.append(
            f"{result.conflicts.count} keys already existed and were kept: {result.conflicts.named()} "
            "(restore with “replace existing keys” to overwrite them)"
        )
    if result.refused.count:
        problems.append(f"{result.refused.count} keys refused by the server: {result.refused.named()}")
    if not problems and result.restored != result.expected:
        problems.append(f"{result.restored} restored, {result.expected} expected")
    expired = f"; {result.expired} expired since the backup, not revived" if result.expired else ""
    restored: Note | str = Note("keys_restored", {"restored": str(result.restored), "expected": str(result.expected)})
    if expired:  # the plain count has a note; the rarer sentence stays as written
        restored = f"{result.restored} of {result.expected} keys restored{expired}"
    checks.append(check_item(not problems, name=Note("check_keys_restored"), detail="; ".join(problems) or restored))
    present, gone, missing = redis_keys_present(client, records, match=match)
    gone_note = f" ({gone} more expired since)" if gone else ""
    if missing.count:
        detail: Note | str = f"{missing.count} keys of the backup are missing from {target_label}: {missing.named()}"
    elif gone_note:
        detail = f"{present} keys of the backup are in {target_label}{gone_note}"
    else:
        detail = Note("keys_present", {"present": str(present), "target": target_label})
    checks.append(check_item(missing.count == 0, name=Note("check_keys_present"), detail=detail))
    return checks


# --- the restore of a Redis backup (restores.methods) ------------------------------------------------------------


def redis_restore_execute(run: RestoreRun, ctx: JobContext) -> None:
    """Preconditions first (the target answers and, restores.services checked, is not the console's broker; runs
    a Redis at least as new as the source, has room); then a read of the whole file (its sha256, and conflicts
    unless replacing) before anything is written; the safety backup; RESTORE of every matching key; the checks."""
    from restores import steps

    steps.check_artifact_unchanged(run)
    artifact, datastore = run.artifact, run.target_datastore
    target = redis_target_from_env(datastore.url_env)
    replace = bool(run.options.get("replace"))
    match = key_matcher(str(run.options.get("key_pattern") or ""))
    try:
        source, fallbacks = artifact_source_choose(artifact, prefer=str(run.options.get("location") or "") or None)
    except NoUsableSource as exc:
        raise JobFailed(f"{exc}; nothing was restored") from None
    ctx.update(source_note=ReadFile(path="", source=source, fallbacks=fallbacks).note())
    client = target.client()
    writing = False
    try:
        with client:
            empty = _check_redis_can_take(client, target, artifact)
            preflight = redis_preflight(
                client,
                source_chunks(artifact, source),
                match=match,
                check_conflicts=not replace and not empty,
                checkpoint=ctx.check,
            )
            if preflight.sha256 != artifact.content_sha256:
                raise steps.checksum_mismatch(preflight.sha256, run)
            if preflight.conflicts.count:
                raise JobFailed(
                    f"{preflight.conflicts.count} keys of the backup already exist in {datastore.name}: "
                    f"{preflight.conflicts.named()}; nothing was restored. Restore with “replace existing keys” "
                    "to overwrite them, or with a key pattern that leaves them out"
                )
            if datastore.environment.takes_safety_backup:
                steps.take_safety_backup(run)
                ctx.check()
            writing = True
            result = redis_restore(
                client, _records(artifact, source), match=match, replace=replace, checkpoint=ctx.check
            )
            ctx.check()
            ctx.update(stderr_tail=result.summary())
            ctx.advance(RestoreRun.Status.VERIFYING)
            checks = redis_checks(
                client, _records(artifact, source), match=match, result=result, target_label=datastore.name
            )
            steps.record_checks(run, checks)
    except SnapshotCorrupt as exc:
        partly = "; the target may be partly restored" if writing else "; nothing was restored"
        raise JobFailed(f"the backup file is corrupt: {exc}{partly}") from None
    except SourceUnusable as exc:
        partly = "; the target may be partly restored" if writing else "; nothing was restored"
        raise JobFailed(f"{exc}{partly}") from None
    except redis.RedisError as exc:
        partly = "; the target may be partly restored" if writing else "; nothing was restored"
        raise RedisDatastoreError(f"{target.error('the restore failed', exc)}{partly}") from None


def _records(artifact: BackupArtifact, source: ArtifactSource) -> Iterator[SnapshotRecord]:
    return SnapshotReader(source_chunks(artifact, source)).records()


def _check_redis_can_take(client: redis.Redis, target: RedisTarget, artifact: BackupArtifact) -> bool:
    """The target answers, its RESTORE can read the source's payloads, and it has at least the snapshot's size of
    memory to spare (a lower bound: keys take more room in memory than serialized). Returns whether it is empty."""
    try:
        client.ping()
        info = client.info()
        size = client.dbsize()
    except redis.RedisError as exc:
        raise target.error("cannot reach the target Redis; nothing was restored", exc) from None
    source = version_tuple(artifact.server_version)
    found = version_tuple(str(info.get("redis_version", "")))
    if found < source:
        raise JobFailed(
            f"the target {target.label} runs Redis {info.get('redis_version')}, older than the "
            f"{artifact.server_version} the backup was taken from: its RESTORE cannot read newer payloads; "
            "restore into a Redis at least as new"
        )
    limit = int(info.get("maxmemory") or 0) or int(info.get("total_system_memory") or 0)
    free = limit - int(info.get("used_memory") or 0)
    if limit and (artifact.size_bytes or 0) > free:
        raise JobFailed(
            f"the target {target.label} has {filesizeformat(max(free, 0))} of memory to spare, less than the "
            f"{filesizeformat(artifact.size_bytes or 0)} of the snapshot; nothing was restored"
        )
    return size == 0
