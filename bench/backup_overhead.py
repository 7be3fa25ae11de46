#!/usr/bin/env python
"""Backup overhead benchmark: raw `pg_dump -Fc` against the console's `manage.py backup DATASTORE --wait`.

One run does everything:

1. makes (or reuses) a source database per size, `<src-db>_<size>g` (e.g. bench_src_1g), shaped like a
   document-processing product: `documents` plus `chunks` (random text, float8[] embeddings), generated
   server-side with generate_series until pg_database_size() reaches the size asked for (bench/backup_source.py);
2. creates the console's own database (drc_bench), migrates it, registers the datastore with `loadconfig`,
   starts a real Celery worker (prefork, concurrency 1) with its own environment;
3. times raw pg_dump (same compression level as the console) and the console's backup, interleaved,
   `--repeat` times each, and prints the medians and the ratio console/raw (bench/backup_runs.py);
4. samples the worker process tree's memory every 0.2 s during console runs (pg_dump/pg_restore children are
   reported apart: they are not the worker's memory);
5. times raw pg_dump at several compression levels (archive size, time, CPU; bench/backup_levels.py), and with
   --attribute-repeat the parts of the console's job apart (bench/backup_attribution.py);
6. prints a summary, writes the figures as JSON under bench/out/, removes the dumps and artifacts it made.

Run it from the project root with the project's virtualenv:

    .venv/bin/python bench/backup_overhead.py --sizes 1,2

This is a script, not a test: it asserts nothing about wall-clock time and pytest does not collect it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from backup_attribution import attribution, print_attribution
from backup_levels import compression_table, print_levels
from backup_runs import SizeBench, describe_console, describe_raw, load_bench_datastore
from backup_source import ensure_source_db, size_label, source_db_name
from harness.console import Console, Worker, code_state, purge_broker, snapshot_code
from harness.core import GIB, MIB, OUT_DIR, ROOT, VAR_DIR, columns, gb, mb, parser, say, temporary_workdir
from harness.measure import alternate, median, memory_of, wait_for_quiet
from harness.pg import Pg, pg_tool

ARTIFACTS_ROOT = VAR_DIR / "bench-artifacts"
RSS_TARGET_MB = 150
RATIO_TARGET = 1.10


def timed_rounds(bench: SizeBench, level: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`--repeat` rounds of raw and console, alternating which goes first; while some were disturbed by other
    load, up to `--extra-rounds` more, so that the quiet-only figures rest on `--repeat` clean rounds when the
    machine allows it."""
    args = bench.args
    raws: list[dict[str, Any]] = []
    consoles: list[dict[str, Any]] = []
    i = quiet_rounds = 0
    while i < args.repeat or (quiet_rounds < args.repeat and i < args.repeat + args.extra_rounds):
        order = alternate(i, ("raw", "console"))
        say(f"  round {i + 1} ({' then '.join(order)}; {quiet_rounds} quiet so far):")
        i += 1
        for kind in order:
            waited, load = wait_for_quiet(args.quiet_wait)
            if kind == "raw":
                run = bench.raw(level)
                raws.append(run)
            else:
                run = bench.backup()
                if run["level"] != level:
                    sys.exit(f"the console used level {run['level']}, the raw dump {level}")
                consoles.append(run)
            run.update(
                round=i,
                waited_for_quiet_s=waited,
                load_before=load,
                disturbed=run["other_cpu_seconds"] > args.disturbed_share * run["seconds"],
            )
            flag = "  [DISTURBED by other load]" if run["disturbed"] else ""
            wait_note = f"  (waited {waited:.0f} s for a quiet machine)" if waited > 5 else ""
            say(f"    {describe_raw(run) if kind == 'raw' else describe_console(run)}{flag}{wait_note}")
        if not (raws[-1]["disturbed"] or consoles[-1]["disturbed"]):
            quiet_rounds += 1
    return raws, consoles


