"""Timing, interleaved rounds, CPU and memory of processes, and waiting for a quiet machine.

The machine is shared: scripts interleave the raw tool and the console in one run (alternating which goes first,
so that drift cancels) and print ratios."""

from __future__ import annotations

import contextlib
import resource
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from harness.core import say

if TYPE_CHECKING:
    import psycopg

    from harness.console import Worker
    from harness.pg import Pg

T = TypeVar("T")
TOOL_NAMES = {"pg_dump", "pg_restore"}  # children of the worker that are not the worker's own memory


# --- time -----------------------------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def p95(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.95) - 1)]


def timed_interleaved(functions: dict[str, Callable[[], Any]], repeat: int, warmup: int = 0) -> dict[str, list[float]]:
    """Seconds of each call, the functions taking turns: `warmup` untimed rounds, then `repeat` timed ones."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return times


def timed(function: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    """Seconds of each of `repeat` calls, after `warmup` untimed ones."""
    return timed_interleaved({"": function}, repeat, warmup)[""]


class Laps:
    """Durations by name: `with laps("raw"): ...` appends the block's seconds to laps.times["raw"]."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.times.setdefault(name, []).append(time.monotonic() - started)

    def last(self, name: str) -> float:
        return self.times[name][-1]

    def median(self, name: str) -> float:
        return median(self.times.get(name, []))

    def summary(self) -> str:
        """ "name 1.23 s, other 4.56 s": the last time of each, in the order first timed."""
        return ", ".join(f"{name} {times[-1]:.2f} s" for name, times in self.times.items())


def median_p95_ms(times: Sequence[float]) -> tuple[float, float]:
    return median(times) * 1000, p95(times) * 1000


def alternate(index: int, sides: Sequence[T]) -> list[T]:
    """Round `index` (from 0) runs the sides in order, the next one in reverse, and so on."""
    return list(sides) if index % 2 == 0 else list(reversed(sides))


def interleaved_rounds(repeat: int, sides: Sequence[str] = ("raw", "console")) -> Iterator[tuple[int, str]]:
    """(round number from 1, side) for `repeat` rounds of every side, each round announced."""
    for round_no in range(1, repeat + 1):
        order = alternate(round_no - 1, sides)
        say(f"  round {round_no}/{repeat} ({' then '.join(order)}):")
        for side in order:
            yield round_no, side


