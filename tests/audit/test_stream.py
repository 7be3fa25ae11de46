"""The audit log's off-box copy (audit.stream): each committed event as one JSON line, to a file a log shipper reads
or to a real syslog listener on 127.0.0.1; nothing of a rolled-back transaction; a sink that fails costs a warning
line, never the event or the action; no secret in a line."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from audit import chain
from audit.models import AuditEvent
from audit.services import audit_record
from audit.stream import audit_stream_close
from backups.health import datastore_health_check
from backups.services import backup_artifact_request
from tests.factories import DatastoreFactory
from tests.support.local import free_port

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run when the transaction really commits


def _record(n: int) -> AuditEvent:
    return audit_record(action=AuditEvent.Action.BACKUP_REQUESTED, actor_label="olga", details={"n": n})


def _committed_and_rolled_back() -> list[AuditEvent]:
    """Two events in autocommit, one in a transaction that commits, one in a transaction that rolls back."""
    events = [_record(1), _record(2)]
    with transaction.atomic():
        events.append(_record(3))
    with pytest.raises(RuntimeError), transaction.atomic():
        _record(4)
        raise RuntimeError("the action failed")
    return events


def _check_line(line: str, event: AuditEvent) -> None:
    """A line is the event as it was hashed: a receiver can check the chain on its own copy."""
    document = json.loads(line)
    assert (document["id"], document["hash"], document["prev_hash"]) == (event.pk, event.hash, event.prev_hash)
    fields = {key: value for key, value in document.items() if key not in ("id", "hash")}
    canonical = json.dumps({"v": chain.VERSION, **fields}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest() == event.hash


@pytest.fixture
def file_sink(settings: Any, tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    settings.AUDIT_STREAM = {"kind": "file", "path": str(path)}
    return path


def test_a_file_sink_gets_exactly_the_lines_of_committed_events(file_sink: Path) -> None:
    events = _committed_and_rolled_back()

    lines = file_sink.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    for line, event in zip(lines, events, strict=True):
        _check_line(line, event)
    assert AuditEvent.objects.count() == 3


@pytest.fixture
def udp_listener(settings: Any) -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    host, port = listener.getsockname()
    settings.AUDIT_STREAM = {"kind": "syslog", "host": host, "port": port, "protocol": "udp", "facility": "local0"}
    yield listener
    listener.close()


def test_a_syslog_listener_receives_each_committed_event_as_one_datagram(udp_listener: socket.socket) -> None:
    events = _committed_and_rolled_back()

    received = [udp_listener.recv(65535).decode() for _ in events]
    udp_listener.settimeout(0.5)
    with pytest.raises(TimeoutError):  # nothing of the rolled-back event
        udp_listener.recv(65535)
    for datagram, event in zip(received, events, strict=True):
        assert datagram.startswith("<134>dr-console-audit: {")  # local0.info, then the TAG
        _check_line(datagram.removeprefix("<134>dr-console-audit: "), event)


def test_syslog_over_tcp_sends_one_line_per_event(settings: Any) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    settings.AUDIT_STREAM = {
        "kind": "syslog",
        "host": "127.0.0.1",
        "port": server.getsockname()[1],
        "protocol": "tcp",
        "facility": "auth",
    }
    chunks: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65535):
                chunks.append(data)

    reader = threading.Thread(target=serve)
    reader.start()
    events = [_record(1), _record(2)]
    audit_stream_close()  # the connection ends: the reader has it all
    reader.join(timeout=5)
    server.close()

    lines = b"".join(chunks).decode().splitlines()
    assert [line.startswith("<38>dr-console-audit: {") for line in lines] == [True, True]  # auth.info
    for line, event in zip(lines, events, strict=True):
        _check_line(line.removeprefix("<38>dr-console-audit: "), event)


def test_a_sink_that_fails_costs_one_warning_line_not_the_event_nor_the_action(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings.AUDIT_STREAM = {"kind": "file", "path": str(tmp_path / "no-such-dir" / "audit.jsonl")}
    datastore = DatastoreFactory(name="prod-db")

    with caplog.at_level(logging.WARNING, logger="audit.stream"):
        artifact = backup_artifact_request(datastore=datastore, trigger="cli:olga", enqueue=False)

    event = AuditEvent.objects.get(action=AuditEvent.Action.BACKUP_REQUESTED)
    assert event.object_id == str(artifact.pk)
    assert [record.getMessage() for record in caplog.records if record.name == "audit.stream"] == [
        f"audit event #{event.pk} is recorded but was not streamed to the file {tmp_path}/no-such-dir/audit.jsonl: "
        f"[Errno 2] No such file or directory: '{tmp_path}/no-such-dir/audit.jsonl'"
    ]


def test_a_syslog_server_that_is_down_costs_a_warning_and_is_tried_again(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings.AUDIT_STREAM = {
        "kind": "syslog",
        "host": "127.0.0.1",
        "port": port,
        "protocol": "tcp",
        "facility": "local0",
    }

    with caplog.at_level(logging.WARNING, logger="audit.stream"):
        first = _record(1)
        server = socket.create_server(("127.0.0.1", port))  # it comes back
        second = _record(2)
    conn, _ = server.accept()
    conn.settimeout(5)
    line = conn.recv(65535).decode()
    conn.close()
    server.close()

    warnings = [record.getMessage() for record in caplog.records if record.name == "audit.stream"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"audit event #{first.pk} is recorded but was not streamed to syslog at 127.0.0.1:")
    assert "(TCP)" in warnings[0] and "\n" not in warnings[0]
    _check_line(line.removeprefix("<134>dr-console-audit: ").rstrip("\n"), second)
    assert AuditEvent.objects.count() == 2


def test_no_secret_reaches_the_stream(file_sink: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A datastore whose URL holds a password: its failed health check and a backup request are streamed, the
    password never."""
    monkeypatch.setenv("SECRET_DB_URL", f"postgresql://app:hunter2-s3cret@127.0.0.1:{free_port()}/app")
    datastore = DatastoreFactory(name="secret-db", url_env="SECRET_DB_URL")

    datastore_health_check(datastore_ids=[datastore.pk])
    backup_artifact_request(datastore=datastore, trigger="cli:olga", enqueue=False)

    streamed = file_sink.read_text(encoding="utf-8")
    assert streamed.count("\n") == 2
    assert "datastore.health_changed" in streamed and "backup.requested" in streamed
    assert "hunter2" not in streamed