def summarize(raws: list[dict[str, Any]], consoles: list[dict[str, Any]]) -> dict[str, Any]:
    raw_med = median(r["seconds"] for r in raws)
    con_med = median(r["seconds"] for r in consoles)
    job_med = median(r["job_seconds"] for r in consoles)
    quiet_pairs = [(r, c) for r, c in zip(raws, consoles) if not (r["disturbed"] or c["disturbed"])]
    quiet_raw = [r["seconds"] for r, _ in quiet_pairs]
    quiet_con = [c["seconds"] for _, c in quiet_pairs]
    ours = lambda run: run["busy_cpu_seconds"] - run["other_cpu_seconds"]
    peak = lambda key: max(c[key] for c in consoles)
    peak_role = lambda role: max(c["peak_rss_by_role"].get(role, 0) for c in consoles)
    return {
        "raw_median_s": raw_med,
        "console_median_s": con_med,
        "job_median_s": job_med,
        "ratio": con_med / raw_med,
        "job_ratio": job_med / raw_med,
        "paired_ratio_median": median(c["seconds"] / r["seconds"] for r, c in zip(raws, consoles)),
        "rounds": len(raws),
        "quiet_rounds": len(quiet_pairs),
        "raw_cpu_median_s": median(ours(r) for r in raws),
        "console_cpu_median_s": median(ours(c) for c in consoles),
        "cpu_ratio": median(ours(c) for c in consoles) / median(ours(r) for r in raws),
        "quiet_ratio": median(quiet_con) / median(quiet_raw) if quiet_raw and quiet_con else None,
        "quiet_raw_median_s": median(quiet_raw) if quiet_raw else None,
        "quiet_console_median_s": median(quiet_con) if quiet_con else None,
        "cli_overhead_median_s": median(c["seconds"] - c["job_seconds"] for c in consoles),
        "pool_cpu_median_s": median(c["pool_cpu_seconds"] for c in consoles),
        "peak_worker_rss": peak("peak_worker_rss"),
        "peak_worker_pss": peak("peak_worker_pss"),
        "peak_worker_uss": peak("peak_worker_uss"),
        "peak_worker_vmhwm_sum": max((c["peak_worker_vmhwm_sum"] or 0) for c in consoles) or None,
        "peak_pool_child_rss": peak_role("pool child"),
        "peak_main_rss": peak_role("main"),
        "peak_pg_dump_rss": peak("peak_tool_rss"),
        "archive_bytes": median(c["size_bytes"] for c in consoles),
    }


def bench_size(
    args: argparse.Namespace, console: Console, workdir: Path, size_gb: float, level: int, with_levels: bool
) -> dict[str, Any]:
    label = size_label(size_gb)
    src_db = source_db_name(args.src_db, size_gb)
    datastore = f"bench-src-{label.replace('_', '-')}"
    say(f"\n=== size {size_gb:g} GiB: source database {src_db}, datastore {datastore} ===")
    source = ensure_source_db(console.pg, src_db, size_gb, args.dims, args.regenerate)
    console.source_db = src_db
    load_bench_datastore(console, datastore, args.datastore_compression)
    effective = args.datastore_compression if args.datastore_compression is not None else level
    say(
        f"  compression level used by the console for {datastore}: {effective} "
        f"({'datastore setting' if args.datastore_compression is not None else 'BACKUP_DEFAULT_COMPRESSION'})"
    )

    worker = Worker(console, workdir / f"worker-{label}.log")
    say("  starting the Celery worker (prefork, concurrency 1)...")
    worker.start()
    bench = SizeBench(args, console.pg, console, worker, datastore, workdir)
    result: dict[str, Any] = {
        "size_gb": size_gb,
        "source": source,
        "level": effective,
        "datastore": datastore,
        "incidents": bench.incidents,
    }
    try:
        idle = memory_of(worker.tree())
        result["idle_worker"] = idle
        say(
            f"  worker pid {worker.pid}, pool {[p.pid for p in worker.pool_processes()]}, idle RSS {mb(idle['rss'])}"
            f" (PSS {mb(idle['pss'])}, USS {mb(idle['uss'])})"
        )
        for i in range(args.warmup):
            say(f"  warm-up {i + 1}/{args.warmup} (not counted):")
            say(f"    {describe_raw(bench.raw(effective))}")
            warm = bench.backup()
            say(f"    {describe_console(warm)}")
            result.setdefault("warmup_console", []).append(warm)
        result["raw"], result["console"] = raws, consoles = timed_rounds(bench, effective)
        result["summary"] = s = summarize(raws, consoles)
        say(
            f"  => raw median {s['raw_median_s']:.2f} s, console median {s['console_median_s']:.2f} s "
            f"(job {s['job_median_s']:.2f} s), "
            f"ratio {s['ratio']:.3f} (job only {s['job_ratio']:.3f}, per-round {s['paired_ratio_median']:.3f}"
            + (f", {s['quiet_rounds']} quiet round(s) only {s['quiet_ratio']:.3f}" if s["quiet_ratio"] else "")
            + f"; CPU used {s['raw_cpu_median_s']:.0f} s vs {s['console_cpu_median_s']:.0f} s, x{s['cpu_ratio']:.3f}"
            + f"); peak worker RSS {mb(s['peak_worker_rss'])}"
        )

        if with_levels:
            result["levels"] = compression_table(bench)
    finally:
        worker.stop()
        if args.console_levels:  # put the datastore back on the default level
            bench.set_compression(args.datastore_compression)
    if size_gb == args.first_size and args.attribute_repeat:
        result["attribution"] = attribution(args, console.pg, src_db, effective, workdir, console.code_dir)
    return result


