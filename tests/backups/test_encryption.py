"""Backups encrypted at rest (backups/encryption.py), checked against the real `age` and `age-keygen` an operator
would open them with (`make test-deps` installs them), a real pg_dump of a real database, and pg_restore."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from backups.artifacts import HashingReader
from backups.encryption import (
    CiphertextCorrupt,
    DecryptingReader,
    EncryptingReader,
    EncryptionConfigError,
    EncryptionError,
    KeyUnavailable,
    identities_from_env,
    identity_recipient,
    is_age_ciphertext,
    parse_recipients,
    short_recipient,
)
from dr_console.jobs.processes import start_process, stop_process
from dr_console.secrets import MASK, mask_secrets
from tests.support.postgres import create_database, database_url, drop_database, table_fingerprints

AGE_CHUNK = 64 * 1024


@dataclass
class AgeKey:
    path: Path  # the key file age-keygen wrote
    text: str  # its contents, as an operator puts them in the environment
    recipient: str  # its public key, as `age-keygen -y` prints it


def make_key(directory: Path, name: str = "key.txt") -> AgeKey:
    path = directory / name
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True)
    return AgeKey(path=path, text=path.read_text(), recipient=recipient.stdout.strip())


@pytest.fixture
def key(tmp_path: Path) -> AgeKey:
    return make_key(tmp_path)


@pytest.fixture
def identity_env(key: AgeKey, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_AGE_IDENTITY", key.text)
    return "TEST_AGE_IDENTITY"


def read_all(reader: EncryptingReader | DecryptingReader, size: int = 1024 * 1024) -> bytes:
    out = bytearray()
    while data := reader.read(size):
        out += data
    return bytes(out)


def encrypt(plaintext: bytes, recipients: list[str]) -> bytes:
    with EncryptingReader(io.BytesIO(plaintext), recipients) as reader:
        return read_all(reader)


def age_decrypt(ciphertext_path: Path, key: AgeKey) -> bytes:
    return subprocess.run(
        ["age", "-d", "-i", str(key.path), str(ciphertext_path)], check=True, capture_output=True
    ).stdout


class RandomSource:
    """`size` bytes of one repeated random block, read(n) as a pipe would give them, without holding them all."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(1024 * 1024)

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = min(size if size > 0 else len(self.block), self.left, len(self.block))
        self.left -= n
        return self.block[:n]


def test_the_console_encrypts_and_age_opens_it_byte_identical(key: AgeKey, tmp_path: Path) -> None:
    plaintext = os.urandom(6 * 1024 * 1024 + 12_345)  # several age chunks and a partial last one
    with EncryptingReader(io.BytesIO(plaintext), [key.recipient]) as reader:
        # A storage pulls in its own sizes: exactly that size until the end.
        parts = [reader.read(n) for n in (1, 100, 5 * 1024 * 1024)]
        assert [len(p) for p in parts] == [1, 100, 5 * 1024 * 1024]
        ciphertext = b"".join(parts) + read_all(reader, 300_000)
        assert reader.read(10) == b""
    encrypted = tmp_path / "random.age"
    encrypted.write_bytes(ciphertext)

    assert is_age_ciphertext(ciphertext[:64])
    assert age_decrypt(encrypted, key) == plaintext
    assert reader.plaintext_sha256.hexdigest() == hashlib.sha256(plaintext).hexdigest()
    assert reader.plaintext_size == len(plaintext)
    assert reader.sha256.hexdigest() == hashlib.sha256(ciphertext).hexdigest()  # what the storage holds
    assert reader.size == len(ciphertext)