@pytest.mark.parametrize(
    ("url", "config"),
    [
        ("", {}),
        ("file:///var/log/dr-console/audit.jsonl", {"kind": "file", "path": "/var/log/dr-console/audit.jsonl"}),
        (
            "syslog://logs.internal",
            {"kind": "syslog", "host": "logs.internal", "port": 514, "protocol": "udp", "facility": "local0"},
        ),
        (
            "syslog+tcp://10.0.0.5:601?facility=auth",
            {"kind": "syslog", "host": "10.0.0.5", "port": 601, "protocol": "tcp", "facility": "auth"},
        ),
        ("syslog:///dev/log", {"kind": "syslog", "socket": "/dev/log", "facility": "local0"}),
    ],
)
def test_the_sink_is_read_from_audit_stream_url(url: str, config: dict[str, Any]) -> None:
    from dr_console.settings import _audit_stream

    assert _audit_stream(url) == config


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("syslog://logs:514?facility=kernel-ish", "unknown syslog facility 'kernel-ish'"),
        ("syslog://logs:port", "the syslog port must be a number"),
        ("https://logs.example.com/ingest", "use syslog://HOST:PORT"),
        ("file://relative/audit.jsonl", "use syslog://HOST:PORT"),
    ],
)
def test_a_sink_the_console_cannot_use_is_refused_at_start(url: str, problem: str) -> None:
    from dr_console.settings import _audit_stream

    with pytest.raises(ImproperlyConfigured, match=problem):
        _audit_stream(url)
