"""S3-compatible object stores (Amazon S3, MinIO, Ceph RGW, ...) behind a django-storages `S3Storage`.

The storage's OPTIONS are the configuration (bucket_name, endpoint_url, region_name, addressing_style, location,
credentials, client_config, object_parameters): nothing here reads settings of its own. Keys are the storage's
names (relative to its `location` prefix), as for `storage.open` and `storage.save`.

What the generic Storage API cannot do, and this module does:

- `multipart_write`: stream into a multipart upload created at the FINAL key. S3 publishes the object only when
  CompleteMultipartUpload succeeds, so a failed or cancelled job leaves nothing that looks like a backup, and no
  temporary key is ever written (on an Object Lock bucket a temporary key could not be deleted afterwards).
- `object_delete`: remove every version of an object. On a versioned bucket (every Object Lock bucket is one) a
  plain DeleteObject only adds a delete marker and the data stays. A version under retention raises `ObjectLocked`
  with its date, and nothing is deleted.
- `uploads_in_progress` / `abort_uploads`: the reaper's sweep of the uploads a dead worker left (their parts are
  stored, and billed, until aborted).
- `object_chunks`: a streaming read. `storage.open(key).read(n)` does not stream: django-storages' S3File
  downloads the WHOLE object into a SpooledTemporaryFile first, and with the default `max_memory_size` of 0 that
  file never rolls over to disk, so the whole object sits in memory.

Calls go through a boto3 client built from the storage's own session, endpoint and client_config, with
`CLIENT_DEFAULTS` underneath: botocore's standard retry mode (a few attempts, with backoff, on 5xx, throttling and
connection errors) and explicit timeouts. An explicit `client_config` in OPTIONS wins over those defaults.
Every failure of the store is raised as `ObjectStoreError`, one line naming the endpoint, bucket and key and the
cause, never the credentials.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple
from urllib.parse import urlsplit

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from django.core.files.storage import Storage
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from dr_console.text import untrusted_text

MIB = 1024**2
GIB = 1024**3
S3_MIN_PART_SIZE = 5 * MIB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * GIB  # S3's ceiling for one part
MAX_PARTS = 10_000  # S3's ceiling for the parts of one upload
PARTS_IN_FLIGHT = 2  # parts sent while the next is read: the source and the upload overlap
MIN_PART_SIZE = 8 * MIB  # ours: fewer requests than S3's 5 MiB floor, still little memory
UNKNOWN_SIZE_PART = 64 * MIB  # no estimate: room for 625 GiB in 10,000 parts, for 64 MiB of memory
HEADROOM = 2  # estimates run low (the database grew since): size parts for twice the estimate
CHUNK_SIZE = 1024 * 1024
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
LEGAL_HOLD = "LEGAL_HOLD"

# Underneath the storage's own client_config (which wins where it sets the same option). botocore's standard
# mode retries 5xx, throttling and connection errors with exponential backoff and jitter, and sends a part's body
# again for each attempt. total_max_attempts counts the first attempt (botocore's max_attempts would not: 4 there
# is 5 tries). connect_timeout is short because an endpoint that does not answer a connect in 10 s is down;
# read_timeout is botocore's default, long enough for a slow part.
CLIENT_DEFAULTS = Config(
    retries={"mode": "standard", "total_max_attempts": 4},
    connect_timeout=10,
    read_timeout=60,
    tcp_keepalive=True,
)


class ObjectStoreError(Exception):
    """The object store refused or failed an operation; the message is one line, without credentials."""


class ObjectLocked(ObjectStoreError):
    """A version of the object is under Object Lock retention (or a legal hold): it cannot be deleted yet."""

    def __init__(self, key: str, until: dt.datetime | None, mode: str) -> None:
        self.key, self.until, self.mode = key, until, mode
        if until is None:
            super().__init__(f"{key} is under a legal hold")
        else:
            super().__init__(f"{key} is locked until {until:%Y-%m-%d %H:%M} UTC ({mode.lower()})")


class InProgressUpload(NamedTuple):
    """A multipart upload that was created and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: dt.datetime


def is_object_store(storage: Storage) -> bool:
    return isinstance(storage, S3Storage)


