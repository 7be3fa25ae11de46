"""Backups encrypted at rest in the standard age format (age-encryption.org/v1), so that an operator can open one
without the console: `age -d -i key.txt < FILE.dump | pg_restore --list`.

A storage location names its public recipients (`parse_recipients`); the workers that restore and verify hold the
private identity in an environment variable (`identities_from_env`). Backups stream through `EncryptingReader` on
their way to storage, and through `DecryptingReader` on their way back; neither ever holds a whole file.

How it works, and why:
1. The age format comes from pyrage (Rust `age` crate bindings), not from our own crypto. `pyrage.encrypt_io` and
   `decrypt_io` stream: 1 GiB goes through either in a flat 16 MiB of RSS (measured; pyrage pulls 8 KiB at a time
   from the reader and writes 64 KiB age chunks to the writer).
2. They push (they call `reader.read` and `writer.write` until the end), while the console's storages pull
   (`read(size)` until b""). So each reader runs pyrage in a helper thread that puts the output chunks in a small
   bounded queue, and `read` takes them from it: at most a few MiB are ever in flight (QUEUE_BLOCKS), and a slow
   consumer slows the helper down instead of growing memory.
3. pyrage holds the GIL while it encrypts (measured: a Python thread running beside `pyrage.encrypt` gets 2% of its
   usual rate), giving it up only when it calls back into Python. The console's consumers spend their time in I/O
   (which releases the GIL), so this costs little; a CPU-bound Python thread in the same process would slow the
   stream down a lot. Workers run jobs in their own processes, so none does.
4. The helper reads the source 1 MiB at a time and hands pyrage 8 KiB slices of it: the console's HashingReader
   naps after a short read of a pipe, which 8 KiB reads would turn into a nap every 8 KiB.
5. `close()` (also on leaving a `with` block) cancels the helper: its next read or write raises inside pyrage and
   the thread ends. A helper blocked in `source.read` ends when the source returns, so stop the producing tool
   (`stop_process`) before closing. Nothing here opens a file descriptor or closes the source: the caller owns it.

The `age` CLI in a subprocess (dr_console.jobs.start_process) would be faster: on 1 GiB it uses 0.6 CPU seconds
where this module uses 3.5 (pyrage's 8 KiB Python callbacks under the GIL, and both hashes), 1,243 MiB/s against
215 MiB/s (bench/encryption_overhead.py, docs/benchmarks.md). pyrage is used because it streams, needs no process
to start, track and stop per stream nor a feeder thread for its stdin, and 215 MiB/s is several times what pg_dump
writes; revisit if encryption shows in bench/backup_overhead.py.

Errors are `EncryptionError`s whose message names the problem and never prints a private identity. They are not
`JobFailed`s (this module imports nothing but `dr_console.secrets`): a job turns them into its expected failure.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from types import TracebackType
from typing import Any, Protocol, TypeAlias

import pyrage
from pyrage import x25519

from dr_console.secrets import secret_env

logger = logging.getLogger(__name__)

AGE_HEADER = b"age-encryption.org/v1"
RECIPIENT_PREFIX = "age1"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
READ_SIZE = 1024 * 1024  # what the helper asks its source for at a time (point 4 of the module's text)
CHUNK_SIZE = 1024 * 1024  # what read() returns when asked for "everything" (as backups.artifacts.HashingReader)
BLOCK_SIZE = 1024 * 1024  # what the helper hands the consumer at a time
QUEUE_BLOCKS = 2  # blocks waiting for the consumer: with the helper's own, at most 4 MiB in flight
JOIN_SECONDS = 30.0  # close() waits this long for the helper, which may be in the middle of a source read
_POLL_SECONDS = 0.1  # how often a helper blocked on a full queue looks whether it was cancelled

# pyrage ships no type information; its identity objects are x25519.Identity.
AgeIdentity: TypeAlias = Any


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class EncryptionError(Exception):
    """Something about encryption went wrong; the message says what, without any secret."""


class EncryptionConfigError(EncryptionError):
    """A recipient or identity in configuration or the environment is not usable."""


class KeyUnavailable(EncryptionError):
    """No identity at hand opens the file: the variable is unset, or holds other keys."""


class CiphertextCorrupt(EncryptionError):
    """The file is not age, or was truncated or altered after it was written."""


class _Cancelled(Exception):
    """Raised inside pyrage's callbacks once the reader is closed, to end the helper thread."""


