"""Redis backups against a real Redis: the snapshot job, its file, and its verification."""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from backups import redis_snapshot
from backups.models import BackupArtifact
from backups.services import backup_artifact_execute, backup_artifact_request
from backups.verification import backup_artifact_verify
from dr_console.jobs import job_transition
from inventory.models import Datastore
from tests.factories import DatastoreFactory, one_datastore_of
from tests.support.local import start_thread
from tests.support.redis import AppRedis, redis_fill_all_types
from tests.support.storage import stored_files

pytestmark = pytest.mark.django_db(transaction=True)
Status = BackupArtifact.Status
Verification = BackupArtifact.Verification


def take_backup(source: AppRedis, **datastore_fields: Any) -> BackupArtifact:
    datastore = one_datastore_of(source.url_env, kind=Datastore.Kind.REDIS, **datastore_fields)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    return artifact


def stored_records(artifact_dir: Path, artifact: BackupArtifact) -> list[redis_snapshot.SnapshotRecord]:
    data = (artifact_dir / artifact.storage_key).read_bytes()
    return list(redis_snapshot.SnapshotReader([data]).records())


def rewrite_stored(artifact_dir: Path, artifact: BackupArtifact, data: bytes) -> None:
    """Replace the stored file and record its new checksum, so only the file's own structure can tell."""
    (artifact_dir / artifact.storage_key).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    BackupArtifact.objects.filter(pk=artifact.pk).update(
        sha256=digest, size_bytes=len(data), plaintext_sha256=digest, plaintext_size=len(data)
    )


def test_a_redis_backup_records_keys_per_type_checksum_and_versions(app_redis: AppRedis, artifact_dir: Path) -> None:
    redis_fill_all_types(app_redis.client)

    artifact = take_backup(app_redis)

    assert artifact.status == Status.SUCCEEDED, artifact.error
    assert artifact.format == BackupArtifact.Format.REDIS_SNAPSHOT
    assert artifact.archive_entries == app_redis.client.dbsize() == 15
    assert artifact.row_counts == {"hash": 2, "list": 2, "set": 2, "stream": 1, "string": 6, "zset": 2}
    assert artifact.server_version == f"Redis {app_redis.client.info('server')['redis_version']}"
    assert artifact.tool_version.startswith("DR Console Redis snapshot format 1")
    stored = artifact_dir / artifact.storage_key
    assert artifact.storage_key.endswith(".rsnap")
    assert stored.stat().st_size == artifact.size_bytes
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == artifact.sha256
    assert stored_files(artifact_dir) == [artifact.storage_key]  # no temporary file left

    records = {record.key: record for record in stored_records(artifact_dir, artifact)}
    assert set(records) == set(app_redis.client.keys("*"))
    for key, record in records.items():
        assert record.payload == app_redis.client.dump(key)
    assert records[b"l:big"].expire_at_ms > time.time() * 1000 + 3_500_000  # absolute: now + about an hour
    assert records[b"s:plain"].expire_at_ms == redis_snapshot.NO_EXPIRY

    assert backup_artifact_verify(artifact_id=artifact.pk) == Verification.VERIFIED


def test_an_empty_database_backs_up_to_a_valid_empty_snapshot(app_redis: AppRedis) -> None:
    artifact = take_backup(app_redis)

    assert artifact.status == Status.SUCCEEDED, artifact.error
    assert artifact.archive_entries == 0 and artifact.row_counts == {}
    assert backup_artifact_verify(artifact_id=artifact.pk) == Verification.VERIFIED


