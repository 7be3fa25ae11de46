"""One timed run of each side of bench/backup_overhead.py: raw `pg_dump -Fc -Z<level> -f FILE`, and the console's
`manage.py backup DATASTORE --wait --json` through a real worker, with the worker's processes sampled."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from harness.console import Console, Worker
from harness.core import mb, say
from harness.measure import TreeSampler, busy_cpu, reset_peak_rss, self_cpu, vm_hwm
from harness.pg import Pg, discard, pg_tool, wait_tool


def raw_dump(pg: Pg, db: str, level: int, path: Path) -> dict[str, Any]:
    """`pg_dump -Fc -Z<level> -f FILE`, timed; returns seconds, archive size, pg_dump CPU and peak RSS."""
    args = [pg_tool("pg_dump"), "--format=custom", f"--compress={level}", f"--file={path}", "--no-password"]
    sampler = TreeSampler(None, 0.5, pg, db)
    with tempfile.TemporaryFile() as stderr:
        self0 = self_cpu()
        busy0, start = busy_cpu(), time.perf_counter()
        sampler.start()
        proc = subprocess.Popen(args, env=pg.tool_env(db), stderr=stderr)
        usage = wait_tool(proc, stderr)
        seconds, busy = time.perf_counter() - start, busy_cpu() - busy0
        sampler.stop()
        ours = usage.ru_utime + usage.ru_stime + sampler.ours_cpu(exclude={proc.pid}) + self_cpu() - self0
    size = discard(path)
    return {
        "seconds": seconds,
        "size_bytes": size,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "maxrss_bytes": usage.ru_maxrss * 1024,
        "level": level,
        "busy_cpu_seconds": busy,
        "other_cpu_seconds": busy - ours,
    }


def console_backup(console: Console, worker: Worker, datastore: str, interval: float) -> dict[str, Any]:
    """`manage.py backup DATASTORE --wait --json`, timed end to end, with the worker's memory sampled."""
    pool = worker.pool_processes()
    worker_pids = [worker.pid, *(p.pid for p in pool)]
    reset_peak_rss(worker_pids)
    cpu_before = {p.pid: p.cpu_times() for p in pool}
    ctx_before = {p.pid: p.num_ctx_switches().voluntary for p in pool}
    busy0 = busy_cpu()
    sampler = TreeSampler(worker, interval, console.pg, console.source_db, console.db)
    self0 = self_cpu()
    start = time.perf_counter()
    sampler.t0 = start
    sampler.start()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            console.manage_args("backup", datastore, "--wait", "--json"),
            cwd=console.code_dir,
            env=console.env(),
            stdout=out,
            stderr=err,
        )
        cli_cpu = 0.0
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    cli_cpu = usage.ru_utime + usage.ru_stime
                    break
                time.sleep(0.2)
                if not worker.alive():  # something outside the bench stopped our worker: this run is void
                    raise WorkerDied("the worker was stopped from outside during a console backup")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            seconds, busy = time.perf_counter() - start, busy_cpu() - busy0
            sampler.stop()
            ours = sampler.ours_cpu() + cli_cpu + self_cpu() - self0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        if not worker.alive():
            raise WorkerDied(f"manage.py backup failed and the worker is gone: {stderr[-500:]}")
        sys.exit(f"manage.py backup failed ({proc.returncode}):\n{stdout}\n{stderr}\nworker log:\n{worker.log_tail()}")
    summary = json.loads(stdout)
    if summary["status"] != "succeeded":
        sys.exit(f"backup did not succeed: {summary}")
    pool_user = pool_sys = 0.0
    ctx = 0
    for p in pool:
        with contextlib.suppress(psutil.NoSuchProcess):
            now, before = p.cpu_times(), cpu_before[p.pid]
            pool_user += now.user - before.user
            pool_sys += now.system - before.system
            ctx += p.num_ctx_switches().voluntary - ctx_before[p.pid]
    hwm = [vm_hwm(pid) for pid in worker_pids]
    artifact = console.artifact_dir / summary["storage_key"]
    discard(artifact)
    created = dt.datetime.fromisoformat(summary["created_at"])
    started = dt.datetime.fromisoformat(summary["started_at"])
    return {
        "seconds": seconds,
        "job_seconds": summary["duration_seconds"],
        "queue_seconds": (started - created).total_seconds(),
        "size_bytes": summary["size_bytes"],
        "level": summary["compression_level"],
        "artifact_id": summary["id"],
        "tables_counted": len(summary["row_counts"]),
        "peak_worker_rss": sampler.peak_rss,
        "peak_worker_pss": sampler.peak_pss,
        "peak_worker_uss": sampler.peak_uss,
        "peak_rss_by_role": sampler.peak_by_role,
        "peak_worker_vmhwm_sum": sum(h for h in hwm if h) if all(hwm) else None,
        "peak_tool_rss": sampler.peak_tool_rss,
        "pool_cpu_seconds": pool_user + pool_sys,
        "pool_user_seconds": pool_user,
        "pool_sys_seconds": pool_sys,
        "pool_voluntary_ctx_switches": ctx,
        "busy_cpu_seconds": busy,
        "other_cpu_seconds": busy - ours,
        "samples": sampler.samples,
        "count_active_seconds": sampler.span(sampler.count_seen),
        "copy_active_seconds": sampler.span(sampler.copy_seen),
        "max_parallel_workers": sampler.max_parallel_workers,
        "max_active_backends": sampler.max_active_backends,
    }