def part_size_for(expected_bytes: int | None) -> int:
    """The part size for an upload of about `expected_bytes`.

    S3 takes at most 10,000 parts of 5 MiB to 5 GiB each. Parts are sized so that twice the estimate fits in
    10,000 of them (an estimate can be low: the database grew since the last backup), never under 8 MiB (fewer
    requests for small objects), rounded up to a whole MiB, never over 5 GiB. The upload holds one part in memory,
    so a 1 TiB estimate costs 210 MiB. No estimate (None): 64 MiB, room for 625 GiB. Past 5 GiB x 10,000 (48.8 TiB)
    nothing fits: `multipart_write` fails at part 10,001 with a message saying so.
    """
    if expected_bytes is None:
        return UNKNOWN_SIZE_PART
    wanted = -(-max(expected_bytes, 0) * HEADROOM // MAX_PARTS)  # ceiling division
    wanted = -(-wanted // MIB) * MIB
    return min(max(wanted, MIN_PART_SIZE), MAX_PART_SIZE)


def multipart_write(
    storage: S3Storage,
    key: str,
    reader: IO[bytes] | Any,
    *,
    expected_bytes: int | None = None,
    lock_mode: str | None = None,
    retain_until: dt.datetime | None = None,
    metadata: dict[str, str] | None = None,
    progress: dict[str, int] | None = None,
    part_size: int | None = None,
) -> int:
    """Stream `reader` to `key` and return the number of bytes written. The object appears whole or not at all.

    1. Read one part (`part_size`, default `part_size_for(expected_bytes)`): `reader.read(n)` may return less than
       n, so reads repeat until the part is full or the reader returns b"".
    2. Less than one part in all: one PutObject (atomic too). Otherwise CreateMultipartUpload at the final key,
       with ObjectLockMode/ObjectLockRetainUntilDate when asked, then one UploadPart per part, each retried by
       botocore (CLIENT_DEFAULTS), then CompleteMultipartUpload: only now does the object exist.
    3. With a lock mode, the new version's retention is read back (HeadObject) and set with PutObjectRetention if
       the server did not apply the upload's headers (moto ignores them on CreateMultipartUpload). If that fails,
       the unlocked version is deleted and the write fails.
    4. On any failure or exception before the end, BaseException included (a cancel, a time limit), the upload is
       aborted, best effort: if the endpoint is gone the abort fails too, and `abort_uploads` sweeps it later. The
       store's failures are raised as ObjectStoreError; the caller's own (the reader's, a cancel) as they were.

    Memory holds PARTS_IN_FLIGHT parts being sent and the one being read (and boto's buffers).
    `progress["bytes_done"]` is what the store has acknowledged.
    """
    if (lock_mode is None) != (retain_until is None):
        raise ValueError("lock_mode and retain_until go together")
    if lock_mode is not None and lock_mode not in LOCK_MODES:
        raise ValueError(f"lock_mode must be one of {LOCK_MODES}, not {lock_mode!r}")
    if retain_until is not None and retain_until.tzinfo is None:
        raise ValueError("retain_until must be timezone-aware")
    size = part_size or part_size_for(expected_bytes)
    if not S3_MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise ValueError(f"part_size must be between {S3_MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, not {size}")
    client, bucket, name = _client(storage), storage.bucket_name, _full_key(storage, key)
    progress = progress if progress is not None else {}
    call = _Caller(storage, name)

    params: dict[str, Any] = {**storage._get_write_parameters(name), "Bucket": bucket, "Key": name}
    if metadata:
        params["Metadata"] = metadata
    if lock_mode is not None:
        params |= {"ObjectLockMode": lock_mode, "ObjectLockRetainUntilDate": retain_until}
    checksums = client.meta.config.request_checksum_calculation == "when_supported"

    data = _read_part(reader, size)
    if len(data) < size:  # the whole object is smaller than one part
        if not checksums and lock_mode is not None:  # S3 requires an integrity header with Object Lock
            params["ContentMD5"] = _md5(data)
        response = call("PutObject", client.put_object, Body=data, **params)
        _ensure_retention(client, call, bucket, name, response.get("VersionId"), lock_mode, retain_until)
        progress["bytes_done"] = len(data)
        return len(data)

    if checksums:  # as s3transfer does: the parts' CRC32s are checked by the server, and listed at completion
        params["ChecksumAlgorithm"] = "CRC32"
    upload_id = call("CreateMultipartUpload", client.create_multipart_upload, **params)["UploadId"]

    def upload(number: int, body: bytes | bytearray) -> dict[str, Any]:
        part_args: dict[str, Any] = {"Bucket": bucket, "Key": name, "UploadId": upload_id, "PartNumber": number}
        if checksums:
            part_args["ChecksumAlgorithm"] = "CRC32"
        elif lock_mode is not None:
            part_args["ContentMD5"] = _md5(body)
        response = call(f"UploadPart {number}", client.upload_part, Body=body, **part_args)
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if response.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    # Parts upload in the background while the next one is read, so the dump and the upload overlap instead of
    # adding up; at most PARTS_IN_FLIGHT are sent at once, so memory holds that many parts and the one being read.
    pool = concurrent.futures.ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
    in_flight: list[tuple[concurrent.futures.Future[dict[str, Any]], int]] = []
    try:
        parts: list[dict[str, Any]] = []
        written = 0
        number = 0

        def settle(keep: int) -> None:
            nonlocal written
            while len(in_flight) > keep:
                future, length = in_flight.pop(0)
                parts.append(future.result())
                written += length
                progress["bytes_done"] = written

        while data:
            number += 1
            if number > MAX_PARTS:
                raise ObjectStoreError(
                    f"{call.where}: larger than {MAX_PARTS} parts of {size // MIB} MiB "
                    f"(expected {expected_bytes} bytes): give a larger estimate"
                )
            settle(PARTS_IN_FLIGHT - 1)
            in_flight.append((pool.submit(upload, number, data), len(data)))
            if len(data) < size:
                break
            data = _read_part(reader, size)
        settle(0)
        response = call(
            "CompleteMultipartUpload",
            client.complete_multipart_upload,
            Bucket=bucket,
            Key=name,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
    except BaseException:
        for future, _length in in_flight:
            future.cancel()
        pool.shutdown(wait=True)  # no part may land after the abort
        _abort_quietly(client, bucket, name, upload_id)
        raise
    pool.shutdown(wait=True)
    _ensure_retention(client, call, bucket, name, response.get("VersionId"), lock_mode, retain_until)
    return written


def uploads_in_progress(storage: S3Storage, prefix: str = "") -> list[InProgressUpload]:
    """Multipart uploads under `prefix` (a storage name prefix) that were neither completed nor aborted."""
    client, call = _client(storage), _Caller(storage, _full_prefix(storage, prefix))
    found = []
    paginator = client.get_paginator("list_multipart_uploads")
    pages = paginator.paginate(Bucket=storage.bucket_name, Prefix=_full_prefix(storage, prefix))
    for page in call.pages("ListMultipartUploads", pages):
        for upload in page.get("Uploads", []):
            found.append(
                InProgressUpload(_storage_name(storage, upload["Key"]), upload["UploadId"], upload["Initiated"])
            )
    return found


def abort_uploads(
    storage: S3Storage, predicate: Callable[[InProgressUpload], bool], prefix: str = ""
) -> list[InProgressUpload]:
    """Abort the uploads in progress that `predicate` picks (the reaper: those of its dead jobs). Returns them.
    An upload that another sweep aborted first (NoSuchUpload) counts as done."""
    client = _client(storage)
    aborted = []
    for upload in uploads_in_progress(storage, prefix):
        if not predicate(upload):
            continue
        call = _Caller(storage, _full_key(storage, upload.key))
        try:
            call(
                "AbortMultipartUpload",
                client.abort_multipart_upload,
                Bucket=storage.bucket_name,
                Key=_full_key(storage, upload.key),
                UploadId=upload.upload_id,
            )
        except ObjectStoreError as exc:
            if not _is_code(exc.__cause__, "NoSuchUpload"):
                raise
        aborted.append(upload)
    return aborted


def object_delete(storage: S3Storage, key: str, *, bypass_governance: bool = False) -> None:
    """Remove the object at `key` for good: every version and delete marker when the bucket is versioned.

    1. List the key's versions. None (never written, or an unversioned bucket's gone object): nothing to do.
    2. Read each version's retention (HeadObject). If one is still locked, raise ObjectLocked with the latest date
       among them, before deleting anything, so retention can skip the artifact and come back after that date.
    3. Delete each version and delete marker by its id. A version locked meanwhile still raises ObjectLocked.

    `bypass_governance` sends x-amz-bypass-governance-retention (needs s3:BypassGovernanceRetention); the console
    never sets it by default: GOVERNANCE retention is there to stop exactly this deletion.
    """
    client, bucket, name = _client(storage), storage.bucket_name, _full_key(storage, key)
    call = _Caller(storage, name)
    versions = _versions(client, call, bucket, name)
    locks = []
    for version_id, is_marker in versions:
        if not is_marker and (lock := _version_lock(client, call, bucket, name, version_id)):
            locks.append(lock)
    if locks and not (bypass_governance and all(mode == "GOVERNANCE" for mode, _ in locks)):
        raise _locked(key, locks)
    extra = {"BypassGovernanceRetention": True} if bypass_governance else {}
    for version_id, _is_marker in versions:
        try:
            # By id, "null" included: on a versioned bucket a delete without one only adds a marker.
            call("DeleteObject", client.delete_object, Bucket=bucket, Key=name, VersionId=version_id, **extra)
        except ObjectStoreError as exc:
            if _is_code(exc.__cause__, "AccessDenied") and (
                lock := _version_lock(client, call, bucket, name, version_id)
            ):
                raise _locked(key, [lock]) from None
            raise


def object_retention(storage: S3Storage, key: str) -> tuple[str, dt.datetime | None] | None:
    """(mode, until) of the object's current version: ("COMPLIANCE" or "GOVERNANCE", the retain-until date), or
    ("LEGAL_HOLD", None) under a legal hold; None without either. Read with HeadObject (GetObjectRetention is not
    implemented by every S3-compatible server; HeadObject reports the same headers). FileNotFoundError if absent."""
    client, name = _client(storage), _full_key(storage, key)
    head = _head(client, _Caller(storage, name), storage.bucket_name, name, None)
    if head is None:
        raise FileNotFoundError(key)
    return _lock_of(head, only_active=False)


def object_lock_enabled(storage: S3Storage) -> bool:
    """Whether the bucket was created with Object Lock (it cannot be turned on for objects written before)."""
    client = _client(storage)
    call = _Caller(storage, "")
    try:
        response = call("GetObjectLockConfiguration", client.get_object_lock_configuration, Bucket=storage.bucket_name)
    except ObjectStoreError as exc:
        if _is_code(exc.__cause__, "ObjectLockConfigurationNotFoundError"):
            return False
        raise
    return bool(response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")


def object_lock_require(storage: S3Storage, mode: str) -> None:
    """Refuse a location configured with `object_lock=<mode>` whose bucket has no Object Lock: ObjectStoreError."""
    if mode.upper() not in LOCK_MODES:
        raise ObjectStoreError(f"object lock mode {mode!r}: use governance or compliance")
    if not object_lock_enabled(storage):
        raise ObjectStoreError(
            f"{_Caller(storage, '').where}: object_lock={mode.lower()} needs a bucket created with Object Lock "
            "enabled, and this one has none (it cannot be added to an existing bucket's objects: create a new "
            "bucket with Object Lock)"
        )


def object_stat(storage: S3Storage, key: str) -> tuple[int, str] | None:
    """(size, ETag without quotes) of the object, or None when there is none."""
    client, name = _client(storage), _full_key(storage, key)
    head = _head(client, _Caller(storage, name), storage.bucket_name, name, None)
    if head is None:
        return None
    return int(head["ContentLength"]), str(head["ETag"]).strip('"')


def object_chunks(storage: S3Storage, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The object's bytes as GetObject's body streams them, `chunk_size` at a time: memory stays at one chunk
    (unlike `storage.open(key).read()`, see the module's docstring). A body cut short raises ObjectStoreError;
    a missing object raises FileNotFoundError."""
    client, name = _client(storage), _full_key(storage, key)
    call = _Caller(storage, name)
    try:
        response = call("GetObject", client.get_object, Bucket=storage.bucket_name, Key=name)
    except ObjectStoreError as exc:
        if _is_code(exc.__cause__, "NoSuchKey", "404"):
            raise FileNotFoundError(key) from None
        raise
    body = response["Body"]
    try:
        yield from call.pages("GetObject (reading)", body.iter_chunks(chunk_size))
    finally:
        body.close()


# --- Internals -----------------------------------------------------------------------------------------------


_clients: weakref.WeakKeyDictionary[S3Storage, Any] = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def _client(storage: S3Storage) -> Any:
    """One boto3 client per storage (clients are thread-safe), built as storage.connection is, from the storage's
    session (its credentials), endpoint, region and TLS options, with CLIENT_DEFAULTS under its client_config."""
    with _clients_lock:
        client = _clients.get(storage)
        if client is None:
            client = storage._create_session().client(
                "s3",
                region_name=storage.region_name,
                use_ssl=storage.use_ssl,
                endpoint_url=storage.endpoint_url,
                config=CLIENT_DEFAULTS.merge(storage.client_config),
                verify=storage.verify,
            )
            _clients[storage] = client
        return client


def _full_key(storage: S3Storage, key: str) -> str:
    return str(storage._normalize_name(clean_name(key)))


def _full_prefix(storage: S3Storage, prefix: str) -> str:
    location = storage.location.strip("/")
    return f"{location}/{prefix}" if location else prefix


def _storage_name(storage: S3Storage, full_key: str) -> str:
    location = storage.location.strip("/")
    return full_key[len(location) + 1 :] if location and full_key.startswith(location + "/") else full_key


def _read_part(reader: Any, size: int) -> bytes | bytearray:
    """Exactly `size` bytes, or fewer at the end: a pipe's read returns what is there, not what was asked. Short
    reads are gathered in one bytearray that is sent as it is (botocore takes any bytes-like body), so a part is
    in memory once, not twice."""
    data = reader.read(size)
    if not data or len(data) == size:
        return data or b""
    part = bytearray(data)
    del data
    while len(part) < size and (more := reader.read(size - len(part))):
        part += more
    return part


def _md5(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _abort_quietly(client: Any, bucket: str, name: str, upload_id: str) -> None:
    # Best effort: when the endpoint is gone this fails too, and the reaper's abort_uploads sweeps it later.
    with contextlib.suppress(Exception):  # the original failure is the one to report
        client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)


def _version(version_id: str | None) -> dict[str, str]:
    """The VersionId argument for a read, none for an unversioned object (moto answers 400 to "null")."""
    return {"VersionId": version_id} if version_id and version_id != "null" else {}


def _head(client: Any, call: _Caller, bucket: str, name: str, version_id: str | None) -> dict[str, Any] | None:
    args = {"Bucket": bucket, "Key": name} | _version(version_id)
    try:
        return dict(call("HeadObject", client.head_object, **args))
    except ObjectStoreError as exc:
        if _is_code(exc.__cause__, "404", "NoSuchKey", "NoSuchVersion"):
            return None
        raise


def _lock_of(head: dict[str, Any], *, only_active: bool) -> tuple[str, dt.datetime | None] | None:
    """The lock a HeadObject answer reports: a legal hold first, then a retention (only a future one if asked)."""
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return LEGAL_HOLD, None
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if not mode or until is None:
        return None
    until = until.astimezone(dt.UTC)
    if only_active and until <= dt.datetime.now(dt.UTC):
        return None
    return str(mode), until


def _version_lock(
    client: Any, call: _Caller, bucket: str, name: str, version_id: str
) -> tuple[str, dt.datetime | None] | None:
    head = _head(client, call, bucket, name, version_id)
    return _lock_of(head, only_active=True) if head else None


def _locked(key: str, locks: list[tuple[str, dt.datetime | None]]) -> ObjectLocked:
    held = [mode for mode, until in locks if until is None]
    if held:
        return ObjectLocked(key, None, held[0])
    mode, until = max(locks, key=lambda lock: lock[1] or dt.datetime.max.replace(tzinfo=dt.UTC))
    return ObjectLocked(key, until, mode)


def _versions(client: Any, call: _Caller, bucket: str, name: str) -> list[tuple[str, bool]]:
    """(version id, is a delete marker) of every version of exactly `name` (the listing is by prefix)."""
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=name)
    found = []
    for page in call.pages("ListObjectVersions", pages):
        for entry in page.get("Versions", []):
            if entry["Key"] == name:
                found.append((str(entry["VersionId"]), False))
        for entry in page.get("DeleteMarkers", []):
            if entry["Key"] == name:
                found.append((str(entry["VersionId"]), True))
    return found


def _ensure_retention(
    client: Any,
    call: _Caller,
    bucket: str,
    name: str,
    version_id: str | None,
    mode: str | None,
    until: dt.datetime | None,
) -> None:
    """Check that the version just written carries the retention asked for, and set it if not. Amazon S3 applies
    the upload's headers; moto (and possibly other S3-compatible servers) ignores them on CreateMultipartUpload.
    If the retention cannot be set, the (unlocked) version is deleted: a backup that should be locked and is not
    must not stay behind looking like one."""
    if mode is None or until is None:
        return
    head = _head(client, call, bucket, name, version_id)
    current = _lock_of(head, only_active=False) if head else None
    if current and current[0] == mode and current[1] is not None and current[1] >= until.replace(microsecond=0):
        return
    version = _version(version_id)
    try:
        call(
            "PutObjectRetention",
            client.put_object_retention,
            Bucket=bucket,
            Key=name,
            Retention={"Mode": mode, "RetainUntilDate": until},
            **version,
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the retention failure is the one to report
            client.delete_object(Bucket=bucket, Key=name, **version)
        raise


class _Caller:
    """Runs one client call and turns botocore's failures into an ObjectStoreError that says where and why."""

    def __init__(self, storage: S3Storage, name: str) -> None:
        endpoint = storage.endpoint_url or f"s3.{storage.region_name or 'us-east-1'}.amazonaws.com"
        parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
        host = parts.hostname or endpoint  # never the userinfo or query of a URL
        where = f"{parts.scheme}://{host}" if parts.scheme else host
        if parts.port:
            where += f":{parts.port}"
        self.attempts = _attempts(storage)
        self.where = untrusted_text(f"S3 {where} bucket {storage.bucket_name!r}" + (f" key {name!r}" if name else ""))

    def __call__(self, what: str, function: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return function(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self.error(what, exc) from exc

    def pages(self, what: str, iterable: Any) -> Iterator[Any]:
        """The items of a paginator or a streaming body, with the same translation of failures."""
        try:
            yield from iterable
        except (BotoCoreError, ClientError) as exc:
            raise self.error(what, exc) from exc

    def error(self, what: str, exc: Exception) -> ObjectStoreError:
        return ObjectStoreError(untrusted_text(f"{self.where}: {what} failed: {self._cause(exc)}"))

    def _cause(self, exc: Exception) -> str:
        tried = f" (tried {self.attempts} times)" if self.attempts > 1 else ""
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code, message = error.get("Code", "error"), error.get("Message", "")
            status = meta.get("HTTPStatusCode")
            retries = meta.get("RetryAttempts", 0)
            return (
                f"{code}"
                + (f" (HTTP {status})" if status and str(status) != code else "")
                + (f": {message}" if message else "")
                + (f", after {retries} retries" if retries else "")
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return f"could not connect to the endpoint{tried}"
        if isinstance(exc, ConnectionClosedError):
            return f"the endpoint closed the connection{tried}"
        if isinstance(exc, ReadTimeoutError):
            return f"the endpoint did not answer in time{tried}"
        if isinstance(exc, NoCredentialsError):
            return "no credentials: set the access key variables the location names"
        return f"{type(exc).__name__}: {exc}"


def _attempts(storage: S3Storage) -> int:
    """How many times botocore tries a call, as the client resolved it (OPTIONS' client_config may change it)."""
    retries = _client(storage).meta.config.retries or {}
    return int(retries.get("total_max_attempts", 1))


def _is_code(exc: BaseException | None, *codes: str) -> bool:
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return error.get("Code") in codes or status in codes