def test_keys_that_vanish_or_change_type_during_the_scan_and_repeats_of_scan_are_handled(
    app_redis: AppRedis, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app_redis.client
    for i in range(50):
        client.set(f"k:{i}", i)
    client.set("morph", "a string at SCAN time")
    real_pipelined = redis_snapshot.pipelined
    seen: dict[str, bool] = {}

    def racing(conn: Any, commands: Any) -> list[Any]:
        # The races SCAN allows, made to happen: between SCAN and DUMP another client deletes a key, lets one
        # expire and turns one into a list; and SCAN returns a key it already returned.
        if commands[0][0] == "TIME" and len(commands) > 1 and not seen.get("dump"):
            seen["dump"] = True
            client.delete("k:1")
            client.pexpire("k:2", 1)
            time.sleep(0.01)
            client.delete("morph")
            client.rpush("morph", "now", "a", "list")
        replies = real_pipelined(conn, commands)
        if commands[0][0] == "SCAN" and replies[0][1] and not seen.get("repeat"):
            seen["repeat"] = True
            replies[0][1].append(replies[0][1][0])
        return replies

    monkeypatch.setattr(redis_snapshot, "pipelined", racing)

    artifact = take_backup(app_redis)

    assert artifact.status == Status.SUCCEEDED, artifact.error
    keys = [record.key for record in stored_records(artifact_dir, artifact)]
    assert len(keys) == len(set(keys)) == 49  # 51 keys less the two that vanished; the repeat written once
    assert b"k:1" not in keys and b"k:2" not in keys
    assert artifact.row_counts == {"list": 1, "string": 48}  # "morph" recorded as what was dumped
    assert "2 keys vanished during the scan" in artifact.stderr_tail
    assert "1 repeated keys returned by SCAN were written once" in artifact.stderr_tail
    assert backup_artifact_verify(artifact_id=artifact.pk) == Verification.VERIFIED


def test_an_unreachable_redis_fails_the_backup_without_the_password_and_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, artifact_dir: Path
) -> None:
    monkeypatch.setenv("GONE_REDIS_URL", "redis://:Sekr3tPw@127.0.0.1:1/4")

    artifact = take_backup(
        AppRedis(url_env="GONE_REDIS_URL", url="", client=redis.Redis()),
    )

    assert artifact.status == Status.FAILED
    assert artifact.error.startswith("cannot read the Redis server at 127.0.0.1:1/4 (from GONE_REDIS_URL)")
    assert "Sekr3tPw" not in artifact.error
    assert stored_files(artifact_dir) == []


def test_an_unset_url_variable_is_named(db: None) -> None:
    artifact = take_backup(AppRedis(url_env="NOT_SET_REDIS_URL", url="", client=redis.Redis()))

    assert artifact.status == Status.FAILED
    assert artifact.error.startswith("environment variable NOT_SET_REDIS_URL is not set")


def test_a_snapshot_stopped_midway_leaves_no_file(
    app_redis: AppRedis, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = app_redis.client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"job:{i}", "x" * 20)
    pipe.execute()
    real_pipelined = redis_snapshot.pipelined

    def slow(conn: Any, commands: Any) -> list[Any]:
        time.sleep(0.1)  # a big database on a busy server: the snapshot is still going when it is stopped
        return real_pipelined(conn, commands)

    monkeypatch.setattr(redis_snapshot, "pipelined", slow)
    datastore = DatastoreFactory(kind=Datastore.Kind.REDIS, url_env=app_redis.url_env)
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    job = start_thread(backup_artifact_execute, artifact_id=artifact.pk, verify_after=False)
    for _ in range(100):
        if BackupArtifact.objects.get(pk=artifact.pk).bytes_done or any(
            name.startswith("tmp/") for name in stored_files(artifact_dir)
        ):
            break
        time.sleep(0.05)
    # What the reaper does to a job it believes lost:
    job_transition(BackupArtifact, pk=artifact.pk, to=Status.FAILED, error="worker lost: no heartbeat")
    job.join(timeout=30)

    assert not job.is_alive()
    artifact.refresh_from_db()
    assert artifact.status == Status.FAILED and artifact.error == "worker lost: no heartbeat"
    assert stored_files(artifact_dir) == []


