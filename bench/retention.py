#!/usr/bin/env python
"""Retention planning time: the pure policy function on long histories, against the least it could cost (sorting
the same backups by time). No database; the page and the periodic run add one query for the backups.

    .venv/bin/python bench/retention.py --sizes 1000 10000 100000 --repeat 7

This is a script, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dr_console.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import django

    django.setup()
    from backups.retention import ArtifactFacts, RetentionPolicy, retention_plan

    policy = RetentionPolicy(keep_last=7, keep_daily=30, keep_weekly=12, keep_monthly=24)
    zone = ZoneInfo("Europe/Madrid")
    print(f"policy {policy}, days in {zone}")
    print(f"{'backups':>9} {'sort median':>12} {'plan median':>12} {'ratio':>7} {'per backup':>11}")
    for size in args.sizes:
        start = datetime(2020, 1, 1, tzinfo=UTC)
        step = timedelta(hours=1)  # hourly backups: 100,000 is about 11 years
        facts = [ArtifactFacts(id=n, taken_at=start + n * step) for n in range(size)]
        sort_times, plan_times = [], []
        for _ in range(args.repeat):
            began = time.perf_counter()
            sorted(facts, key=lambda a: (a.taken_at, a.id), reverse=True)
            sort_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            retention_plan(facts, policy, zone)
            plan_times.append(time.perf_counter() - began)
        sort_median, plan_median = statistics.median(sort_times), statistics.median(plan_times)
        print(
            f"{size:>9,} {sort_median * 1000:>10.1f} ms {plan_median * 1000:>10.1f} ms "
            f"{plan_median / sort_median:>7.1f} {plan_median / size * 1e6:>8.2f} µs"
        )


if __name__ == "__main__":
    main()
