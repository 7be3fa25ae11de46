"""Redis restores against a real Redis: through the restore workflow (services), and the primitive's edges."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from backups import redis_snapshot
from backups.models import BackupArtifact
from backups.services import backup_artifact_execute, backup_artifact_request
from inventory.models import Datastore
from restores import redis_restore
from restores.models import RestoreRun
from restores.services import RestoreRefused, restore_run_cancel, restore_run_execute
from tests.factories import DatastoreFactory, EnvironmentFactory, RestoreRunFactory
from tests.restores.helpers import REQUESTER, request, requester, restore  # noqa: F401 (requester: autouse)
from tests.support.local import start_thread
from tests.support.redis import AppRedis, redis_contents, redis_fill_all_types

pytestmark = pytest.mark.django_db(transaction=True)
Status = RestoreRun.Status
Kind = RestoreRun.TargetKind


def redis_datastore(db: AppRedis, **fields: Any) -> Datastore:
    return DatastoreFactory(kind=Datastore.Kind.REDIS, url_env=db.url_env, **fields)


def backup_of(datastore: Datastore) -> BackupArtifact:
    artifact = backup_artifact_request(datastore=datastore, trigger="test", enqueue=False)
    backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
    artifact.refresh_from_db()
    assert artifact.status == BackupArtifact.Status.SUCCEEDED, artifact.error
    return artifact


def test_round_trip_of_every_type_into_another_redis_keeps_values_and_ttls(
    app_redis: AppRedis, second_redis: AppRedis
) -> None:
    redis_fill_all_types(app_redis.client)
    source = redis_datastore(app_redis)
    artifact = backup_of(source)
    target = redis_datastore(second_redis)

    run = restore(artifact, target_kind=Kind.DATASTORE, target_datastore=target)

    assert run.status == Status.SUCCEEDED, run.error
    assert redis_contents(second_redis.client) == redis_contents(app_redis.client)
    for key in app_redis.client.keys("*"):
        source_ttl, restored_ttl = app_redis.client.pttl(key), second_redis.client.pttl(key)
        assert (source_ttl < 0) == (restored_ttl < 0), key
        assert abs(source_ttl - restored_ttl) < 5_000, key  # the same expiry instant, read a moment apart
    assert second_redis.client.xinfo_groups("st:events")[0]["name"] == b"workers"
    assert [c["name"] for c in run.checks] == ["PING", "keys restored", "keys present"]
    assert all(c["ok"] for c in run.checks), run.checks
    assert run.checks[1]["detail"] == "15 of 15 keys restored"
    assert run.options == {"replace": False, "key_pattern": ""}
    assert [(e.old_status, e.new_status) for e in run.events.all()] == [
        ("requested", "queued"),
        ("queued", "running"),
        ("running", "verifying"),
        ("verifying", "succeeded"),
    ]


def test_existing_keys_are_conflicts_named_before_anything_is_written(app_redis: AppRedis) -> None:
    client = app_redis.client
    redis_fill_all_types(client)
    artifact = backup_of(redis_datastore(app_redis))
    client.set("s:plain", "changed after the backup")
    client.delete("h:small", "z:small")

    run = restore(artifact, target_kind=Kind.IN_PLACE)

    assert run.status == Status.FAILED
    assert run.error.startswith("13 keys of the backup already exist in ")
    assert "nothing was restored" in run.error and "replace existing keys" in run.error
    assert client.get("s:plain") == b"changed after the backup"  # untouched
    assert not client.exists("h:small", "z:small")


# Key names are any bytes. PostgreSQL refuses NUL in the text and jsonb columns the messages naming them go to, and
# only the first SAMPLE keys are named, in SCAN order: these tests make every conflicting key a garbage one.
GARBAGE_KEYS = {
    b"s:bin\xff\x00\x1b[31m": "s:bin\\xff\\x00\\x1b[31m",
    b"\x00": "\\x00",
    b"title\x1b]0;pwned\x07": "title\\x1b]0;pwned\\x07",
    b"line\nbreak\r": "line\\nbreak\\r",
}


def test_key_names_are_named_escaped_whatever_bytes_they_hold() -> None:
    keys = redis_restore.KeyList()
    for key in GARBAGE_KEYS:
        keys.add(key)
    keys.add(b"bad\x00", note="ERR payload\x00")

    assert keys.named() == ", ".join([*GARBAGE_KEYS.values(), "bad\\x00 (ERR payload\\x00)"])


def test_conflicts_on_keys_holding_nul_and_control_characters_are_named_escaped(app_redis: AppRedis) -> None:
    client = app_redis.client
    for key in GARBAGE_KEYS:
        client.set(key, b"v")
    artifact = backup_of(redis_datastore(app_redis))

    run = restore(artifact, target_kind=Kind.IN_PLACE)  # every key of the backup is still there: all conflicts

    assert run.status == Status.FAILED
    assert run.error.startswith(f"4 keys of the backup already exist in {artifact.datastore.name}: ")
    named = run.error.split(": ", 1)[1].split("; nothing was restored")[0].split(", ")
    assert sorted(named) == sorted(GARBAGE_KEYS.values())
    assert [e.message for e in run.events.all()][-1] == run.error
    finished = AuditEvent.objects.get(action=AuditEvent.Action.RESTORE_FINISHED, object_id=str(run.pk))
    assert finished.details["error"] == run.error


def test_a_conflict_on_a_garbage_key_during_the_restore_is_named_escaped_in_the_checks(
    app_redis: AppRedis, second_redis: AppRedis, artifact_dir: Path
) -> None:
    for key in GARBAGE_KEYS:
        app_redis.client.set(key, b"v")
    artifact = backup_of(redis_datastore(app_redis))
    second_redis.client.set(b"\x00", "written by the application meanwhile")
    data = (artifact_dir / artifact.storage_key).read_bytes()
    match = redis_restore.key_matcher("")

    result = redis_restore.redis_restore(
        second_redis.client,
        redis_snapshot.SnapshotReader([data]).records(),
        match=match,
        replace=False,
        checkpoint=lambda: None,
    )
    checks = redis_restore.redis_checks(
        second_redis.client,
        redis_snapshot.SnapshotReader([data]).records(),
        match=match,
        result=result,
        target_label="second",
    )

    restored = next(c for c in checks if c["name"] == "keys restored")
    assert restored["detail"].startswith("1 keys already existed and were kept: \\x00 (restore with")
    run = RestoreRunFactory(artifact=artifact)
    RestoreRun.objects.filter(pk=run.pk).update(checks=checks)  # as the run records them: jsonb takes it
    run.refresh_from_db()
    assert run.checks == checks


def test_replace_overwrites_existing_keys_in_place(app_redis: AppRedis) -> None:
    client = app_redis.client
    redis_fill_all_types(client)
    before = redis_contents(client)
    artifact = backup_of(redis_datastore(app_redis))
    client.set("s:plain", "changed after the backup")
    client.delete("h:small")
    client.set("new:after-backup", "kept: a restore does not delete keys the backup does not have")

    run = restore(artifact, target_kind=Kind.IN_PLACE, replace=True)

    assert run.status == Status.SUCCEEDED, run.error
    after = redis_contents(client)
    assert after.pop(b"new:after-backup")
    assert after == before


def test_a_key_pattern_restores_only_the_keys_it_matches(app_redis: AppRedis, second_redis: AppRedis) -> None:
    redis_fill_all_types(app_redis.client)
    artifact = backup_of(redis_datastore(app_redis))

    run = restore(
        artifact, target_kind=Kind.DATASTORE, target_datastore=redis_datastore(second_redis), key_pattern="[hz]:*"
    )

    assert run.status == Status.SUCCEEDED, run.error
    assert sorted(second_redis.client.keys("*")) == [b"h:big", b"h:small", b"z:big", b"z:small"]
    assert run.checks[1]["detail"] == "4 of 4 keys restored"
    assert run.options["key_pattern"] == "[hz]:*"


def test_keys_whose_expiry_passed_since_the_backup_are_not_revived(app_redis: AppRedis, second_redis: AppRedis) -> None:
    app_redis.client.set("lasting", "1")
    app_redis.client.set("brief", "1", px=300)
    artifact = backup_of(redis_datastore(app_redis))
    time.sleep(0.5)

    run = restore(artifact, target_kind=Kind.DATASTORE, target_datastore=redis_datastore(second_redis))

    assert run.status == Status.SUCCEEDED, run.error
    assert second_redis.client.keys("*") == [b"lasting"]
    assert run.checks[1]["detail"] == "1 of 1 keys restored; 1 expired since the backup, not revived"


def test_a_conflict_that_appears_during_the_restore_is_reported_per_key(
    app_redis: AppRedis, second_redis: AppRedis, artifact_dir: Path
) -> None:
    redis_fill_all_types(app_redis.client)
    artifact = backup_of(redis_datastore(app_redis))
    second_redis.client.set("s:plain", "written by the application meanwhile")
    records = redis_snapshot.SnapshotReader([(artifact_dir / artifact.storage_key).read_bytes()])
    match = redis_restore.key_matcher("")

    result = redis_restore.redis_restore(
        second_redis.client, records.records(), match=match, replace=False, checkpoint=lambda: None
    )
    again = redis_snapshot.SnapshotReader([(artifact_dir / artifact.storage_key).read_bytes()])
    checks = redis_restore.redis_checks(
        second_redis.client, again.records(), match=match, result=result, target_label="second"
    )

    assert (result.restored, result.conflicts.count, result.conflicts.sample) == (14, 1, ["s:plain"])
    assert second_redis.client.get("s:plain") == b"written by the application meanwhile"
    restored = next(c for c in checks if c["name"] == "keys restored")
    assert not restored["ok"]
    assert restored["detail"].startswith("1 keys already existed and were kept: s:plain")


def test_a_payload_the_target_refuses_is_named(second_redis: AppRedis) -> None:
    record = redis_snapshot.SnapshotRecord(key=b"bad", expire_at_ms=redis_snapshot.NO_EXPIRY, payload=b"not a dump")

    result = redis_restore.redis_restore(
        second_redis.client, [record], match=redis_restore.key_matcher(""), replace=False, checkpoint=lambda: None
    )

    assert result.refused.count == 1
    assert result.refused.sample[0].startswith("bad (DUMP payload version or checksum are wrong")


def test_cancel_stops_a_running_redis_restore(
    app_redis: AppRedis, second_redis: AppRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = app_redis.client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"job:{i}", "x")
    pipe.execute()
    artifact = backup_of(redis_datastore(app_redis))
    real_pipelined = redis_restore.pipelined

    def slow(conn: Any, commands: Any) -> list[Any]:
        time.sleep(0.1)  # a big restore on a busy server: still going when it is cancelled
        return real_pipelined(conn, commands)

    monkeypatch.setattr(redis_restore, "pipelined", slow)
    run = request(artifact, target_kind=Kind.DATASTORE, target_datastore=redis_datastore(second_redis))
    job = start_thread(restore_run_execute, run_id=run.pk)
    for _ in range(200):
        if second_redis.client.dbsize():
            break
        time.sleep(0.05)

    assert restore_run_cancel(run_id=run.pk, cancelled_by=REQUESTER[0])
    job.join(timeout=30)

    assert not job.is_alive()
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert 0 < second_redis.client.dbsize() < 20_000
    from inventory.models import TargetLock

    assert not TargetLock.objects.exists()


def test_a_protected_target_waits_for_approval_and_gets_a_redis_safety_backup_first(
    app_redis: AppRedis, second_redis: AppRedis, approver: Any, artifact_dir: Path
) -> None:
    from restores.services import restore_run_approve

    app_redis.client.set("from-backup", "1")
    artifact = backup_of(redis_datastore(app_redis))
    prod = EnvironmentFactory(name="prod", protected=True)
    target = redis_datastore(second_redis, name="prod-queue", environment=prod)
    second_redis.client.set("was-there", "1")
    with pytest.raises(RestoreRefused, match="type its name to confirm"):
        request(artifact, target_kind=Kind.DATASTORE, target_datastore=target)
    run = request(artifact, target_kind=Kind.DATASTORE, target_datastore=target, confirm="prod-queue")
    assert run.status == Status.AWAITING_APPROVAL

    restore_run_approve(run_id=run.pk, approver=approver, enqueue=False)
    restore_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, run.error
    assert sorted(second_redis.client.keys("*")) == [b"from-backup", b"was-there"]
    safety = run.safety_backup
    assert safety is not None and safety.status == BackupArtifact.Status.SUCCEEDED
    assert (safety.datastore, safety.format, safety.archive_entries) == (target, "redis_snapshot", 1)
    records = redis_snapshot.SnapshotReader([(artifact_dir / safety.storage_key).read_bytes()]).records()
    assert [record.key for record in records] == [b"was-there"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_kind": Kind.NEW_DATABASE, "new_database_name": "x"}, "a new database is for PostgreSQL backups"),
        ({"target_kind": Kind.IN_PLACE, "jobs": 4}, "parallel jobs and --no-owner apply to PostgreSQL backups"),
        ({"target_kind": Kind.IN_PLACE, "key_pattern": "job:[12"}, "unclosed [ in the key pattern 'job:[12'"),
    ],
)
def test_options_that_do_not_fit_a_redis_backup_are_refused(
    app_redis: AppRedis, kwargs: dict[str, Any], message: str
) -> None:
    artifact = backup_of(redis_datastore(app_redis))

    with pytest.raises(RestoreRefused, match=message.replace("[", r"\[")):
        request(artifact, **kwargs)
    assert not RestoreRun.objects.exists()


def test_a_redis_backup_cannot_go_into_a_postgres_datastore_nor_into_the_broker(
    app_redis: AppRedis, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    artifact = backup_of(redis_datastore(app_redis))

    with pytest.raises(RestoreRefused, match="is not a Redis datastore; backup #.* is a Redis logical snapshot"):
        request(artifact, target_kind=Kind.DATASTORE, target_datastore=DatastoreFactory(name="pg"))
    monkeypatch.setenv("BROKER_AS_DATASTORE_URL", settings.CELERY_BROKER_URL)
    broker = DatastoreFactory(name="broker", kind=Datastore.Kind.REDIS, url_env="BROKER_AS_DATASTORE_URL")
    with pytest.raises(RestoreRefused, match="is the console's own task broker"):
        request(artifact, target_kind=Kind.DATASTORE, target_datastore=broker)


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("rq:job:*", [b"rq:job:1", b"rq:job:"], [b"rq:jobs", b"x rq:job:1"]),
        ("h?llo", [b"hello", b"hallo"], [b"hllo", b"heello"]),
        ("h[ae]llo", [b"hello", b"hallo"], [b"hillo"]),
        ("h[^e]llo", [b"hallo"], [b"hello"]),
        ("h[a-c]llo", [b"hbllo"], [b"hdllo"]),
        ("h[c-a]llo", [b"hbllo"], [b"hdllo"]),
        (r"a\*b", [b"a*b"], [b"axb"]),
        ("ñ*", ["ñandú".encode()], [b"n"]),
        ("a.b", [b"a.b"], [b"axb"]),
    ],
)
def test_key_patterns_match_like_redis(pattern: str, matches: list[bytes], misses: list[bytes]) -> None:
    match = redis_restore.key_matcher(pattern)

    assert all(match(key) for key in matches)
    assert not any(match(key) for key in misses)


@pytest.mark.parametrize(
    ("recorded", "message"),
    [
        ({"server_version": "Redis 99.0.0"}, "older than the Redis 99.0.0 the backup was taken from"),
        ({"size_bytes": 10**15}, "of memory to spare, less than the"),
    ],
)
def test_a_target_that_cannot_take_the_snapshot_is_refused_before_anything_is_written(
    app_redis: AppRedis, second_redis: AppRedis, recorded: dict[str, Any], message: str
) -> None:
    app_redis.client.set("k", "v")
    artifact = backup_of(redis_datastore(app_redis))
    BackupArtifact.objects.filter(pk=artifact.pk).update(**recorded)
    artifact.refresh_from_db()

    run = restore(artifact, target_kind=Kind.DATASTORE, target_datastore=redis_datastore(second_redis))

    assert run.status == Status.FAILED
    assert message in run.error
    assert second_redis.client.dbsize() == 0