def test_verify_detects_a_tampered_redis_snapshot(app_redis: AppRedis, artifact_dir: Path) -> None:
    redis_fill_all_types(app_redis.client)
    artifact = take_backup(app_redis)
    stored = artifact_dir / artifact.storage_key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    assert backup_artifact_verify(artifact_id=artifact.pk) == Verification.CORRUPT
    artifact.refresh_from_db()
    assert artifact.verification_error.startswith("sha256 mismatch")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("payload byte", "record 8: checksum mismatch (the record is damaged)"),
        ("truncated", "the file is truncated"),
        ("no end record", "without its end record (truncated)"),
        ("count", "the file holds 15 keys, the backup recorded 16"),
        ("magic", "not a DR Console Redis snapshot (wrong magic bytes)"),
    ],
)
def test_verify_parses_every_record_of_a_snapshot_whose_checksum_matches(
    app_redis: AppRedis, artifact_dir: Path, damage: str, reason: str
) -> None:
    redis_fill_all_types(app_redis.client)
    artifact = take_backup(app_redis, compression_level=0)  # uncompressed: a flipped byte lands in one record
    data = bytearray((artifact_dir / artifact.storage_key).read_bytes())
    records = stored_records(artifact_dir, artifact)
    eighth = records[7].key
    payload_at = data.index(struct.pack(">cI", b"K", len(eighth)) + eighth) + 5 + len(eighth) + 12
    if damage == "payload byte":
        data[payload_at + 3] ^= 0x01
    elif damage == "truncated":
        del data[payload_at + 3 :]
    elif damage == "no end record":
        del data[data.rindex(b"E" + (15).to_bytes(8, "big")) :]
    elif damage == "count":
        BackupArtifact.objects.filter(pk=artifact.pk).update(archive_entries=16)
    else:
        data[:8] = b"NOTREDIS"
    rewrite_stored(artifact_dir, artifact, bytes(data))

    assert backup_artifact_verify(artifact_id=artifact.pk) == Verification.CORRUPT
    artifact.refresh_from_db()
    assert reason in artifact.verification_error


def test_compression_pays_on_queue_like_keys_and_is_the_datastores_choice(app_redis: AppRedis) -> None:
    pipe = app_redis.client.pipeline(transaction=False)
    for i in range(2000):
        pipe.hset(f"rq:job:{i:08d}", mapping={"status": "queued", "origin": "default", "description": f"job {i}"})
    pipe.execute()

    plain = take_backup(app_redis, compression_level=0)
    compressed = take_backup(app_redis, compression_level=1)

    assert (plain.compression_level, compressed.compression_level) == (0, 1)
    assert compressed.size_bytes is not None and plain.size_bytes is not None
    assert compressed.size_bytes < plain.size_bytes / 2
    assert backup_artifact_verify(artifact_id=compressed.pk) == Verification.VERIFIED


@pytest.mark.parametrize("level", [0, 1])
def test_records_that_straddle_chunk_boundaries_read_back_the_same(
    app_redis: AppRedis, artifact_dir: Path, level: int
) -> None:
    redis_fill_all_types(app_redis.client)
    artifact = take_backup(app_redis, compression_level=level)
    data = (artifact_dir / artifact.storage_key).read_bytes()

    whole = list(redis_snapshot.SnapshotReader([data]).records())
    reader = redis_snapshot.SnapshotReader(data[i : i + 7] for i in range(0, len(data), 7))
    pieces = list(reader.records())

    assert pieces == whole and len(whole) == 15
    assert reader.count == 15 and reader.summary["types"] == artifact.row_counts
    assert reader.meta["db"] == app_redis.client.connection_pool.connection_kwargs["db"]


def test_a_value_larger_than_a_chunk_backs_up_and_verifies(app_redis: AppRedis, artifact_dir: Path) -> None:
    import os

    big = os.urandom(3 * 1024 * 1024 + 17)  # random: neither DUMP's LZF nor zlib can shrink it below a chunk
    app_redis.client.set("big", big)
    app_redis.client.set("small", "after the big one")

    artifact = take_backup(app_redis)

    assert artifact.status == Status.SUCCEEDED, artifact.error
    assert backup_artifact_verify(artifact_id=artifact.pk) == Verification.VERIFIED
    records = {record.key: record for record in stored_records(artifact_dir, artifact)}
    assert records[b"big"].payload == app_redis.client.dump("big")


def test_a_redis_error_quoting_control_characters_is_escaped_in_the_message(app_redis: AppRedis) -> None:
    """Redis quotes what it was sent in its errors, byte for byte."""
    target = redis_snapshot.redis_target_from_env(app_redis.url_env)
    with pytest.raises(redis.ResponseError) as refused:
        target.client().execute_command("NOSUCH\x1b[31m\x07")

    error = target.error("the snapshot failed", refused.value)

    assert str(error).startswith(
        f"the snapshot failed at {target.label} (from {app_redis.url_env}): unknown command 'NOSUCH\\x1b[31m\\x07'"
    )