def test_an_encrypted_pg_dump_opens_with_age_into_pg_restore(source_db, key: AgeKey, tmp_path: Path) -> None:
    progress: dict[str, int] = {}
    proc = start_process(
        ["pg_dump", "-Fc", "--dbname", source_db.url],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    with EncryptingReader(HashingReader(proc.stdout), [key.recipient], progress=progress) as reader:
        ciphertext = read_all(reader)
    assert proc.wait() == 0
    proc.stdout.close()
    encrypted = tmp_path / "prod-db.dump"
    encrypted.write_bytes(ciphertext)
    assert progress["bytes_done"] == reader.size == len(ciphertext)

    dump = age_decrypt(encrypted, key)
    assert dump.startswith(b"PGDMP")
    assert hashlib.sha256(dump).hexdigest() == reader.plaintext_sha256.hexdigest()
    # The operator's one-liners (docs/configuration.md), exactly as written there.
    listing = subprocess.run(
        f"age -d -i {key.path} < {encrypted} | pg_restore --list",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "TABLE DATA public documents" in listing
    target = f"drt_age_{os.getpid()}"
    create_database(target)
    try:
        subprocess.run(
            f"age -d -i {key.path} < {encrypted} | pg_restore --no-owner -d {database_url(target)}",
            shell=True,
            check=True,
            capture_output=True,
        )
        assert table_fingerprints(database_url(target)) == table_fingerprints(source_db.url)
    finally:
        drop_database(target)


def test_age_encrypts_and_the_console_decrypts(key: AgeKey, identity_env: str, tmp_path: Path) -> None:
    plaintext = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "plain").write_bytes(plaintext)
    encrypted = tmp_path / "plain.age"
    subprocess.run(["age", "-r", key.recipient, "-o", str(encrypted), str(tmp_path / "plain")], check=True)

    with encrypted.open("rb") as source, DecryptingReader(source, identities_from_env(identity_env)) as reader:
        assert read_all(reader, 500_000) == plaintext
        assert reader.sha256.hexdigest() == hashlib.sha256(plaintext).hexdigest()


def test_a_backup_to_the_old_and_the_new_key_opens_with_either(tmp_path: Path, monkeypatch) -> None:
    old, new = make_key(tmp_path, "old.txt"), make_key(tmp_path, "new.txt")
    plaintext = os.urandom(200_000)
    encrypted = tmp_path / "rotating.age"
    encrypted.write_bytes(encrypt(plaintext, [old.recipient, new.recipient]))

    for key in (old, new):
        assert age_decrypt(encrypted, key) == plaintext
        monkeypatch.setenv("TEST_AGE_IDENTITY", key.text)
        with encrypted.open("rb") as source:
            assert read_all(DecryptingReader(source, identities_from_env("TEST_AGE_IDENTITY"))) == plaintext
    # A worker holding both identities (in the middle of a rotation) opens backups made to either one alone.
    monkeypatch.setenv("TEST_AGE_IDENTITY", old.text + "\n" + new.text)
    both = identities_from_env("TEST_AGE_IDENTITY")
    assert [identity_recipient(i) for i in both] == [old.recipient, new.recipient]
    only_new = encrypt(plaintext, [new.recipient])
    assert read_all(DecryptingReader(io.BytesIO(only_new), both)) == plaintext


def test_a_wrong_identity_is_key_unavailable_naming_the_recipients(tmp_path: Path, monkeypatch) -> None:
    right, wrong = make_key(tmp_path, "right.txt"), make_key(tmp_path, "wrong.txt")
    ciphertext = encrypt(os.urandom(100_000), [right.recipient])
    monkeypatch.setenv("PROD_AGE_IDENTITY", wrong.text)
    identities = identities_from_env("PROD_AGE_IDENTITY")

    reader = DecryptingReader(
        io.BytesIO(ciphertext), identities, recipients=[right.recipient], identity_env="PROD_AGE_IDENTITY"
    )
    with pytest.raises(KeyUnavailable) as caught:
        reader.read(1024)
    message = str(caught.value)
    assert message == (
        f"backup is encrypted to {short_recipient(right.recipient)}; none of the identities in PROD_AGE_IDENTITY "
        f"opens it (they are {short_recipient(wrong.recipient)})"
    )
    assert "AGE-SECRET-KEY" not in message
    with pytest.raises(KeyUnavailable):  # and it stays failed
        reader.read(1024)
    reader.close()

    with pytest.raises(KeyUnavailable, match="none of the identities given opens the backup"):
        read_all(DecryptingReader(io.BytesIO(ciphertext), identities))  # recipients unknown


def test_a_damaged_header_is_corrupt_when_the_identity_is_one_it_was_made_for(key: AgeKey, identity_env: str) -> None:
    ciphertext = bytearray(encrypt(os.urandom(100_000), [key.recipient]))
    ciphertext[ciphertext.index(b"X25519 ") + 10] ^= 0x01  # inside the recipient's stanza
    identities = identities_from_env(identity_env)
    reader = DecryptingReader(io.BytesIO(bytes(ciphertext)), identities, recipients=[key.recipient])
    with pytest.raises(CiphertextCorrupt, match="header is damaged"):
        read_all(reader)


def _secret_lines(key: AgeKey) -> list[str]:
    return [line for line in key.text.splitlines() if line.startswith("AGE-SECRET-KEY-1")]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(lambda c: c[:-100], "truncated or was altered", id="truncated-mid-chunk"),
        pytest.param(lambda c: c[: _payload_start(c) + 2 * (AGE_CHUNK + 16)], "truncated", id="cut-at-chunk"),
        pytest.param(lambda c: c[:40], "header is damaged or cut short", id="truncated-header"),
        pytest.param(lambda c: _flip(c, len(c) // 2), "truncated or was altered", id="bit-flipped-body"),
        pytest.param(lambda c: _flip(c, len(c) - 3), "truncated or was altered", id="bit-flipped-last-chunk"),
        pytest.param(lambda c: b"PGDMP" + c[5:], "not an age file", id="not-age"),
        pytest.param(lambda c: b"", "empty", id="empty"),
    ],
)
def test_damaged_ciphertext_is_corrupt(key: AgeKey, identity_env: str, damage, expected: str) -> None:
    plaintext = os.urandom(5 * AGE_CHUNK + 1000)
    ciphertext = damage(encrypt(plaintext, [key.recipient]))
    reader = DecryptingReader(io.BytesIO(ciphertext), identities_from_env(identity_env), recipients=[key.recipient])
    with pytest.raises(CiphertextCorrupt, match=expected):
        read_all(reader)
    reader.close()


def _payload_start(ciphertext: bytes) -> int:
    """Where the chunks begin: after the header's MAC line and the 16-byte nonce."""
    return ciphertext.index(b"\n", ciphertext.index(b"\n---") + 1) + 1 + 16


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


def test_age_itself_refuses_what_the_console_calls_corrupt(key: AgeKey, tmp_path: Path) -> None:
    """The oracle: the damage the test above makes is damage for age too."""
    ciphertext = encrypt(os.urandom(5 * AGE_CHUNK), [key.recipient])
    for name, damaged in {"cut": ciphertext[:-100], "flipped": _flip(ciphertext, len(ciphertext) // 2)}.items():
        (tmp_path / name).write_bytes(damaged)
        run = subprocess.run(["age", "-d", "-i", str(key.path), str(tmp_path / name)], capture_output=True)
        assert run.returncode != 0, name


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("age-encrypt", "age-decrypt")]


def test_a_consumer_that_stops_early_leaves_no_thread_and_no_fd(key: AgeKey, identity_env: str) -> None:
    fds_before = open_fds()
    # The helper is blocked on a full queue, and a real pipe of a real tool feeds it.
    proc = start_process(
        ["head", "-c", str(256 * 1024 * 1024), "/dev/zero"], env={}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    reader = EncryptingReader(HashingReader(proc.stdout), [key.recipient])
    assert reader.read(3 * 1024 * 1024)
    time.sleep(0.2)  # the helper fills its queue and waits
    assert helper_threads()
    stop_process(proc)  # as a job does when it gives up: the tool first, then the reader
    reader.close()
    proc.stdout.close()
    assert helper_threads() == []
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)

    # Decryption stopped early, inside a `with` block that raises.
    ciphertext = encrypt(os.urandom(8 * 1024 * 1024), [key.recipient])
    identities = identities_from_env(identity_env)
    with (
        pytest.raises(RuntimeError, match="upload failed"),
        DecryptingReader(io.BytesIO(ciphertext), identities) as dec,
    ):
        dec.read(1024 * 1024)
        raise RuntimeError("upload failed")
    assert helper_threads() == []
    # A reader never read from starts no thread; closing it is harmless.
    EncryptingReader(RandomSource(10), [key.recipient]).close()
    assert helper_threads() == []
    assert open_fds() == fds_before


def test_a_failing_source_raises_its_own_error_and_leaves_no_thread(key: AgeKey) -> None:
    class BrokenPipeSource(RandomSource):
        def read(self, size: int = -1) -> bytes:
            if self.left < 4 * 1024 * 1024:
                raise BrokenPipeError("pg_dump went away")
            return super().read(size)

    reader = EncryptingReader(BrokenPipeSource(8 * 1024 * 1024), [key.recipient])
    with pytest.raises(BrokenPipeError, match="pg_dump went away"):
        read_all(reader)
    reader.close()
    assert helper_threads() == []


def test_memory_stays_flat_through_512_mib(key: AgeKey, identity_env: str) -> None:
    """512 MiB encrypted, and the ciphertext decrypted as it comes, read 1 MiB at a time as write_stream does: the
    process grows by a few blocks, not by the stream (RSS sampled while it runs). A first small stream warms up
    what any first use costs (the threads' malloc arenas, pyrage's own), so what is measured is what scales.
    (A caller reading 8 MiB parts holds its own 16-24 MiB more: the part it has and the one being joined.)"""
    identities = identities_from_env(identity_env)

    def stream(size: int) -> int:
        source = RandomSource(size)
        encrypting = EncryptingReader(source, [key.recipient])
        with encrypting, DecryptingReader(encrypting, identities) as decrypting:
            total = 0
            while data := decrypting.read(1024 * 1024):
                total += len(data)
        assert decrypting.sha256.hexdigest() == encrypting.plaintext_sha256.hexdigest()
        return total

    stream(32 * 1024 * 1024)
    process = psutil.Process()
    peak = start = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert stream(512 * 1024 * 1024) == 512 * 1024 * 1024
    finally:
        done.set()
        sampler.join()
    assert peak - start < 32 * 1024 * 1024, f"grew by {(peak - start) / 2**20:.0f} MiB"


# Configuration: recipients and identities.


def test_recipients_are_checked_stripped_and_canonical(tmp_path: Path) -> None:
    one, two = make_key(tmp_path, "1.txt"), make_key(tmp_path, "2.txt")
    assert parse_recipients([f"  {one.recipient}\n", "", "   ", two.recipient.upper()]) == [
        one.recipient,
        two.recipient,
    ]
    assert parse_recipients([]) == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param("age1notakey", r"recipient 2 \('age1notakey'\) looks like an age public key but is damaged"),
        pytest.param("ssh-ed25519 AAAAC3Nza", "recipient 2 .* is not an age X25519 public key"),
        pytest.param("hello", r"recipient 2 \('hello'\) is not an age X25519 public key"),
    ],
)
def test_a_bad_recipient_is_named(key: AgeKey, entry: str, expected: str) -> None:
    with pytest.raises(EncryptionConfigError, match=expected):
        parse_recipients([key.recipient, entry])


