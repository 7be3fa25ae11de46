#!/usr/bin/env python
"""S3-compatible storage: the console's object store module against boto3's own transfers, on moto's server.

1. Starts moto's server (`python -m moto.server`, a subprocess on 127.0.0.1), makes a bucket, writes an N MiB
   file of random bytes.
2. Upload, raw: boto3's `upload_file` (s3transfer: 8 MiB parts, up to 10 threads). Console:
   `backups.object_store.multipart_write` of the same file (one part at a time, the part size
   `part_size_for(N MiB)`), with the process's RSS sampled every 10 ms (peak over the baseline: about one part).
3. Copy, raw: boto3's managed `copy` (server-side UploadPartCopy: no byte comes to the client). Console:
   `object_chunks` of the object piped into `multipart_write` at another key, what a copy between two locations on
   different endpoints has to do.
4. Rounds interleave raw and console (the order alternating), medians and the ratios console/raw are printed.

    .venv/bin/python bench/s3_upload.py --mib 512 --repeat 3

moto keeps objects in its own memory and hashes every part: its figures are a floor for the client's overhead,
not a forecast of a real endpoint's throughput. This is a script, not a test.
"""

from __future__ import annotations

import io
import os
import sys
import uuid
from pathlib import Path

from harness.core import MIB, ROOT, mib, parser, say, table, temporary_workdir, use_app_code
from harness.inprocess import setup_django
from harness.measure import Laps, PeakRss, interleaved_rounds


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--mib", type=int, default=512, help="size of the file (MiB)")
    cli.add_argument("--repeat", type=int, default=3)
    args = cli.parse_args()

    setup_django()
    use_app_code(ROOT)
    from backups.object_store import multipart_write, object_chunks, part_size_for
    from tests.support.s3 import MotoServer, s3_client, s3_storage

    size = args.mib * MIB
    server = MotoServer().start()
    try:
        client = s3_client(server.url)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        storage = s3_storage(server.url, bucket)
        with temporary_workdir("s3-bench-") as work:
            path = work / "payload.bin"
            with path.open("wb") as out:
                for _ in range(args.mib):
                    out.write(os.urandom(MIB))
            say(f"moto {server.url}, {mib(size)} file, console part size {mib(part_size_for(size))}")
            client.put_object(Bucket=bucket, Key="warm", Body=b"x" * MIB)  # both clients made, models loaded
            multipart_write(storage, "warm", io.BytesIO(b"x" * MIB))
            client.upload_file(str(path), bucket, "source")  # what the copies read

            laps = Laps()
            peaks: dict[str, list[int]] = {}
            for operation in ("upload", "copy"):
                say(f"{operation}:")
                for _round, side in interleaved_rounds(args.repeat):
                    key = f"{operation}-{side}"
                    with PeakRss() as rss, laps(f"{operation} {side}"):
                        run(operation, side, client, storage, bucket, key, path, size, multipart_write, object_chunks)
                    peaks.setdefault(f"{operation} {side}", []).append(rss.peak - rss.baseline)
                    head = client.head_object(Bucket=bucket, Key=key)
                    if head["ContentLength"] != size:
                        sys.exit(f"{key}: {head['ContentLength']} bytes, expected {size}")
                    client.delete_object(Bucket=bucket, Key=key)
                    say(f"    {side}: {laps.last(f'{operation} {side}'):.2f} s")
    finally:
        server.kill()

    rows = []
    for operation in ("upload", "copy"):
        raw, console = laps.median(f"{operation} raw"), laps.median(f"{operation} console")
        rows.append(
            [
                operation,
                f"{raw:.2f} s",
                f"{console:.2f} s",
                f"{console / raw:.2f}",
                f"{size / MIB / console:,.0f} MiB/s",
                mib(max(peaks[f"{operation} raw"])),
                mib(max(peaks[f"{operation} console"])),
            ]
        )
    say()
    say(
        table(
            rows,
            ["", "raw median", "console median", "ratio", "console rate", "raw peak RSS +", "console peak RSS +"],
        )
    )


def run(operation, side, client, storage, bucket, key, path: Path, size, multipart_write, object_chunks) -> None:
    if operation == "upload" and side == "raw":
        client.upload_file(str(path), bucket, key)
    elif operation == "upload":
        with path.open("rb") as handle:
            multipart_write(storage, key, handle, expected_bytes=size)
    elif side == "raw":
        client.copy({"Bucket": bucket, "Key": "source"}, bucket, key)
    else:
        multipart_write(storage, key, ChunkReader(object_chunks(storage, "source")), expected_bytes=size)


class ChunkReader:
    """read(n) over an iterator of chunks, as a copy between two locations feeds multipart_write."""

    def __init__(self, chunks) -> None:
        self._chunks = chunks
        self._pending = b""

    def read(self, size: int) -> bytes:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


if __name__ == "__main__":
    main()
