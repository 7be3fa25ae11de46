"""The console run as its own processes: `manage.py` commands and a real Celery worker, with the bench's
environment (its own console database, broker database, artifact and scratch directories)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from harness.core import CELERY, PYTHON, ROOT
from harness.measure import TOOL_NAMES, safe_name
from harness.pg import Pg

SOURCE_URL_ENV = "BENCH_SOURCE_URL"  # the variable the bench datastore's url_env names


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def toml_table(header: str, values: dict[str, Any]) -> str:
    return "\n".join([header, *(f"{key} = {toml_value(value)}" for key, value in values.items() if value is not None)])


class Console:
    """The console as `manage.py` sees it: its database `db` (on `pg`), `broker_url`, artifacts and scratch space
    under `workdir`, the code in `code_dir`. `source_db` is the database the bench datastore backs up."""

    def __init__(
        self,
        pg: Pg,
        db: str,
        broker_url: str,
        workdir: Path,
        *,
        source_db: str = "",
        code_dir: Path = ROOT,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.pg = pg
        self.db = db
        self.broker_url = broker_url
        self.workdir = workdir
        self.artifact_dir = workdir / "artifacts"
        self.source_db = source_db
        self.code_dir = code_dir
        self.extra_env = extra_env or {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="dr_console.settings",
            DJANGO_DEBUG="True",
            DATABASE_URL=self.pg.url(self.db, scheme="postgres"),
            CELERY_BROKER_URL=self.broker_url,
            ARTIFACT_DIR=str(self.artifact_dir),
            DR_SCRATCH_DIR=str(self.workdir / "scratch"),
            BACKUP_VERIFY_AFTER_DUMP="False",
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        if self.source_db:
            env[SOURCE_URL_ENV] = self.pg.url(self.source_db)
        return env

    def manage_args(self, *args: str) -> list[str]:
        return [PYTHON, str(self.code_dir / "manage.py"), *args]

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`manage.py ARGS` in a new process, output captured; with `check`, a failure ends the script."""
        proc = subprocess.run(
            self.manage_args(*args), cwd=self.code_dir, env=self.env(), capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            sys.exit(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def shell(self, code: str) -> str:
        """`manage.py shell -c CODE`; its last line of output."""
        lines = self.manage("shell", "-c", code).stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def prepare(self) -> None:
        """The console database, dropped, created and migrated: the project rewrites its initial migrations in
        place while it is young, and a database migrated by an older 0001 would not match the models."""
        self.pg.recreate(self.db)
        self.manage("migrate", "--no-input", "-v", "0")
        self.fail_active_backups()

    def drop(self) -> None:
        self.pg.drop(self.db)

    def fail_active_backups(self) -> None:
        """A bench run that was interrupted may have left a backup active: the console would refuse a new one."""
        self.manage(
            "shell",
            "-c",
            "from backups.models import BackupArtifact as B; "
            "B.objects.filter(status__in=B.ACTIVE, datastore__name__startswith='bench-')"
            ".update(status=B.Status.FAILED, error='bench: left over by an interrupted run')",
        )

    def load_datastore(self, name: str, environment: dict[str, Any] | None = None, **datastore: Any) -> list[str]:
        """`loadconfig` of environment "bench" and one postgres datastore `name` on the source database (keys
        set to None are left out); returns what loadconfig reported."""
        toml = self.workdir / f"{name}.toml"
        entry = {"name": name, "environment": "bench", "kind": "postgres", "url_env": SOURCE_URL_ENV, **datastore}
        toml.write_text(
            "# written by the bench harness\n"
            + toml_table("[environments.bench]", environment or {})
            + "\n\n"
            + toml_table("[[datastores]]", entry)
            + "\n"
        )
        return self.manage("loadconfig", str(toml)).stdout.strip().splitlines()

    def backup_inline(self, datastore: str) -> dict[str, Any]:
        """`manage.py backup DATASTORE --inline --json`: one backup in this process's child, its summary."""
        proc = self.manage("backup", datastore, "--inline", "--json")
        return json.loads(proc.stdout)


def purge_broker(broker_url: str) -> int:
    """Drop the messages waiting in the bench's own broker database (a previous run's); how many."""
    from celery import Celery

    app = Celery(broker=broker_url)
    try:
        return app.control.purge() or 0
    finally:
        app.close()


class Worker:
    """A real Celery worker (prefork, concurrency 1), as the console's documentation starts it, with the
    console's environment; its output goes to `log_path`."""

    def __init__(self, console: Console, log_path: Path) -> None:
        self.console = console
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, float] = {}  # pid -> create_time, to never signal a reused pid

    def start(self, timeout: float = 90.0) -> None:
        """Start it and wait until it answers a ping and has its pool process."""
        from celery import Celery

        args = [CELERY, "-A", "dr_console", "worker", "--pool=prefork", "--concurrency=1", "-l", "warning"]
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, cwd=self.console.code_dir, env=self.console.env(), stdout=self.log, stderr=subprocess.STDOUT
        )
        app = Celery(broker=self.console.broker_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    sys.exit(f"the worker exited ({self.proc.returncode}); its log:\n{self.log_tail()}")
                with contextlib.suppress(Exception):
                    if app.control.ping(timeout=1.0) and self.pool_processes():
                        return
                time.sleep(0.5)
        finally:
            app.close()
        sys.exit(f"the worker did not answer a ping within {timeout:.0f} s; its log:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and bool(self.pool_processes())

    def restart(self) -> None:
        self.stop()
        self.console.fail_active_backups()  # the killed job's row stays "running"; the console would refuse a new one
        self.start()

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tree(self) -> list[psutil.Process]:
        """The worker's main process and all its descendants (pool children, their pg_dump or pg_restore)."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                self.seen.setdefault(proc.pid, proc.create_time())
        return procs

    def pool_processes(self) -> list[psutil.Process]:
        return [p for p in self.tree()[1:] if safe_name(p) not in TOOL_NAMES]

    def stop(self) -> None:
        """Warm shutdown; then kill whatever of its processes is left (only those it started: pid and start time)."""
        if self.proc is None:
            return
        self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid, created in sorted(self.seen.items()):  # a pool child or a pg_dump left behind (own session)
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.kill()
        self.log.close()
        self.proc = None

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def snapshot_code(dest: Path) -> Path:
    """Copy the working tree (tracked and untracked, not ignored) to `dest`, to run the console from there: edits
    made to the app while a long benchmark runs do not change what is measured half-way through."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if name.startswith(("bench/out/", "var/")) or not source.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


def code_state() -> str:
    """The app code measured: HEAD plus a digest of uncommitted changes (the code may be edited between runs)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    diff = git("diff", "HEAD", "--", ".", ":(exclude)bench", ":(exclude)docs")
    status = git("status", "--porcelain", "--", ".", ":(exclude)bench", ":(exclude)docs")
    changed = len([line for line in status.splitlines() if line.strip()])
    if not changed:
        return head
    return f"{head} + {changed} uncommitted file(s), diff sha256 {hashlib.sha256(diff.encode()).hexdigest()[:12]}"