def test_a_recipient_listed_twice_is_refused(key: AgeKey) -> None:
    with pytest.raises(EncryptionConfigError, match=r"recipient 2 \(age1.*….*\) is listed twice"):
        parse_recipients([key.recipient, key.recipient.upper()])


def test_a_private_identity_given_as_recipient_is_refused_without_being_printed(key: AgeKey) -> None:
    (secret,) = _secret_lines(key)
    for pasted in (secret, secret.lower()):
        with pytest.raises(EncryptionConfigError) as caught:
            parse_recipients([pasted])
        message = str(caught.value)
        assert "is a private identity, not a public recipient" in message
        assert secret[16:].lower() not in message.lower()
    with pytest.raises(EncryptionConfigError):
        EncryptingReader(io.BytesIO(b"x"), [secret])
    with pytest.raises(EncryptionConfigError, match="at least one age recipient"):
        EncryptingReader(io.BytesIO(b"x"), [" "])


def test_identities_come_from_the_environment_and_are_masked_from_then_on(
    key: AgeKey, identity_env: str, monkeypatch
) -> None:
    (identity,) = identities_from_env(identity_env)
    assert identity_recipient(identity) == key.recipient  # the '# public key:' line age-keygen wrote
    assert mask_secrets(f"env: {key.text}") == f"env: {MASK}"
    # One line, several identities, as a .env file can hold them.
    other = make_key(key.path.parent, "other.txt")
    monkeypatch.setenv(identity_env, f"{_secret_lines(key)[0]},{_secret_lines(other)[0]}")
    assert [identity_recipient(i) for i in identities_from_env(identity_env)] == [key.recipient, other.recipient]


