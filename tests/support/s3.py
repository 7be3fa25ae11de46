"""A real S3-compatible server for the tests: moto's server in a subprocess on 127.0.0.1 (started once per session,
stopped at its end; a subprocess, so a test can kill one of its own to make the endpoint go away), a fresh bucket
per test with an S3Storage on it, and `S3FaultProxy`, a real HTTP proxy in front of moto that answers 500 to the
Nth UploadPart, closes the connection in the middle of a part's body, or stops listening."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
# moto accepts any keys. The console itself never takes keys from OPTIONS literally: a location names the
# variables that hold them, and loadconfig reads those (the `_FILE` secrets convention).
FAKE_KEYS = {"access_key": "fake-access-key", "secret_key": "fake-secret-key-for-moto"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode} (run `python -m moto.server` to see why)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.05)


PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec only calls it


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGKILL when the thread that started it dies (Linux), so a pytest or a
    bench killed in the middle leaves no server behind."""
    with contextlib.suppress(AttributeError):
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class MotoServer:
    """`python -m moto.server` on 127.0.0.1; `kill()` is the endpoint going away (its data goes with it)."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        # Its output goes to nothing: werkzeug logs every request on stderr, and a pipe nobody reads fills up
        # (64 KiB) and then blocks the server in the middle of a request.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_for_port(self.port, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 client for the tests' own checks (what is really in the bucket)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=FAKE_KEYS["access_key"],
        aws_secret_access_key=FAKE_KEYS["secret_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
    )


def s3_storage(endpoint_url: str, bucket: str, **options: Any) -> Any:
    from storages.backends.s3 import S3Storage

    return S3Storage(
        bucket_name=bucket,
        endpoint_url=endpoint_url,
        region_name=REGION,
        addressing_style="path",
        **FAKE_KEYS,
        **options,
    )


@dataclass
class S3Bucket:
    """A bucket of its own for one test: `storage` is what the console's callers hold, `client` checks."""

    name: str
    endpoint_url: str
    client: Any
    storage: Any

    def storage_via(self, endpoint_url: str, **options: Any) -> Any:
        """The same bucket through another endpoint (a fault proxy)."""
        return s3_storage(endpoint_url, self.name, **options)

    def versions(self) -> list[dict[str, Any]]:
        page = self.client.list_object_versions(Bucket=self.name)
        return [*page.get("Versions", []), *page.get("DeleteMarkers", [])]

    def uploads(self) -> list[dict[str, Any]]:
        return list(self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", []))

    def empty(self) -> None:
        """Best effort, so moto's memory stays small: whatever is still locked stays."""
        with contextlib.suppress(Exception):
            for upload in self.uploads():
                self.client.abort_multipart_upload(Bucket=self.name, Key=upload["Key"], UploadId=upload["UploadId"])
            for version in self.versions():
                with contextlib.suppress(Exception):
                    self.client.delete_object(
                        Bucket=self.name,
                        Key=version["Key"],
                        VersionId=version["VersionId"],
                        BypassGovernanceRetention=True,
                    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def s3_bucket_factory(moto_server: MotoServer) -> Iterator[Callable[..., S3Bucket]]:
    """`make(object_lock=False, location="", server=moto_server)`: a new bucket (with Object Lock, which also
    makes it versioned) and an S3Storage on it."""
    made: list[S3Bucket] = []

    def make(*, object_lock: bool = False, location: str = "", server: MotoServer | None = None) -> S3Bucket:
        url = (server or moto_server).url
        name = f"drc-test-{uuid.uuid4().hex[:12]}"
        client = s3_client(url)
        client.create_bucket(Bucket=name, **({"ObjectLockEnabledForBucket": True} if object_lock else {}))
        bucket = S3Bucket(name, url, client, s3_storage(url, name, location=location))
        made.append(bucket)
        return bucket

    yield make
    for bucket in made:
        bucket.empty()


@pytest.fixture
def s3_bucket(s3_bucket_factory: Callable[..., S3Bucket]) -> S3Bucket:
    return s3_bucket_factory()


@pytest.fixture
def s3_locked_bucket(s3_bucket_factory: Callable[..., S3Bucket]) -> S3Bucket:
    return s3_bucket_factory(object_lock=True)


def in_future(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


# --- The fault proxy ------------------------------------------------------------------------------------------

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}
INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


class S3FaultProxy:
    """A forwarding HTTP/1.1 proxy on 127.0.0.1 in front of an S3 endpoint, with faults on UploadPart requests
    (by PartNumber, on its first attempt): `fail_part(n)` answers 500 InternalError to part n, `cut_part(n)`
    reads half its body then closes the connection, `stop_at_part(n)` stops listening when it arrives (and drops
    every open connection), as a crashed or unreachable endpoint would. `stop()` and `start()` do it by hand;
    `start()` listens on the same port again. `part_numbers` counts the attempts at each PartNumber."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.port = free_port()
        self.uploads_seen = 0
        self.faults: dict[int, str] = {}
        self.part_numbers: Counter[int] = Counter()
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._refusing = False  # set at once when stopping: serve_forever takes a moment to notice a shutdown
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_part(self, n: int) -> None:
        self.faults[n] = "500"

    def cut_part(self, n: int) -> None:
        self.faults[n] = "cut"

    def stop_at_part(self, n: int) -> None:
        self.faults[n] = "stop"

    def start(self) -> S3FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._sockets.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._sockets.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_GET(self) -> None:
                self.forward()

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

            def forward(self) -> None:
                if proxy._refusing:
                    self.close_connection = True
                    return
                query = parse_qs(urlsplit(self.path).query)
                proxy.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                fault = None
                if self.command == "PUT" and "partNumber" in query and "uploadId" in query:
                    with proxy._lock:
                        proxy.uploads_seen += 1
                        number = int(query["partNumber"][0])
                        # By part number, the first time it is sent: parts go up two at a time, in either order.
                        fault = proxy.faults.pop(number, None)
                        proxy.part_numbers[number] += 1
                if fault == "stop":
                    proxy._refusing = True
                    self.close_connection = True
                    threading.Thread(target=proxy.stop, daemon=True).start()
                    return
                if fault == "cut":
                    self.rfile.read(length // 2)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = self.rfile.read(length) if length else b""
                if fault == "500":
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(INTERNAL_ERROR)))
                    self.end_headers()
                    self.wfile.write(INTERNAL_ERROR)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)  # allow_reuse_address: the same port again
        server.daemon_threads = True
        self._server, self._refusing = server, False
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection: connects are refused from now on."""
        self._refusing = True
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @property
    def listening(self) -> bool:
        return self._server is not None


@pytest.fixture
def s3_proxy(moto_server: MotoServer) -> Iterator[S3FaultProxy]:
    proxy = S3FaultProxy(moto_server.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()
