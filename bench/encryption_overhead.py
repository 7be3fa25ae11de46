#!/usr/bin/env python
"""age encryption overhead: N MiB read through the console's EncryptingReader against the same file read through a
plain hashing reader (what an unencrypted backup costs), and against `age -r` on the same file; decryption the
same way (DecryptingReader against `age -d`), all in one run.

1. Writes N MiB of random bytes (incompressible, as a compressed pg_dump is) to a scratch file under var/, and an
   age key with age-keygen. The file stays in the page cache, so every side reads memory, not the disk.
2. Sides, in interleaved rounds (the order reversed every other round), timed:
   - hashing:  backups.artifacts.HashingReader over the file, read 1 MiB at a time as write_stream does;
   - console:  EncryptingReader over that HashingReader, read 1 MiB at a time (the ciphertext is hashed, then
               dropped: storage is not measured);
   - age -r:   `age -r RECIPIENT -o /dev/null FILE` (no hashing);
   - decrypt:  DecryptingReader over the ciphertext file (made once by the console), read 1 MiB at a time;
   - age -d:   `age -d -i KEY -o /dev/null CIPHERTEXT`.
   The process's RSS is sampled every 10 ms on the console sides (peak over the baseline: memory must stay flat).
3. Prints the median seconds, MiB/s, CPU seconds and the ratios console/hashing and console/age.

    .venv/bin/python bench/encryption_overhead.py --size-mb 1024 --repeat 5

This is a script, not a test: it asserts nothing about wall-clock time. The scratch files are removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.core import MIB, mib, parser, say, table, temporary_workdir, use_app_code
from harness.measure import Laps, PeakRss, interleaved_rounds, self_cpu, wait_for_quiet

READ_SIZE = 1024 * 1024


def write_random(path: Path, size: int) -> None:
    block = os.urandom(16 * MIB)  # one block repeated: age and sha256 cost the same on it as on fresh bytes
    with path.open("wb") as handle:
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)


def drain(reader: object) -> int:
    read = reader.read  # type: ignore[attr-defined]
    total = 0
    while data := read(READ_SIZE):
        total += len(data)
    return total


def main() -> int:
    args_parser = parser(__doc__ or "")
    args_parser.add_argument("--size-mb", type=int, default=1024, help="MiB of plaintext (default 1024)")
    args_parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    args_parser.add_argument("--max-quiet-wait", type=float, default=60, help="seconds to wait for an idle machine")
    args = args_parser.parse_args()
    size = args.size_mb * MIB

    use_app_code()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from backups.artifacts import HashingReader
    from backups.encryption import DecryptingReader, EncryptingReader, identities_from_env

    with temporary_workdir("bench-age-") as work:
        plain, cipher, key = work / "plain.bin", work / "plain.age", work / "key.txt"
        say(f"writing {mib(size)} of random bytes to {plain}")
        write_random(plain, size)
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True)
        recipient_text = recipient.stdout.strip()
        os.environ["BENCH_AGE_IDENTITY"] = key.read_text()
        identities = identities_from_env("BENCH_AGE_IDENTITY")
        with (
            plain.open("rb") as source,
            EncryptingReader(HashingReader(source), [recipient_text]) as reader,
            cipher.open("wb") as out,
        ):
            while data := reader.read(READ_SIZE):
                out.write(data)
        say(f"ciphertext: {mib(cipher.stat().st_size)} ({cipher.stat().st_size - size:,} bytes of age overhead)")

        def hashing() -> None:
            with plain.open("rb") as source:
                assert drain(HashingReader(source)) == size

        def console() -> None:
            with plain.open("rb") as source, EncryptingReader(HashingReader(source), [recipient_text]) as reader:
                drain(reader)
                assert reader.plaintext_size == size

        def age_encrypt() -> None:
            subprocess.run(["age", "-r", recipient_text, "-o", "/dev/null", str(plain)], check=True)

        def decrypt() -> None:
            with cipher.open("rb") as source, DecryptingReader(source, identities) as reader:
                assert drain(reader) == size

        def age_decrypt() -> None:
            subprocess.run(["age", "-d", "-i", str(key), "-o", "/dev/null", str(cipher)], check=True)

        sides: dict[str, Callable[[], None]] = {
            "hashing": hashing,
            "console": console,
            "age -r": age_encrypt,
            "decrypt": decrypt,
            "age -d": age_decrypt,
        }
        waited, load = wait_for_quiet(args.max_quiet_wait)
        say(f"waited {waited:.0f} s for a quiet machine (last window: {load:.2f} cores busy)")
        laps, cpu, peaks = Laps(), Laps(), {name: 0 for name in sides}
        for name in sides:  # one untimed round: page cache, first-use allocations
            sides[name]()
        for _, name in interleaved_rounds(args.repeat, list(sides)):
            cpu_before = self_cpu() + _children_cpu()
            with PeakRss() as rss, laps(name):
                sides[name]()
            cpu.times.setdefault(name, []).append(self_cpu() + _children_cpu() - cpu_before)
            peaks[name] = max(peaks[name], rss.peak - rss.baseline)
            say(f"    {name}: {laps.last(name):.2f} s")

    rows = []
    for name in sides:
        seconds = laps.median(name)
        external = name.startswith("age")
        rows.append(
            [
                name,
                f"{seconds:.2f}",
                f"{size / MIB / seconds:,.0f}",
                f"{cpu.median(name):.2f}",
                "-" if external else mib(peaks[name]),
            ]
        )
    say()
    say(f"{mib(size)}, {args.repeat} rounds, medians:")
    say(table(rows, ["side", "seconds", "MiB/s", "CPU s", "peak RSS growth"]))
    say()
    say(f"console / hashing reader: {laps.median('console') / laps.median('hashing'):.2f}x the time")
    say(f"console / age -r:         {laps.median('console') / laps.median('age -r'):.2f}x the time")
    say(f"decrypt / age -d:         {laps.median('decrypt') / laps.median('age -d'):.2f}x the time")
    return 0


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