# --- the report -----------------------------------------------------------------------------------------------------

SUMMARY_TIME = [
    ("size", lambda r: f"{r['size_gb']:g} GiB"),
    ("on disk", lambda r: gb(r["source"]["size_bytes"])),
    ("level", lambda r: f"-Z{r['level']}"),
    ("archive", lambda r: mb(r["summary"]["archive_bytes"])),
    ("raw pg_dump", lambda r: f"{r['summary']['raw_median_s']:.2f} s"),
    ("console (CLI)", lambda r: f"{r['summary']['console_median_s']:.2f} s"),
    ("ratio", lambda r: f"{r['summary']['ratio']:.3f}"),
    ("per-round", lambda r: f"{r['summary']['paired_ratio_median']:.3f}"),
    (
        "quiet rounds",
        lambda r: (
            f"{r['summary']['quiet_ratio']:.3f} ({r['summary']['quiet_rounds']}/{r['summary']['rounds']})"
            if r["summary"]["quiet_ratio"]
            else f"- (0/{r['summary']['rounds']})"
        ),
    ),
    ("CPU ratio", lambda r: f"{r['summary']['cpu_ratio']:.3f}"),
    ("console (job)", lambda r: f"{r['summary']['job_median_s']:.2f} s"),
    ("job ratio", lambda r: f"{r['summary']['job_ratio']:.3f}"),
    ("CLI extra", lambda r: f"{r['summary']['cli_overhead_median_s']:.2f} s"),
]
SUMMARY_MEMORY = [
    ("size", lambda r: f"{r['size_gb']:g} GiB"),
    ("idle RSS", lambda r: mb(r["idle_worker"]["rss"])),
    ("peak RSS (sum)", lambda r: mb(r["summary"]["peak_worker_rss"])),
    ("peak - idle", lambda r: mb(r["summary"]["peak_worker_rss"] - r["idle_worker"]["rss"])),
    ("peak PSS (sum)", lambda r: mb(r["summary"]["peak_worker_pss"])),
    ("peak USS (sum)", lambda r: mb(r["summary"]["peak_worker_uss"])),
    ("main", lambda r: mb(r["summary"]["peak_main_rss"])),
    ("pool child", lambda r: mb(r["summary"]["peak_pool_child_rss"])),
    ("VmHWM sum", lambda r: mb(r["summary"]["peak_worker_vmhwm_sum"])),
    ("pg_dump", lambda r: mb(r["summary"]["peak_pg_dump_rss"])),
]