class WorkerDied(Exception):
    """Our worker was stopped from outside (seen once: another session's broad `pkill celery`)."""


def console_backup_retrying(
    console: Console,
    worker: Worker,
    datastore: str,
    interval: float,
    incidents: list[str],
    attempts: int = 3,
) -> dict[str, Any]:
    """A console run; if the worker is killed from outside during it, restart the worker and redo the run."""
    for attempt in range(1, attempts + 1):
        if not worker.alive():
            incidents.append(f"{dt.datetime.now():%H:%M:%S} worker found dead before a console run; restarted")
            say(f"    ! {incidents[-1]}")
            worker.restart()
        try:
            return console_backup(console, worker, datastore, interval)
        except WorkerDied as exc:
            incidents.append(
                f"{dt.datetime.now():%H:%M:%S} {str(exc).splitlines()[0]} (attempt {attempt}); "
                "run discarded, worker restarted"
            )
            say(f"    ! {incidents[-1]}")
            worker.restart()
    sys.exit(f"the worker kept dying ({attempts} attempts); giving up")


def describe_raw(run: dict[str, Any]) -> str:
    return (
        f"raw pg_dump      {run['seconds']:7.2f} s  {mb(run['size_bytes']):>12}  "
        f"pg_dump CPU {run['cpu_seconds']:6.1f} s, RSS {mb(run['maxrss_bytes'])}; "
        f"all cores busy {run['busy_cpu_seconds']:.0f} s, other load {run['other_cpu_seconds']:.1f} s"
    )


def describe_console(run: dict[str, Any]) -> str:
    return (
        f"console backup   {run['seconds']:7.2f} s  {mb(run['size_bytes']):>12}  "
        f"job {run['job_seconds']:.2f} s (queued {run['queue_seconds']:.2f} s); worker RSS peak "
        f"{mb(run['peak_worker_rss'])} (PSS {mb(run['peak_worker_pss'])}, USS {mb(run['peak_worker_uss'])}), pg_dump RSS {mb(run['peak_tool_rss'])}; "
        f"pool CPU {run['pool_cpu_seconds']:.1f} s ({run['pool_voluntary_ctx_switches']:,} wake-ups); all cores busy {run['busy_cpu_seconds']:.0f} s, other load {run['other_cpu_seconds']:.1f} s; count(*) active ~{run['count_active_seconds']:.1f} s "
        f"(parallel workers seen: {run['max_parallel_workers']})"
    )


def load_bench_datastore(console: Console, name: str, compression: int | None) -> None:
    """The datastore `name` on the console's source database, at `compression` (None: the console's default)."""
    lines = console.load_datastore(
        name,
        environment={"description": "backup overhead benchmark"},
        description=f"benchmark source {console.source_db}",
        compression_level=compression,
    )
    for line in lines:
        say(f"  loadconfig: {line}")


@dataclass
class SizeBench:
    """What the runs at one source size share: the console and its worker, the datastore, where dumps go, and
    the incidents (the worker killed from outside) met so far."""

    args: argparse.Namespace
    pg: Pg
    console: Console
    worker: Worker
    datastore: str
    workdir: Path
    incidents: list[str] = field(default_factory=list)

    def raw(self, level: int) -> dict[str, Any]:
        return raw_dump(self.pg, self.console.source_db, level, self.workdir / "raw.dump")

    def backup(self) -> dict[str, Any]:
        return console_backup_retrying(self.console, self.worker, self.datastore, self.args.interval, self.incidents)

    def set_compression(self, level: int | None) -> None:
        load_bench_datastore(self.console, self.datastore, level)