def short_recipient(recipient: str) -> str:
    """A public key short enough for a message: age1abcdefgh…uvwxyz."""
    return recipient if len(recipient) <= 20 else f"{recipient[:12]}…{recipient[-6:]}"


def _looks_secret(text: str) -> bool:
    return text.upper().startswith(("AGE-SECRET-KEY-", "AGE-PLUGIN-"))


def parse_recipients(texts: list[str]) -> list[str]:
    """The age X25519 public keys in `texts`, canonical and in order; blank entries are skipped.
    Raises EncryptionConfigError naming the first bad entry (by position, and by value unless it is a secret)."""
    recipients: list[str] = []
    for number, raw in enumerate(texts, start=1):
        text = raw.strip()
        if not text:
            continue
        where = f"recipient {number}"
        if _looks_secret(text):
            raise EncryptionConfigError(
                f"{where} is a private identity, not a public recipient: put its public key here (the age1… on the "
                "'# public key:' line of the key file, or `age-keygen -y key.txt`), and keep the identity only in "
                "the environment of the workers that restore and verify"
            )
        shown = repr(text if len(text) <= 80 else text[:77] + "...")
        if text.startswith(("ssh-", "age1pq1")) or not text.lower().startswith(RECIPIENT_PREFIX):
            raise EncryptionConfigError(
                f"{where} ({shown}) is not an age X25519 public key: expected age1… as `age-keygen` prints it"
            )
        try:
            recipient = str(x25519.Recipient.from_str(text.lower()))
        except pyrage.RecipientError as exc:
            raise EncryptionConfigError(
                f"{where} ({shown}) looks like an age public key but is damaged ({exc}): copy the whole age1… key again"
            ) from None
        if recipient in recipients:
            raise EncryptionConfigError(f"{where} ({short_recipient(recipient)}) is listed twice")
        recipients.append(recipient)
    return recipients