def print_summary(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    say("\n" + "=" * 100)
    say("SUMMARY: backup overhead (raw pg_dump -Fc vs manage.py backup --wait through a Celery worker)")
    say(f"{meta['date']}  {meta['machine']}  {meta['pg_dump']}  repeat={meta['repeat']} (medians)")
    say(f"command: {meta['command']}; app code {meta['code']}")
    say(columns(results, SUMMARY_TIME))
    say("")
    say(columns(results, SUMMARY_MEMORY))
    for r in results:
        if "levels" in r:
            print_levels(r)
    for r in results:
        if "attribution" in r:
            print_attribution(r)
    say("")
    for r in results:
        s = r["summary"]
        judged, basis = (
            (s["quiet_ratio"], f"{s['quiet_rounds']} quiet round(s)")
            if s["quiet_ratio"]
            else (s["ratio"], "all rounds, none quiet: unreliable")
        )
        ok_ratio = "PASS" if judged <= RATIO_TARGET else "FAIL"
        ok_rss = "PASS" if s["peak_worker_rss"] < RSS_TARGET_MB * MIB else "FAIL"
        say(
            f"{r['size_gb']:g} GiB: ratio {judged:.3f} ({basis}; target <= {RATIO_TARGET}: {ok_ratio}); "
            f"peak worker RSS {mb(s['peak_worker_rss'])} (sum of RSS; target < {RSS_TARGET_MB} MB: {ok_rss}), "
            f"PSS {mb(s['peak_worker_pss'])}, idle RSS {mb(r['idle_worker']['rss'])}"
        )
    for r in results:
        for incident in r.get("incidents", []):
            say(f"incident at {r['size_gb']:g} GiB: {incident}")
    if len(results) > 1:
        first, last = results[0]["summary"], results[-1]["summary"]
        say(
            f"worker RSS from {results[0]['size_gb']:g} to {results[-1]['size_gb']:g} GiB: "
            f"{mb(first['peak_worker_rss'])} -> {mb(last['peak_worker_rss'])} "
            f"({(last['peak_worker_rss'] - first['peak_worker_rss']) / MIB:+.1f} MB)"
        )


# --- the command line -----------------------------------------------------------------------------------------------


def arguments(argv: list[str] | None) -> argparse.Namespace:
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--size-gb", type=float, default=1.0, help="Source database size on disk, GiB (default 1).")
    cli.add_argument("--sizes", default="", help="Several sizes in one run, e.g. 1,2 (overrides --size-gb).")
    cli.add_argument("--repeat", type=int, default=3, help="Timed runs of each side per size (default 3).")
    cli.add_argument("--warmup", type=int, default=1, help="Untimed runs of each side first (default 1).")
    cli.add_argument(
        "--levels", default="0,1,3,6,9", help="Compression levels for the table, at the first size ('' to skip)."
    )
    cli.add_argument("--level-repeat", type=int, default=1, help="Raw runs per compression level (default 1).")
    cli.add_argument(
        "--console-levels",
        action="store_true",
        help="Also time one console backup per compression level (datastore compression_level).",
    )
    cli.add_argument(
        "--attribute-repeat",
        type=int,
        default=0,
        help="At the first size, time the parts of the console's job apart (pipe, sha256, row "
        "counting) this many times each (default 0: skip).",
    )
    cli.add_argument(
        "--datastore-compression",
        type=int,
        default=None,
        help="Set the datastore's compression_level (default: none, the console default applies).",
    )
    cli.add_argument(
        "--in-place",
        action="store_true",
        help="Run the console from the working tree instead of a snapshot copied at start.",
    )
    cli.add_argument("--regenerate", action="store_true", help="Rebuild the source database(s).")
    cli.add_argument("--drop-src", action="store_true", help="Drop the generated source database(s) at the end.")
    cli.add_argument("--dims", type=int, default=384, help="Embedding dimensions (default 384).")
    cli.add_argument("--src-db", default="bench_src", help="Source database name prefix (default bench_src).")
    cli.add_argument("--console-db", default="drc_bench", help="The console's own database (default drc_bench).")
    cli.add_argument("--pg-host", default="127.0.0.1")
    cli.add_argument("--pg-port", type=int, default=5432)
    cli.add_argument("--pg-user", default="postgres")
    cli.add_argument("--broker", default="redis://127.0.0.1:6379/5", help="Broker URL (default Redis db 5).")
    cli.add_argument(
        "--extra-rounds",
        type=int,
        default=3,
        help="Rounds added (at most) while fewer than --repeat rounds were undisturbed (default 3).",
    )
    cli.add_argument(
        "--quiet-wait",
        type=float,
        default=300,
        help="Before each timed run, wait up to this many seconds for the machine to be idle.",
    )
    cli.add_argument(
        "--disturbed-share",
        type=float,
        default=0.15,
        help="Flag a run whose other processes used more than this share of one core.",
    )
    cli.add_argument("--interval", type=float, default=0.2, help="Memory sampling interval, s (default 0.2).")
    cli.add_argument("--json-out", default="", help="Where to write the figures (default bench/out/...).")
    args = cli.parse_args(argv)
    args.sizes = [float(x) for x in args.sizes.split(",")] if args.sizes else [args.size_gb]
    args.first_size = args.sizes[0]
    return args


def run_meta(pg: Pg, args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Where and what this run measures: the machine, the tools' versions, the command, the app's code."""
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / GIB:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        "pg_dump": subprocess.run([pg_tool("pg_dump"), "--version"], capture_output=True, text=True).stdout.strip(),
        "command": " ".join(
            [".venv/bin/python bench/backup_overhead.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "repeat": args.repeat,
        "sizes": args.sizes,
        "code": code_state(),
    }
    with pg.connect() as conn:
        meta["server"] = conn.execute("SELECT version()").fetchone()[0]  # type: ignore[index]
        meta["server_settings"] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'max_parallel_workers_per_gather',"
                " 'max_parallel_workers', 'work_mem')"
            ).fetchall()
        )
    return meta


@contextlib.contextmanager
def one_run_at_a_time() -> Iterator[Path]:
    """A work directory under var/bench-artifacts, held under a lock: two runs would share drc_bench and the broker
    database, and time each other's load."""
    ARTIFACTS_ROOT.mkdir(parents=True, exist_ok=True)
    lock = open(ARTIFACTS_ROOT / ".lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("another backup_overhead.py run is in progress (var/bench-artifacts/.lock); wait for it to end")
    path = None
    try:
        with temporary_workdir("run-", parent=ARTIFACTS_ROOT) as path:
            yield path
    finally:
        lock.close()
        with contextlib.suppress(OSError):
            if not any(p for p in ARTIFACTS_ROOT.iterdir() if p.name != ".lock"):
                (ARTIFACTS_ROOT / ".lock").unlink()
                ARTIFACTS_ROOT.rmdir()  # only if nothing else is left
        if path:
            say(f"removed the dumps and artifacts under {path}")


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    pg = Pg(args.pg_host, args.pg_port, args.pg_user)
    meta = run_meta(pg, args, argv)
    say(f"backup overhead benchmark: {meta['date']}, {meta['machine']}")
    say(f"{meta['pg_dump']}; server {meta['server'].split(' on ')[0]}; {meta['server_settings']}")
    say(f"app code: {meta['code']}")

    made_src: list[str] = []
    with one_run_at_a_time() as workdir:
        code_dir = ROOT if args.in_place else snapshot_code(workdir / "app")
        console = Console(pg, args.console_db, args.broker, workdir, code_dir=code_dir)
        try:
            say(
                f"\napp code {'in place' if args.in_place else 'copied to ' + str(code_dir)}; "
                f"console database {args.console_db} (re)created and migrated; artifacts in {workdir}"
            )
            console.prepare()
            level = int(console.shell("from django.conf import settings; print(settings.BACKUP_DEFAULT_COMPRESSION)"))
            say(f"  BACKUP_DEFAULT_COMPRESSION = {level}")
            dropped = purge_broker(args.broker)  # only the bench's own broker database
            if dropped:
                say(f"  dropped {dropped} stale message(s) from {args.broker}")
            results: list[dict[str, Any]] = []
            for index, size in enumerate(args.sizes):
                made_src.append(source_db_name(args.src_db, size))
                with_levels = index == 0 and bool(args.levels.strip())
                results.append(bench_size(args, console, workdir, size, level, with_levels))
            print_summary(results, meta)
            out = (
                Path(args.json_out)
                if args.json_out
                else OUT_DIR / f"backup_overhead-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
            say(f"\nfigures written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        finally:
            if args.drop_src:
                pg.drop(*made_src)
                say(f"dropped {', '.join(made_src)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
