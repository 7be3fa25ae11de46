"""Where the console's in-job overhead goes (bench/backup_overhead.py --attribute-repeat N): pg_dump shaped like
parts of the console's job, run from this process with the app's own helpers, no Django and no Celery: the pipe,
sha256, row counting in an exported snapshot, one at a time and together."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from harness.core import columns, say, use_app_code
from harness.measure import alternate, busy_cpu, median, wait_for_quiet
from harness.pg import Pg, discard, pg_tool, wait_tool

ATTRIBUTION_VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("A", "pg_dump -f FILE (the raw baseline)", {}),
    ("B", "A + row counting in an exported snapshot, as _RowCounter", {"count": True}),
    (
        "C",
        "pg_dump | HashingReader | write, through the app's start_process: the app's streaming as it is",
        {"pipe": True, "hash": True},
    ),
    ("D", "C with the kernel's default 64 KiB pipe", {"pipe": True, "hash": True, "pipe_size": 65536}),
    ("E", "C + row counting: the app's job minus Django/Celery", {"pipe": True, "hash": True, "count": True}),
    ("F", "pg_dump -f FILE, then sha256 of the file (a local-storage alternative)", {"hash_after": True}),
    (
        "G",
        "C, 1 MiB pipe, reader naps 10 ms after a short read (fewer wake-ups)",
        {"pipe": True, "hash": True, "pipe_size": 1 << 20, "nap": True},
    ),
]


def attributed_dump(
    pg: Pg,
    db: str,
    level: int,
    path: Path,
    code_dir: Path,
    pipe: bool = False,
    hash: bool = False,
    count: bool = False,
    hash_after: bool = False,
    pipe_size: int = 0,
    nap: bool = False,
) -> dict[str, Any]:
    """One pg_dump shaped like part of the console's job, run from this process with the app's own helpers
    (backups.postgres.start_process, backups.artifacts.HashingReader, backups.postgres.count_rows): what each
    part costs on this machine."""
    use_app_code(code_dir)
    from backups.artifacts import CHUNK_SIZE, HashingReader
    from backups.postgres import DUMPED_TABLES_SQL, count_rows, start_process

    args = [pg_tool("pg_dump"), "--format=custom", f"--compress={level}", "--no-password"]
    ru0, busy0, start = resource.getrusage(resource.RUSAGE_SELF), busy_cpu(), time.perf_counter()
    conn, counter, counts, effective_pipe = None, None, {}, 0
    if count:
        conn = pg.connect(db, autocommit=False)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        tables = [(a, b) for a, b in conn.execute(DUMPED_TABLES_SQL).fetchall()]
        args.append(f"--snapshot={snapshot}")
        counter = threading.Thread(target=lambda: counts.update(count_rows(conn, tables)), daemon=True)
    with tempfile.TemporaryFile() as stderr:
        if pipe:
            proc = start_process(args, env=pg.tool_env(db), stdout=subprocess.PIPE, stderr=stderr)
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            if pipe_size:
                with contextlib.suppress(OSError):
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, pipe_size)
            effective_pipe = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            if counter:
                counter.start()
            reader = HashingReader(proc.stdout) if hash else proc.stdout
            with open(path, "wb") as out:
                if nap:
                    while data := os.read(fd, CHUNK_SIZE):
                        reader.sha256.update(data)  # type: ignore[union-attr]
                        out.write(data)
                        if len(data) < CHUNK_SIZE // 4:
                            time.sleep(0.01)  # let the pipe fill: one wake-up per ~100+ KB instead of per 8 KB
                else:
                    while data := reader.read(CHUNK_SIZE):
                        out.write(data)
            proc.stdout.close()
        else:
            proc = subprocess.Popen([*args, f"--file={path}"], env=pg.tool_env(db), stderr=stderr)
            if counter:
                counter.start()
        usage = wait_tool(proc, stderr)
    if counter:
        counter.join()
    if conn is not None:
        conn.close()
    if hash_after:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while data := handle.read(CHUNK_SIZE):
                digest.update(data)
    seconds, busy = time.perf_counter() - start, busy_cpu() - busy0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    size = discard(path)
    return {
        "seconds": seconds,
        "size_bytes": size,
        "pg_dump_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "consumer_user_seconds": ru1.ru_utime - ru0.ru_utime,
        "consumer_sys_seconds": ru1.ru_stime - ru0.ru_stime,
        "consumer_wakeups": ru1.ru_nvcsw - ru0.ru_nvcsw,
        "busy_cpu_seconds": busy,
        "tables_counted": len(counts),
        "pipe_bytes": effective_pipe,
    }


def attribution(
    args: argparse.Namespace, pg: Pg, src_db: str, level: int, workdir: Path, code_dir: Path
) -> list[dict[str, Any]]:
    say(f"  attribution at -Z{level}, {args.attribute_repeat} run(s) of each variant, round-robin:")
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in ATTRIBUTION_VARIANTS}
    for i in range(args.attribute_repeat):
        for key, label, options in alternate(i, ATTRIBUTION_VARIANTS):
            wait_for_quiet(args.quiet_wait)
            run = attributed_dump(pg, src_db, level, workdir / "attr.dump", code_dir, **options)
            runs[key].append(run)
            say(
                f"    {key} {run['seconds']:7.2f} s  consumer CPU {run['consumer_user_seconds']:.1f} s user + "
                f"{run['consumer_sys_seconds']:.1f} s sys, {run['consumer_wakeups']:,} wake-ups; pg_dump CPU "
                f"{run['pg_dump_cpu_seconds']:.1f} s; all cores busy {run['busy_cpu_seconds']:.0f} s"
                f"{'; pipe ' + str(run['pipe_bytes'] // 1024) + ' KiB' if run['pipe_bytes'] else ''}  ({label})"
            )
    rows = []
    for key, label, _ in ATTRIBUTION_VARIANTS:
        med = lambda field: median(r[field] for r in runs[key])
        rows.append(
            {
                "variant": key,
                "label": label,
                "seconds": med("seconds"),
                "consumer_cpu_seconds": med("consumer_user_seconds") + med("consumer_sys_seconds"),
                "consumer_wakeups": med("consumer_wakeups"),
                "pg_dump_cpu_seconds": med("pg_dump_cpu_seconds"),
                "busy_cpu_seconds": med("busy_cpu_seconds"),
                "runs": runs[key],
            }
        )
    return rows


def print_attribution(result: dict[str, Any]) -> None:
    """The summary's table of one size's attribution."""
    say(
        f"\nWhere the in-job overhead goes, at {result['size_gb']:g} GiB, -Z{result['level']} (medians; consumer = the "
        "process reading pg_dump's output):"
    )
    base = result["attribution"][0]["seconds"]
    spec = [
        ("", lambda a: a["variant"]),
        ("time", lambda a: f"{a['seconds']:.2f} s"),
        ("vs A", lambda a: f"{a['seconds'] / base:.3f}"),
        ("consumer CPU", lambda a: f"{a['consumer_cpu_seconds']:.1f} s"),
        ("wake-ups", lambda a: f"{a['consumer_wakeups']:,.0f}"),
        ("pg_dump CPU", lambda a: f"{a['pg_dump_cpu_seconds']:.1f} s"),
        ("busy CPU", lambda a: f"{a['busy_cpu_seconds']:.0f} s"),
        ("what", lambda a: a["label"]),
    ]
    say(columns(result["attribution"], spec))