def identities_from_env(var_name: str) -> list[AgeIdentity]:
    """The age identities in the environment variable `var_name`, read through `secret_env` so that its value is
    masked in logs from now on. The value is an age key file's text: one AGE-SECRET-KEY-1… per line (or several on
    a line, separated by spaces or commas), `#` comments and blank lines allowed.
    Unset: KeyUnavailable. Malformed: EncryptionConfigError naming the line, never its content."""
    value = secret_env(var_name)
    if not value.strip():
        raise KeyUnavailable(
            f"{var_name} is not set: set {var_name} to the age identity (the contents of the key file that "
            "age-keygen wrote) on the workers that restore and verify"
        )
    identities: list[AgeIdentity] = []
    for number, line in enumerate(value.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for token in line.replace(",", " ").split():
            where = f"line {number} of {var_name}"
            if token.lower().startswith(RECIPIENT_PREFIX):
                raise EncryptionConfigError(
                    f"{where} is a public recipient ({short_recipient(token)}), not a private identity: {var_name} "
                    "needs the AGE-SECRET-KEY-1… line of the key file"
                )
            if not token.upper().startswith(IDENTITY_PREFIX):
                raise EncryptionConfigError(
                    f"{where} is not an age identity: expected AGE-SECRET-KEY-1… as age-keygen writes it "
                    "(plugin and ssh identities are not supported)"
                )
            try:
                identities.append(x25519.Identity.from_str(token.upper()))
            except pyrage.IdentityError as exc:
                raise EncryptionConfigError(
                    f"{where} looks like an age identity but is damaged ({exc}): copy the whole AGE-SECRET-KEY-1… "
                    "line again"
                ) from None
    if not identities:
        raise EncryptionConfigError(f"{var_name} holds no age identity, only comments or blank lines")
    return identities


def identity_recipient(identity: AgeIdentity) -> str:
    """The public key (age1…) that `identity` opens."""
    return str(identity.to_public())


def is_age_ciphertext(first_bytes: bytes) -> bool:
    """Whether a file starting with `first_bytes` (at least its first 21 bytes) is binary age."""
    return first_bytes.startswith(AGE_HEADER)


class _Input:
    """What pyrage reads from, in the helper thread: the source, read 1 MiB at a time and handed out in the small
    pieces pyrage asks for. Remembers the first bytes (for error messages) and an exception of the source itself."""

    def __init__(self, stream: _StreamingReader) -> None:
        self._stream = stream
        self._buffer = b""
        self._offset = 0
        self.head = b""
        self.source_error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self._stream._cancelled.is_set():
            raise _Cancelled
        if self._offset >= len(self._buffer):
            try:
                self._buffer = self._stream._source.read(READ_SIZE)
            except BaseException as exc:
                self.source_error = exc
                raise
            self._offset = 0
            if not self._buffer:
                return b""
            if len(self.head) < 64:
                self.head += self._buffer[: 64 - len(self.head)]
            self._stream._consumed(self._buffer)
        size = size if size > 0 else len(self._buffer)
        data = self._buffer[self._offset : self._offset + size]
        self._offset += len(data)
        return data


class _Output:
    """What pyrage writes to, in the helper thread: the bounded queue the consumer's read() takes from. pyrage
    writes 64 KiB at a time; handing over 1 MiB blocks instead wakes the consumer 16 times less often."""

    def __init__(self, stream: _StreamingReader) -> None:
        self._stream = stream
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._size += len(data)
        if self._size >= BLOCK_SIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._parts:
            return
        block = b"".join(self._parts)
        self._parts, self._size = [], 0
        self._stream.sha256.update(block)
        while True:
            if self._stream._cancelled.is_set():
                raise _Cancelled
            try:
                self._stream._queue.put(block, timeout=_POLL_SECONDS)
                self._stream._produced += len(block)
                return
            except queue.Full:
                continue


class _StreamingReader:
    """A file-like reader of what pyrage writes while it reads `source` in a helper thread (module text, point 2).
    `sha256` and `size` are those of the whole output once read() has returned b"" (the helper hashes each block
    as it hands it over: hashing in the consumer's thread, fighting pyrage for the GIL, was slower than doing it in
    line); `progress["bytes_done"]` follows `size`, the bytes read() has returned so far."""

    def __init__(self, source: Readable, progress: dict[str, int] | None, thread_name: str) -> None:
        self._source = source
        self._progress = progress if progress is not None else {}
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_BLOCKS)  # None: the helper is done
        self._cancelled = threading.Event()
        self._input = _Input(self)
        self._error: BaseException | None = None
        self._failure: BaseException | None = None  # what read() raises, once it has been decided
        self._pending = b""  # the rest of a block that a read did not take
        self._ended = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._thread_name = thread_name
        self._produced = 0  # bytes the helper has written so far
        self.sha256 = hashlib.sha256()
        self.size = 0

    # Supplied by the subclasses.
    def _run(self, reader: _Input, writer: _Output) -> None:
        raise NotImplementedError

    def _translate(self, exc: BaseException) -> BaseException:
        raise NotImplementedError

    def _consumed(self, data: bytes) -> None:
        """Called in the helper with each block read from the source."""

    def _pump(self) -> None:
        try:
            output = _Output(self)
            self._run(self._input, output)
            output.flush()
        except BaseException as exc:  # handed to the consumer, who raises it from read()
            self._error = exc
        finally:
            while not self._cancelled.is_set():
                try:
                    self._queue.put(None, timeout=_POLL_SECONDS)
                    break
                except queue.Full:
                    continue

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._pump, name=self._thread_name, daemon=True)
        self._thread.start()

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (exactly `size` until the end, as storages that upload in parts expect); b"" at the
        end. A negative or missing size reads CHUNK_SIZE, not the whole stream."""
        if self._closed:
            raise ValueError("read of a closed encryption stream")
        if self._failure is not None:
            raise self._failure
        size = size if size is not None and size > 0 else CHUNK_SIZE
        if self._thread is None and not self._ended:
            self._start()
        # Whole blocks from the queue, joined once: the fewest copies of a large read.
        parts, have = [self._pending] if self._pending else [], len(self._pending)
        self._pending = b""
        while have < size and not self._ended:
            block = self._queue.get()
            if block is None:
                self._ended = True
                if self._error is not None:
                    self._failure = self._explain(self._error)
                    raise self._failure
            else:
                parts.append(block)
                have += len(block)
        if have > size:
            last, cut = parts[-1], len(parts[-1]) - (have - size)
            parts[-1], self._pending = last[:cut], last[cut:]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if data:
            self.size += len(data)
            self._progress["bytes_done"] = self.size
        return data

    def _explain(self, exc: BaseException) -> BaseException:
        # An error of the source (a broken pipe, a storage timeout) is raised as itself: pyrage wraps it in its own.
        if self._input.source_error is not None:
            return self._input.source_error
        return self._translate(exc)

    def close(self) -> None:
        """Stop the helper thread (it may be waiting to write, or reading). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._cancelled.set()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)
            if self._thread.is_alive():
                logger.warning(
                    "the %s thread is still reading its source after %.0f s; it ends when the source does",
                    self._thread_name,
                    JOIN_SECONDS,
                )
        self._pending = b""

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> _StreamingReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class EncryptingReader(_StreamingReader):
    """age ciphertext of what `source.read(n)` yields, to those holding an identity of one of `recipients`.

    `sha256`/`size` (a hashlib object and an int, as backups.artifacts.HashingReader's) are the ciphertext's: what
    the storage receives and what a verification recomputes on the stored file. `plaintext_sha256`/`plaintext_size`
    are the dump's own, complete once read() has returned b"". `progress["bytes_done"]` counts ciphertext bytes:
    give `progress` to this reader, not also to a HashingReader under it."""

    def __init__(self, source: Readable, recipients: list[str], progress: dict[str, int] | None = None) -> None:
        super().__init__(source, progress, "age-encrypt")
        parsed = parse_recipients(recipients)
        if not parsed:
            raise EncryptionConfigError("encryption needs at least one age recipient (age1…)")
        self.recipients = parsed
        self._recipients = [x25519.Recipient.from_str(text) for text in parsed]
        self.plaintext_sha256 = hashlib.sha256()
        self.plaintext_size = 0

    def _consumed(self, data: bytes) -> None:
        self.plaintext_sha256.update(data)
        self.plaintext_size += len(data)

    def _run(self, reader: _Input, writer: _Output) -> None:
        pyrage.encrypt_io(reader, writer, self._recipients)

    def _translate(self, exc: BaseException) -> BaseException:
        return EncryptionError(f"age encryption failed: {exc}")