# --- CPU ------------------------------------------------------------------------------------------------------------


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def busy_cpu() -> float:
    """System-wide busy CPU seconds so far (all cores; idle and iowait excluded)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_for_quiet(
    max_wait: float, threshold_cores: float = 0.25, window: float = 2.0, windows: int = 5
) -> tuple[float, float]:
    """Wait (up to `max_wait` s) until the machine has been nearly idle for `windows` consecutive windows before
    a timed run: on 2 cores, another session's tests or benchmark change the figures. Returns (seconds waited,
    cores busy in the last window)."""
    start, quiet = time.monotonic(), 0
    while True:
        before = busy_cpu()
        time.sleep(window)
        load = (busy_cpu() - before) / window
        quiet = quiet + 1 if load < threshold_cores else 0
        if quiet >= windows or time.monotonic() - start >= max_wait:
            return time.monotonic() - start, load


# --- memory ---------------------------------------------------------------------------------------------------------


def safe_name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def memory_of(procs: Iterable[psutil.Process]) -> dict[str, int]:
    """Summed RSS, PSS and USS of the processes, pg_dump and pg_restore left out."""
    rss = pss = uss = 0
    for proc in procs:
        if safe_name(proc) in TOOL_NAMES:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            full = proc.memory_full_info()
            rss += full.rss
            pss += full.pss
            uss += full.uss
    return {"rss": rss, "pss": pss, "uss": uss}


def reset_peak_rss(pids: list[int]) -> None:
    """Reset VmHWM (the kernel's peak RSS) so it covers one run only; needs Linux and owning the process."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def vm_hwm(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def python_peak(function: Callable[[], Any]) -> int:
    """Peak bytes Python allocated during one call (tracemalloc: slows Python down several times, so not timed)."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class PeakRss(threading.Thread):
    """Samples this process's RSS every 10 ms while a job runs: `with PeakRss() as rss: ...; rss.peak - rss.baseline`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


class TreeSampler(threading.Thread):
    """Every `interval` s: RSS (and PSS) of the worker's processes (main + pool children, without pg_dump and
    pg_restore), RSS of those tools apart, and what the source database's backends are doing. Without a worker,
    only the CPU of the processes involved (extra_pids and the databases' backends)."""

    def __init__(self, worker: Worker | None, interval: float, pg: Pg, src_db: str, console_db: str = "") -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.worker = worker
        self.dbs = [db for db in (src_db, console_db) if db]
        self.extra_pids: set[int] = set()  # e.g. the raw pg_dump, the manage.py backup process
        self.cpu: dict[int, list[float]] = {}  # pid -> [CPU at start (0 if born during the run), last seen]
        self.start_epoch = time.time()
        self.interval = interval
        self.pg = pg
        self.src_db = src_db
        self.halt = threading.Event()
        self.t0 = time.perf_counter()
        self.samples = 0
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_uss = 0
        self.peak_by_role: dict[str, int] = {}
        self.peak_tool_rss = 0
        self.count_seen: list[float] = []  # times (s after start) at which a count(*) was active
        self.copy_seen: list[float] = []
        self.max_parallel_workers = 0
        self.max_active_backends = 0

    def run(self) -> None:
        import psycopg

        conn = None
        with contextlib.suppress(Exception):
            conn = self.pg.connect("postgres")
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.extra_pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        try:
            while True:
                self.sample(conn)
                if self.halt.wait(self.interval):
                    break
        finally:
            if conn is not None:
                conn.close()

    def sample(self, conn: psycopg.Connection[Any] | None) -> None:
        import psycopg

        now = time.perf_counter() - self.t0
        rss = pss = uss = tool = 0
        procs = self.worker.tree() if self.worker else []
        backends: list[int] = []
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                backends = [
                    r[0]
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", [self.dbs]
                    ).fetchall()
                ]
        self.track_cpu([*(p.pid for p in procs), *self.extra_pids, *backends])
        if self.worker is None:
            return
        for index, proc in enumerate(procs):
            try:
                name = proc.name()
                if name in TOOL_NAMES:
                    tool += proc.memory_info().rss
                    continue
                full = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += full.rss
            pss += full.pss
            uss += full.uss
            role = "main" if index == 0 else "pool child"
            self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), full.rss)
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_uss = max(self.peak_uss, uss)
        self.peak_tool_rss = max(self.peak_tool_rss, tool)
        if conn is None:
            return
        with contextlib.suppress(psycopg.Error):
            rows = conn.execute(
                "SELECT backend_type, state, query FROM pg_stat_activity WHERE datname = %s", [self.src_db]
            ).fetchall()
            active = [r for r in rows if r[1] == "active" or r[0] == "parallel worker"]
            self.max_active_backends = max(self.max_active_backends, len(active))
            self.max_parallel_workers = max(
                self.max_parallel_workers, sum(1 for r in rows if r[0] == "parallel worker")
            )
            if any(r[1] == "active" and "count(*)" in (r[2] or "").lower() for r in rows):
                self.count_seen.append(now)
            if any(r[1] == "active" and (r[2] or "").lstrip().upper().startswith("COPY") for r in rows):
                self.copy_seen.append(now)

    def track_cpu(self, pids: list[int]) -> None:
        for pid in set(pids):
            try:
                proc = psutil.Process(pid)
                times = proc.cpu_times()
                used = times.user + times.system
                if pid not in self.cpu:
                    self.cpu[pid] = [used if proc.create_time() < self.start_epoch else 0.0, used]
                self.cpu[pid][1] = used
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def ours_cpu(self, exclude: set[int] = frozenset()) -> float:  # type: ignore[assignment]
        """CPU seconds used during the run by the processes this run involves (last sample of each)."""
        return sum(last - first for pid, (first, last) in self.cpu.items() if pid not in exclude)

    def span(self, seen: list[float]) -> float:
        """How long something seen in the samples (count_seen, copy_seen) was active, about."""
        return (seen[-1] - seen[0] + self.interval) if seen else 0.0

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)
