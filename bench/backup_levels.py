"""Compression levels for bench/backup_overhead.py: raw pg_dump at each level (time, archive size, CPU), and with
--console-levels one console backup at each level (the datastore's compression_level)."""

from __future__ import annotations

from typing import Any

from backup_runs import SizeBench
from harness.core import columns, gb, mb, say
from harness.measure import median, wait_for_quiet


def compression_table(bench: SizeBench) -> list[dict[str, Any]]:
    args = bench.args
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    say(
        f"  compression levels {levels} (raw pg_dump, {args.level_repeat} run(s) each"
        f"{', plus one console backup each' if args.console_levels else ''}):"
    )
    rows = []
    for level in levels:
        runs = []
        for _ in range(args.level_repeat):
            wait_for_quiet(args.quiet_wait)
            runs.append(bench.raw(level))
        row: dict[str, Any] = {
            "level": level,
            "seconds": median(r["seconds"] for r in runs),
            "size_bytes": runs[0]["size_bytes"],
            "cpu_seconds": median(r["cpu_seconds"] for r in runs),
            "runs": runs,
        }
        line = (
            f"    -Z{level}: {row['seconds']:7.2f} s  {mb(row['size_bytes']):>12}  pg_dump CPU {row['cpu_seconds']:.1f} s"
            f", other load {median(r['other_cpu_seconds'] for r in runs):.1f} s"
        )
        if args.console_levels:
            bench.set_compression(level)
            wait_for_quiet(args.quiet_wait)
            run = bench.backup()
            row["console"] = run
            line += f"; console {run['seconds']:.2f} s (x{run['seconds'] / row['seconds']:.3f})"
        say(line)
        rows.append(row)
    return rows


def print_levels(result: dict[str, Any]) -> None:
    """The summary's table of one size's compression levels."""
    source_bytes = result["source"]["size_bytes"]
    say(f"\nCompression levels at {result['size_gb']:g} GiB ({gb(source_bytes)} on disk), raw pg_dump:")
    rows = result["levels"]
    base = rows[0]
    spec = [
        ("level", lambda row: f"{row['level']}"),
        ("time", lambda row: f"{row['seconds']:.2f} s"),
        ("archive", lambda row: mb(row["size_bytes"])),
        ("of DB size", lambda row: f"{row['size_bytes'] / source_bytes:.1%}"),
        ("pg_dump CPU", lambda row: f"{row['cpu_seconds']:.1f} s"),
        (f"vs -Z{base['level']}", lambda row: f"{row['size_bytes'] / base['size_bytes']:.1%}"),
    ]
    if any("console" in row for row in rows):
        spec.append(("console", lambda row: f"{row['console']['seconds']:.2f} s" if "console" in row else ""))
    say(columns(rows, spec))