class DecryptingReader(_StreamingReader):
    """The plaintext of the age file that `source.read(n)` yields, opened with one of `identities`.

    `recipients` (what the console recorded for the artifact) and `identity_env` (the variable the identities came
    from) only make the messages precise. A wrong key raises KeyUnavailable before any plaintext; a truncated or
    altered file raises CiphertextCorrupt, possibly after read() has returned the intact part (age authenticates
    each 64 KiB chunk, and the end of the file only at the end): a restore is good only once read() returned b""."""

    def __init__(
        self,
        source: Readable,
        identities: list[AgeIdentity],
        *,
        recipients: list[str] | None = None,
        identity_env: str = "",
        progress: dict[str, int] | None = None,
    ) -> None:
        super().__init__(source, progress, "age-decrypt")
        if not identities:
            raise KeyUnavailable(f"no age identity to open the backup with{self._in_env(identity_env)}")
        self._identities = list(identities)
        self._file_recipients = list(recipients or [])
        self._identity_env = identity_env

    @staticmethod
    def _in_env(identity_env: str) -> str:
        return f" (set {identity_env} on the workers that restore and verify)" if identity_env else ""

    def _run(self, reader: _Input, writer: _Output) -> None:
        pyrage.decrypt_io(reader, writer, self._identities)

    def _translate(self, exc: BaseException) -> BaseException:
        message = str(exc)
        if isinstance(exc, pyrage.DecryptError) and "No matching keys" in message:
            return self._no_matching_key()
        head = self._input.head
        if not head:
            return CiphertextCorrupt("the backup file is empty: it is not an age file")
        if not is_age_ciphertext(head):
            if head.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----"):
                return CiphertextCorrupt("the backup is ASCII-armored age; the console reads binary age only")
            return CiphertextCorrupt(f"the backup is not an age file: it does not start with {AGE_HEADER.decode()}")
        if isinstance(exc, pyrage.DecryptError):
            return CiphertextCorrupt(f"the backup's age header is damaged or cut short ({message})")
        return CiphertextCorrupt(
            f"the backup is truncated or was altered: age refused it after {self._produced} bytes of plaintext "
            f"({message})"
        )

    def _no_matching_key(self) -> EncryptionError:
        mine = [identity_recipient(identity) for identity in self._identities]
        names = ", ".join(short_recipient(r) for r in mine)
        where = f"the identities in {self._identity_env}" if self._identity_env else "the identities given"
        if any(recipient in self._file_recipients for recipient in mine):
            # age found no stanza it could open although the file was written to one of our keys: its header broke.
            return CiphertextCorrupt(
                f"the backup's age header is damaged: it was encrypted to {names}, which {where} hold, "
                "but none opens it"
            )
        if self._file_recipients:
            to = ", ".join(short_recipient(r) for r in self._file_recipients)
            return KeyUnavailable(f"backup is encrypted to {to}; none of {where} opens it (they are {names})")
        return KeyUnavailable(f"none of {where} opens the backup (they are {names}), or its header is damaged")
