#!/usr/bin/env python
"""Retention planning time: the pure policy function on long histories, against the least it could cost (sorting
the same backups by time). No database; the page and the periodic run add one query for the backups.

    .venv/bin/python bench/retention.py --sizes 1000 10000 100000 --repeat 7

This is a script, not a test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from harness.core import parser
from harness.inprocess import setup_django
from harness.measure import median, timed_interleaved


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    cli.add_argument("--repeat", type=int, default=7)
    args = cli.parse_args()

    setup_django()
    from backups.retention import ArtifactFacts, RetentionPolicy, retention_plan

    policy = RetentionPolicy(keep_last=7, keep_daily=30, keep_weekly=12, keep_monthly=24)
    zone = ZoneInfo("Europe/Madrid")
    print(f"policy {policy}, days in {zone}")
    print(f"{'backups':>9} {'sort median':>12} {'plan median':>12} {'ratio':>7} {'per backup':>11}")
    for size in args.sizes:
        start = datetime(2020, 1, 1, tzinfo=UTC)
        step = timedelta(hours=1)  # hourly backups: 100,000 is about 11 years
        facts = [ArtifactFacts(id=n, taken_at=start + n * step) for n in range(size)]
        times = timed_interleaved(
            {
                "sort": lambda: sorted(facts, key=lambda a: (a.taken_at, a.id), reverse=True),
                "plan": lambda: retention_plan(facts, policy, zone),
            },
            args.repeat,
        )
        sort_median, plan_median = median(times["sort"]), median(times["plan"])
        print(
            f"{size:>9,} {sort_median * 1000:>10.1f} ms {plan_median * 1000:>10.1f} ms "
            f"{plan_median / sort_median:>7.1f} {plan_median / size * 1e6:>8.2f} µs"
        )


if __name__ == "__main__":
    main()
