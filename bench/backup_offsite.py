#!/usr/bin/env python
"""Backups that leave the machine: the console's backup into an S3-compatible location, its encryption, and its
copy job, each against the raw tools, side by side in one run.

1. Makes (or reuses) a source database of `--size-gb` (bench/backup_source.py), starts moto's S3 server on
   127.0.0.1 (a subprocess) and sets the console up in this process on its own database, with four locations:
   `local` (a folder), `sealed` (a folder, age-encrypted), `s3` (a bucket) and `s3copy` (a bucket, a copy location).
2. Rounds interleave (the order alternating), medians printed:
   - raw `pg_dump -Fc -Z1 -f FILE`, and a raw upload of that file (boto3 `upload_file`, s3transfer's 10 threads);
     the console's backup into `s3` (pg_dump streamed straight into a multipart upload). Goal: console / the larger
     of the two raw ones ≤ 1.15 (the stages overlap instead of adding up);
   - the console's backup into `local` and into `sealed`. Goal: sealed / local ≤ 1.05 (encryption overhead);
   - the copy job of a `local` backup to `s3copy` (read, hash, upload, read back, hash) against a raw
     download-and-upload of the same file (boto3 `upload_file` of the local file, as `aws s3 cp` does) and boto3's
     server-side `copy` of an object already in the bucket.

    .venv/bin/python bench/backup_offsite.py --size-gb 1 --repeat 3

moto keeps objects in its own memory: its figures are a floor for the client's overhead, not a real endpoint's
throughput. This is a script, not a test: it asserts nothing about wall-clock time.
"""

from __future__ import annotations

import os
import subprocess
import uuid

from backup_source import ensure_source_db, source_db_name
from harness.core import MIB, VAR_DIR, mib, parser, say, table, temporary_workdir
from harness.inprocess import django_database
from harness.measure import Laps, PeakRss, interleaved_rounds
from harness.pg import Pg, pg_tool

GOAL_S3 = 1.15
GOAL_ENCRYPTION = 1.05


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--size-gb", type=float, default=1.0)
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument("--dims", type=int, default=384)
    cli.add_argument("--src-db", default="bench_src")
    cli.add_argument("--console-db", default="drc_bench_offsite")
    cli.add_argument("--broker", default="redis://127.0.0.1:6379/12")
    args = cli.parse_args()

    pg = Pg()
    source = source_db_name(args.src_db, args.size_gb)
    info = ensure_source_db(pg, source, args.size_gb, args.dims, regenerate=False)
    os.environ["BENCH_SOURCE_URL"] = pg.url(source)
    with (
        temporary_workdir("offsite-bench-", VAR_DIR) as work,
        django_database(
            args.console_db,
            pg=pg,
            quiet=True,
            CELERY_BROKER_URL=args.broker,
            ARTIFACT_DIR=str(work / "default"),
            DR_SCRATCH_DIR=str(work / "scratch"),
        ),
    ):
        from tests.support.s3 import FAKE_KEYS, REGION, MotoServer, s3_client

        server = MotoServer().start()
        try:
            run(args, pg, source, info, work, server, s3_client(server.url), FAKE_KEYS, REGION)
        finally:
            server.kill()