def test_an_unset_identity_variable_says_where_to_set_it(monkeypatch) -> None:
    monkeypatch.delenv("PROD_AGE_IDENTITY", raising=False)
    with pytest.raises(KeyUnavailable, match="set PROD_AGE_IDENTITY .* on the workers that restore and verify"):
        identities_from_env("PROD_AGE_IDENTITY")
    monkeypatch.setenv("PROD_AGE_IDENTITY", "  \n")
    with pytest.raises(KeyUnavailable, match="PROD_AGE_IDENTITY is not set"):
        identities_from_env("PROD_AGE_IDENTITY")
    with pytest.raises(KeyUnavailable, match="no age identity"):
        DecryptingReader(io.BytesIO(b""), [], identity_env="PROD_AGE_IDENTITY")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            lambda key: key.text.replace(_secret_lines(key)[0], _secret_lines(key)[0][:-3] + "QQQ"),
            "line 3 of PROD_AGE_IDENTITY looks like an age identity but is damaged",
            id="damaged-checksum",
        ),
        pytest.param(
            lambda key: f"# my key\n{key.recipient}\n",
            "line 2 of PROD_AGE_IDENTITY is a public recipient .* not a private identity",
            id="public-key",
        ),
        pytest.param(
            lambda key: "postgres://admin:hunter2-secret@db/prod",
            "line 1 of PROD_AGE_IDENTITY is not an age identity",
            id="something-else",
        ),
        pytest.param(lambda key: "# only a comment\n\n", "holds no age identity", id="comments-only"),
    ],
)
def test_a_malformed_identity_variable_is_named_and_never_printed(
    key: AgeKey, monkeypatch, value, expected: str
) -> None:
    text = value(key)
    monkeypatch.setenv("PROD_AGE_IDENTITY", text)
    with pytest.raises(EncryptionConfigError, match=expected) as caught:
        identities_from_env("PROD_AGE_IDENTITY")
    message = str(caught.value)
    for secret_part in ("SECRET-KEY-1" + _secret_lines(key)[0][16:26], "hunter2"):
        assert secret_part not in message
    assert isinstance(caught.value, EncryptionError)


def test_age_ciphertext_is_told_by_its_header(key: AgeKey) -> None:
    assert is_age_ciphertext(encrypt(b"", [key.recipient])[:32])
    assert not is_age_ciphertext(b"PGDMP\x01\x0e")
    assert not is_age_ciphertext(b"age-encryption")  # too short to tell
    assert not is_age_ciphertext(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