def run(args, pg, source, info, work, server, client, keys, region) -> None:  # noqa: ANN001, PLR0913
    from backups.copies import artifact_copies_run_inline
    from backups.models import BackupArtifact
    from backups.services import backup_artifact_execute, backup_artifact_request
    from inventory.models import Datastore, Environment, StorageLocation

    key_file = work / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key_file)], check=True, capture_output=True)
    recipient = next(
        line.split(": ", 1)[1] for line in key_file.read_text().splitlines() if line.startswith("# public key")
    )
    buckets = {name: f"bench-{name}-{uuid.uuid4().hex[:6]}" for name in ("s3", "s3copy", "raw")}
    for bucket in buckets.values():
        client.create_bucket(Bucket=bucket)
    os.environ.update(BENCH_S3_ACCESS_KEY=keys["access_key"], BENCH_S3_SECRET_KEY=keys["secret_key"])

    def s3(name: str, role: str) -> None:
        StorageLocation.objects.create(
            name=name,
            role=role,
            backend="storages.backends.s3.S3Storage",
            options={
                "bucket_name": buckets[name],
                "endpoint_url": server.url,
                "region_name": region,
                "addressing_style": "path",
            },
            secret_options={"access_key": "BENCH_S3_ACCESS_KEY", "secret_key": "BENCH_S3_SECRET_KEY"},
        )

    folder = "django.core.files.storage.FileSystemStorage"
    StorageLocation.objects.create(name="local", backend=folder, options={"location": str(work / "local")})
    StorageLocation.objects.create(
        name="sealed", backend=folder, options={"location": str(work / "sealed")}, recipients=[recipient]
    )
    s3("s3", "primary")
    s3("s3copy", "copy")
    environment = Environment.objects.create(name="bench")
    datastore = Datastore.objects.create(
        environment=environment, name="bench-db", kind="postgres", url_env="BENCH_SOURCE_URL", compression_level=1
    )

    def backup(locations: list[str]) -> BackupArtifact:
        Datastore.objects.filter(pk=datastore.pk).update(storage_locations=locations)
        datastore.refresh_from_db()
        artifact = backup_artifact_request(datastore=datastore, trigger="bench", enqueue=False)
        backup_artifact_execute(artifact_id=artifact.pk, verify_after=False)
        artifact.refresh_from_db()
        if artifact.status != BackupArtifact.Status.SUCCEEDED:
            raise SystemExit(f"backup #{artifact.pk} {artifact.status}: {artifact.error}")
        return artifact

    dump = work / "raw.dump"
    laps = Laps()
    sizes: dict[str, int] = {}
    peaks: dict[str, int] = {}

    def lap(name: str, function) -> None:  # noqa: ANN001
        with PeakRss() as rss, laps(name):
            result = function()
        peaks[name] = max(peaks.get(name, 0), rss.peak - rss.baseline)
        if isinstance(result, int):
            sizes[name] = result
        say(f"    {name}: {laps.last(name):.2f} s")

    def raw_dump() -> int:
        subprocess.run(
            [pg_tool("pg_dump"), "-Fc", "-Z1", "-f", str(dump), "--no-password", pg.url(source)], check=True
        )
        return dump.stat().st_size

    def raw_upload() -> int:
        client.upload_file(str(dump), buckets["raw"], f"up-{uuid.uuid4().hex}")
        return dump.stat().st_size

    say(f"source {source}: {info['size_bytes'] / MIB:,.0f} MiB on disk; moto at {server.url}")
    backup(["local"])  # warm: imports, connections, the first multipart upload
    say("backup into S3 (raw: pg_dump to a file, then its upload):")
    for _round, side in interleaved_rounds(args.repeat, ("pg_dump -f", "upload_file", "console to s3")):
        if side == "pg_dump -f":
            lap(side, raw_dump)
        elif side == "upload_file":
            if not dump.exists():
                raw_dump()
            lap(side, raw_upload)
        else:
            lap(side, lambda: backup(["s3"]).size_bytes)
    say("encryption (the same backup into a plain and an encrypted folder):")
    for _round, side in interleaved_rounds(args.repeat, ("console to local", "console to sealed")):
        lap(side, lambda side=side: backup([side.rsplit(" ", 1)[1]]).size_bytes)
    say("copy (a local backup to the s3copy location):")
    source_artifact = backup(["local"])
    local_file = work / "local" / source_artifact.storage_key
    client.upload_file(str(local_file), buckets["raw"], "copy-source")

    def console_copy() -> int:
        from backups.models import ArtifactCopy

        ArtifactCopy.objects.filter(artifact=source_artifact).update(status=ArtifactCopy.Status.EXPIRED)
        Datastore.objects.filter(pk=datastore.pk).update(storage_locations=["local", "s3copy"])
        (copy,) = artifact_copies_run_inline(artifact_id=source_artifact.pk)[:1]
        if copy.status != ArtifactCopy.Status.VERIFIED:
            raise SystemExit(f"copy #{copy.pk} {copy.status}: {copy.error}")
        client.delete_object(Bucket=buckets["s3copy"], Key=copy.storage_key)
        return int(copy.size_bytes or 0)

    for _round, side in interleaved_rounds(args.repeat, ("upload_file (cp)", "server-side copy", "console copy")):
        if side == "upload_file (cp)":
            lap(side, lambda: client.upload_file(str(local_file), buckets["raw"], f"cp-{uuid.uuid4().hex}"))
        elif side == "server-side copy":
            lap(
                side,
                lambda: client.copy({"Bucket": buckets["raw"], "Key": "copy-source"}, buckets["raw"], "copied"),
            )
        else:
            lap(side, console_copy)

    med = laps.median
    rows = [[name, f"{med(name):.2f} s", mib(sizes.get(name, 0)), mib(peaks[name])] for name in laps.times]
    say()
    say(table(rows, ["", "median", "size", "peak RSS +"]))
    s3_ratio = med("console to s3") / max(med("pg_dump -f"), med("upload_file"))
    enc_ratio = med("console to sealed") / med("console to local")
    say()
    say(f"backup into S3 / max(raw dump, raw upload) = {s3_ratio:.3f} (goal <= {GOAL_S3})")
    say(f"sum of the raw stages / max: {(med('pg_dump -f') + med('upload_file')) / max(med('pg_dump -f'), med('upload_file')):.3f}")
    say(f"encrypted / plain backup = {enc_ratio:.3f} (goal <= {GOAL_ENCRYPTION})")
    say(
        f"copy: console {med('console copy'):.2f} s, raw upload {med('upload_file (cp)'):.2f} s "
        f"(ratio {med('console copy') / med('upload_file (cp)'):.2f}), server-side copy {med('server-side copy'):.2f} s"
    )


if __name__ == "__main__":
    main()
