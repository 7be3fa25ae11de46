#!/usr/bin/env python
"""Backup overhead benchmark: raw `pg_dump -Fc` against the console's `manage.py backup DATASTORE --wait`.

One run does everything:

1. makes (or reuses) a source database per size, `<src-db>_<size>g` (e.g. bench_src_1g), shaped like a
   document-processing product: `documents` plus `chunks` (random text, float8[] embeddings), generated
   server-side with generate_series until pg_database_size() reaches the size asked for;
2. creates the console's own database (drc_bench), migrates it, registers the datastore with `loadconfig`,
   starts a real Celery worker (prefork, concurrency 1) with its own environment;
3. times raw pg_dump (same compression level as the console) and the console's backup, interleaved,
   `--repeat` times each, and prints the medians and the ratio console/raw;
4. samples the worker process tree's memory every 0.2 s during console runs (pg_dump/pg_restore children are
   reported apart: they are not the worker's memory);
5. times raw pg_dump at several compression levels (archive size, time, CPU);
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
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

APP_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = APP_DIR / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
CELERY = str(VENV_BIN / "celery")
CODE = {"dir": APP_DIR}  # where the console runs from: a snapshot of the working tree, see snapshot_code()
ARTIFACTS_ROOT = APP_DIR / "var" / "bench-artifacts"
OUT_DIR = APP_DIR / "bench" / "out"

GENERATOR_VERSION = "1"
GIB = 1024**3
MIB = 1024**2
TOOL_NAMES = {"pg_dump", "pg_restore"}  # children of the worker that are not the worker's own memory
SENTENCES = 20_000
CHUNKS_PER_DOCUMENT = 20
RSS_TARGET_MB = 150
RATIO_TARGET = 1.10


# --- small helpers ------------------------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f} MB"


def gb(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def size_label(size_gb: float) -> str:
    return f"{size_gb:g}".replace(".", "_") + "g"


def pg_tool(name: str) -> str:
    """Same lookup as the console (PG_BIN_DIR, else PATH), so both sides run the same binary."""
    bin_dir = os.environ.get("PG_BIN_DIR", "")
    found = str(Path(bin_dir) / name) if bin_dir else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        sys.exit(f"{name} not found (PATH or PG_BIN_DIR)")
    return found


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    last = len(header) - 1 if header[-1] == "what" else -1  # a trailing text column reads better left-aligned
    line = lambda r: "  ".join(
        str(c).ljust(w) if i in (0, last) else str(c).rjust(w)  # noqa: E731
        for i, (c, w) in enumerate(zip(r, widths))
    ).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


@dataclass
class Pg:
    host: str
    port: int
    user: str

    def url(self, db: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{db}"

    def connect(self, db: str = "postgres", autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=db, autocommit=autocommit)

    def exists(self, db: str) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone() is not None

    def tool_env(self, db: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "TZ")}
        env.update(
            LC_ALL="C.UTF-8", LANG="C.UTF-8", PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGDATABASE=db
        )
        return env


# --- 1. the source database -----------------------------------------------------------------------------------------

SCHEMA_SQL = """
CREATE TABLE bench_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE bench_sentences (id int PRIMARY KEY, s text NOT NULL);
CREATE TABLE documents (
    id          bigint PRIMARY KEY,
    tenant_id   int NOT NULL,
    title       text NOT NULL,
    source_uri  text NOT NULL,
    mime_type   text NOT NULL,
    status      text NOT NULL,
    page_count  int NOT NULL,
    metadata    jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE chunks (
    id          bigint PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES documents (id),
    ordinal     int NOT NULL,
    content     text NOT NULL,
    token_count int NOT NULL,
    embedding   float8[] NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX chunks_document_id_idx ON chunks (document_id);
CREATE INDEX documents_tenant_created_idx ON documents (tenant_id, created_at);
"""

# 20 000 "sentences" of 6-24 pseudo-words drawn with a skew (a few words are frequent, as in real text).
SENTENCES_SQL = """
INSERT INTO bench_sentences (id, s)
SELECT g.id,
       initcap(string_agg((%(words)s::text[])[1 + floor(power(random(), 2.2) * %(n)s)::int], ' ')) || '.'
FROM generate_series(0, %(count)s::int - 1) AS g(id)
CROSS JOIN LATERAL generate_series(1, 6 + (g.id * 7) %% 19) AS k
GROUP BY g.id
"""

DOCUMENTS_SQL = """
INSERT INTO documents (id, tenant_id, title, source_uri, mime_type, status, page_count, metadata,
                       created_at, updated_at)
SELECT d,
       1 + (d * 37) %% 500,
       left((SELECT s FROM bench_sentences WHERE id = (d * 7919) %% %(sentences)s), 120),
       'tenants/' || (1 + (d * 37) %% 500) || '/uploads/' || md5(d::text) || '.pdf',
       (ARRAY['application/pdf', 'text/html', 'text/plain',
              'application/vnd.openxmlformats-officedocument.wordprocessingml.document'])[1 + d %% 4],
       (ARRAY['ready', 'ready', 'ready', 'ready', 'processing', 'failed'])[1 + d %% 6],
       1 + floor(random() * 80)::int,
       jsonb_build_object('language', (ARRAY['en', 'es', 'de', 'fr'])[1 + d %% 4],
                          'sha256', encode(sha256(d::text::bytea), 'hex'),
                          'ocr', d %% 3 = 0,
                          'uploaded_by', 'user-' || (d * 13) %% 977,
                          'labels', jsonb_build_array('batch-' || d / 1000, 'kind-' || d %% 7)),
       timestamptz '2023-01-01' + d * interval '61 seconds',
       timestamptz '2023-01-01' + d * interval '61 seconds' + floor(random() * 86400) * interval '1 second'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS d
"""

# A chunk: ~8 consecutive sentences from a random place (about 1 KB of text) and an embedding of `dims` float8
# holding float4-precision values (what a model's float32 output becomes once stored as float8[]).
CHUNKS_SQL = """
INSERT INTO chunks (id, document_id, ordinal, content, token_count, embedding, created_at)
SELECT c.id, (c.id - 1) / %(per_doc)s + 1, (c.id - 1) %% %(per_doc)s, t.content, length(t.content) / 4,
       e.embedding, timestamptz '2023-01-01' + c.id * interval '3 seconds'
FROM (SELECT g AS id, floor(random() * (%(sentences)s - 8))::int AS r
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS c
CROSS JOIN LATERAL (SELECT string_agg(s.s, ' ' ORDER BY s.id) AS content
                    FROM bench_sentences s WHERE s.id BETWEEN c.r AND c.r + 7) AS t
CROSS JOIN LATERAL (SELECT array_agg(((random() * 2 - 1)::float4)::float8) AS embedding
                    FROM generate_series(1, %(dims)s::int) WHERE c.id > 0) AS e
"""


def vocabulary(n: int = 4000) -> list[str]:
    rng = random.Random(42)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "ra",
        "to",
        "shi",
        "den",
        "pro",
        "tra",
        "con",
        "ver",
        "sa",
        "mor",
        "el",
        "an",
        "is",
        "ul",
        "quo",
        "fin",
        "ber",
        "gal",
        "pen",
        "dro",
        "vi",
        "xe",
        "zu",
        "ment",
        "tion",
        "ing",
        "ex",
        "re",
        "de",
        "ba",
        "co",
        "lu",
        "ter",
        "or",
        "ist",
        "al",
    ]
    words: set[str] = {"the", "of", "and", "to", "in", "a", "is", "for", "on", "that", "with", "as", "by", "be"}
    ordered = sorted(words)
    while len(ordered) < n:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if word not in words:
            words.add(word)
            ordered.append(word)
    return ordered


def read_meta(pg: Pg, db: str) -> dict[str, str] | None:
    """The generator's notes in an existing database; None when it is not one of ours."""
    with pg.connect(db) as conn:
        if conn.execute("SELECT to_regclass('public.bench_meta')").fetchone()[0] is None:  # type: ignore[index]
            return None
        return dict(conn.execute("SELECT key, value FROM bench_meta").fetchall())


def ensure_source_db(pg: Pg, db: str, size_gb: float, dims: int, regenerate: bool) -> dict[str, Any]:
    target = int(size_gb * GIB)
    if pg.exists(db):
        meta = read_meta(pg, db)
        if meta is None:
            sys.exit(
                f"database {db} exists but was not made by this script (no bench_meta table); "
                f"drop it or choose another --src-db"
            )
        right = (
            meta.get("complete") == "1"
            and meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("target_bytes") == str(target)
            and meta.get("dims") == str(dims)
        )
        if right and not regenerate:
            info = source_info(pg, db)
            say(
                f"  reusing {db}: {gb(info['size_bytes'])} on disk, {info['chunks']:,} chunks, "
                f"{info['documents']:,} documents (--regenerate to rebuild)"
            )
            return info
        say(f"  dropping {db} ({'--regenerate' if right else 'different size or generator'})")
        with pg.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
    return generate_source_db(pg, db, target, dims)


def generate_source_db(pg: Pg, db: str, target: int, dims: int) -> dict[str, Any]:
    say(f"  generating {db} up to {gb(target)} on disk ({dims}-dimension float8[] embeddings)...")
    started = time.perf_counter()
    with pg.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with pg.connect(db) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(SCHEMA_SQL)
        conn.execute(
            "INSERT INTO bench_meta VALUES ('generator_version', %s), ('target_bytes', %s), "
            "('dims', %s), ('complete', '0')",
            [GENERATOR_VERSION, str(target), str(dims)],
        )
        words = vocabulary()
        conn.execute(SENTENCES_SQL, {"words": words, "n": len(words), "count": SENTENCES})
        start_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        size, next_chunk, batch = start_size, 1, 10_000
        while size < target:
            lo, hi = next_chunk, next_chunk + batch - 1
            params = {"lo": lo, "hi": hi, "dims": dims, "per_doc": CHUNKS_PER_DOCUMENT, "sentences": SENTENCES}
            doc_lo, doc_hi = (lo - 1) // CHUNKS_PER_DOCUMENT + 1, (hi - 1) // CHUNKS_PER_DOCUMENT + 1
            conn.execute(DOCUMENTS_SQL, {**params, "lo": doc_lo, "hi": doc_hi})
            conn.execute(CHUNKS_SQL, params)
            next_chunk = hi + 1
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
            say(f"    {hi:>10,} chunks, {gb(size)} so far, {time.perf_counter() - started:5.0f} s")
            # Next batch: ~100 MB, or just what is missing (plus 2 %), so the size lands close to the target.
            per_chunk = max(1.0, (size - start_size) / hi)
            wanted = min(100 * MIB, (target - size) * 1.02) / per_chunk
            batch = max(1, int(wanted) // CHUNKS_PER_DOCUMENT + 1) * CHUNKS_PER_DOCUMENT
        say("    VACUUM (FREEZE, ANALYZE): sets hint bits so the timed dumps do not pay for the first read...")
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("UPDATE bench_meta SET value = '1' WHERE key = 'complete'")
        conn.execute(
            "INSERT INTO bench_meta VALUES ('generated_seconds', %s)", [f"{time.perf_counter() - started:.0f}"]
        )
    info = source_info(pg, db)
    say(
        f"  generated {db}: {gb(info['size_bytes'])} on disk, {info['chunks']:,} chunks, "
        f"{info['documents']:,} documents in {time.perf_counter() - started:.0f} s"
    )
    return info


def source_info(pg: Pg, db: str) -> dict[str, Any]:
    with pg.connect(db) as conn:
        row = conn.execute(
            "SELECT pg_database_size(current_database()), (SELECT count(*) FROM documents), "
            "(SELECT count(*) FROM chunks), pg_total_relation_size('chunks'), pg_total_relation_size('documents'),"
            " pg_relation_size('chunks'), pg_total_relation_size(reltoastrelid) "
            "FROM pg_class WHERE oid = 'chunks'::regclass"
        ).fetchone()
    assert row is not None
    return {
        "db": db,
        "size_bytes": row[0],
        "documents": row[1],
        "chunks": row[2],
        "chunks_total_bytes": row[3],
        "documents_total_bytes": row[4],
        "chunks_heap_bytes": row[5],
        "chunks_toast_bytes": row[6],
    }


# --- 2. the console: its database, its datastore, a real worker ----------------------------------------------------


@dataclass
class Console:
    pg: Pg
    db: str
    broker_url: str
    artifact_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, src_db: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="dr_console.settings",
            DJANGO_DEBUG="True",
            DATABASE_URL=self.pg.url(self.db, scheme="postgres"),
            CELERY_BROKER_URL=self.broker_url,
            ARTIFACT_DIR=str(self.artifact_dir),
            BACKUP_VERIFY_AFTER_DUMP="False",
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        if src_db:
            env["BENCH_DATABASE_URL"] = self.pg.url(src_db)
        return env

    def manage(self, *args: str, src_db: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [PYTHON, manage_py(), *args],
            cwd=CODE["dir"],
            env=self.env(src_db),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            sys.exit(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def prepare(self) -> None:
        # Recreated every run: the project rewrites its initial migrations in place while it is young, and a
        # database migrated by an older 0001 would not match the models.
        with self.pg.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.db)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db)))
        self.manage("migrate", "--no-input", "-v", "0")
        self.fail_active()

    def fail_active(self) -> None:
        # A bench run that was interrupted may have left a backup active: the console would refuse a new one.
        self.manage(
            "shell",
            "-c",
            "from backups.models import BackupArtifact as B; "
            "B.objects.filter(status__in=B.ACTIVE, datastore__name__startswith='bench-')"
            ".update(status=B.Status.FAILED, error='bench: left over by an interrupted run')",
        )

    def default_compression(self) -> int:
        out = self.manage("shell", "-c", "from django.conf import settings; print(settings.BACKUP_DEFAULT_COMPRESSION)")
        return int(out.stdout.strip().splitlines()[-1])

    def load_datastore(self, name: str, src_db: str, workdir: Path, compression: int | None) -> None:
        toml = workdir / f"{name}.toml"
        level = "" if compression is None else f"compression_level = {compression}\n"
        toml.write_text(
            "# written by bench/backup_overhead.py\n"
            "[environments.bench]\n"
            'description = "backup overhead benchmark"\n\n'
            "[[datastores]]\n"
            f'name = "{name}"\n'
            'environment = "bench"\n'
            'kind = "postgres"\n'
            'url_env = "BENCH_DATABASE_URL"\n'
            f'description = "benchmark source {src_db}"\n' + level
        )
        out = self.manage("loadconfig", str(toml), src_db=src_db)
        for line in out.stdout.strip().splitlines():
            say(f"  loadconfig: {line}")


class Worker:
    """A real Celery worker, as the brief's command line starts it, with the bench's environment."""

    def __init__(self, console: Console, src_db: str, log_path: Path) -> None:
        self.console = console
        self.src_db = src_db
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, float] = {}  # pid -> create_time, to never signal a reused pid

    def start(self, timeout: float = 90.0) -> None:
        from celery import Celery

        args = [CELERY, "-A", "dr_console", "worker", "--pool=prefork", "--concurrency=1", "-l", "warning"]
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, cwd=CODE["dir"], env=self.console.env(self.src_db), stdout=self.log, stderr=subprocess.STDOUT
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

    def restart(self, console: Console) -> None:
        self.stop()
        console.fail_active()  # the killed job's row stays "running"; the console would refuse a new backup
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
        if self.proc is None:
            return
        self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
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


def safe_name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


# --- sampling the worker's memory --------------------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Every `interval` s: RSS (and PSS) of the worker's processes (main + pool children, without pg_dump and
    pg_restore), RSS of those tools apart, and what the source database's backends are doing."""

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

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


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


# --- 3. the timed runs ----------------------------------------------------------------------------------------------


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def busy_cpu() -> float:
    """System-wide busy CPU seconds so far (all cores; idle and iowait excluded)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def raw_dump(pg: Pg, db: str, level: int, path: Path) -> dict[str, Any]:
    """`pg_dump -Fc -Z<level> -f FILE`, timed; returns seconds, archive size, pg_dump CPU and peak RSS."""
    args = [pg_tool("pg_dump"), "--format=custom", f"--compress={level}", f"--file={path}", "--no-password"]
    sampler = TreeSampler(None, 0.5, pg, db)
    with tempfile.TemporaryFile() as stderr:
        self0 = self_cpu()
        busy0, start = busy_cpu(), time.perf_counter()
        sampler.start()
        proc = subprocess.Popen(args, env=pg.tool_env(db), stderr=stderr)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds, busy = time.perf_counter() - start, busy_cpu() - busy0
        sampler.stop()
        ours = usage.ru_utime + usage.ru_stime + sampler.ours_cpu(exclude={proc.pid}) + self_cpu() - self0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            sys.exit(f"pg_dump failed ({proc.returncode}): {stderr.read().decode(errors='replace')[-2000:]}")
    size = path.stat().st_size if path.is_file() else 0
    with contextlib.suppress(FileNotFoundError):
        if path.is_file():
            path.unlink()
    os.sync()
    return {
        "seconds": seconds,
        "size_bytes": size,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "maxrss_bytes": usage.ru_maxrss * 1024,
        "level": level,
        "busy_cpu_seconds": busy,
        "other_cpu_seconds": busy - ours,
    }


def console_backup(console: Console, worker: Worker, datastore: str, src_db: str, interval: float) -> dict[str, Any]:
    """`manage.py backup DATASTORE --wait --json`, timed end to end, with the worker's memory sampled."""
    pool = worker.pool_processes()
    worker_pids = [worker.pid, *(p.pid for p in pool)]
    reset_peak_rss(worker_pids)
    cpu_before = {p.pid: p.cpu_times() for p in pool}
    ctx_before = {p.pid: p.num_ctx_switches().voluntary for p in pool}
    busy0 = busy_cpu()
    sampler = TreeSampler(worker, interval, console.pg, src_db, console.db)
    self0 = self_cpu()
    start = time.perf_counter()
    sampler.t0 = start
    sampler.start()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [PYTHON, manage_py(), "backup", datastore, "--wait", "--json"],
            cwd=CODE["dir"],
            env=console.env(src_db),
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
    with contextlib.suppress(FileNotFoundError):
        artifact.unlink()
    os.sync()
    created = dt.datetime.fromisoformat(summary["created_at"])
    started = dt.datetime.fromisoformat(summary["started_at"])
    count_span = (sampler.count_seen[-1] - sampler.count_seen[0] + interval) if sampler.count_seen else 0.0
    copy_span = (sampler.copy_seen[-1] - sampler.copy_seen[0] + interval) if sampler.copy_seen else 0.0
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
        "count_active_seconds": count_span,
        "copy_active_seconds": copy_span,
        "max_parallel_workers": sampler.max_parallel_workers,
        "max_active_backends": sampler.max_active_backends,
    }


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


class WorkerDied(Exception):
    """Our worker was stopped from outside (seen once: another session's broad `pkill celery`)."""


def console_backup_retrying(
    console: Console,
    worker: Worker,
    datastore: str,
    src_db: str,
    interval: float,
    incidents: list[str],
    attempts: int = 3,
) -> dict[str, Any]:
    """A console run; if the worker is killed from outside during it, restart the worker and redo the run."""
    for attempt in range(1, attempts + 1):
        if not worker.alive():
            incidents.append(f"{dt.datetime.now():%H:%M:%S} worker found dead before a console run; restarted")
            say(f"    ! {incidents[-1]}")
            worker.restart(console)
        try:
            return console_backup(console, worker, datastore, src_db, interval)
        except WorkerDied as exc:
            incidents.append(
                f"{dt.datetime.now():%H:%M:%S} {str(exc).splitlines()[0]} (attempt {attempt}); "
                "run discarded, worker restarted"
            )
            say(f"    ! {incidents[-1]}")
            worker.restart(console)
    sys.exit(f"the worker kept dying ({attempts} attempts); giving up")


def idle_worker_memory(worker: Worker) -> dict[str, int]:
    rss = pss = uss = 0
    for proc in worker.tree():
        if safe_name(proc) in TOOL_NAMES:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            full = proc.memory_full_info()
            rss += full.rss
            pss += full.pss
            uss += full.uss
    return {"rss": rss, "pss": pss, "uss": uss}


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


def bench_size(
    args: argparse.Namespace,
    pg: Pg,
    console: Console,
    workdir: Path,
    size_gb: float,
    level: int | None,
    with_levels: bool,
) -> dict[str, Any]:
    label = size_label(size_gb)
    src_db = f"{args.src_db}_{label}"
    datastore = f"bench-src-{label.replace('_', '-')}"
    say(f"\n=== size {size_gb:g} GiB: source database {src_db}, datastore {datastore} ===")
    source = ensure_source_db(pg, src_db, size_gb, args.dims, args.regenerate)
    console.load_datastore(datastore, src_db, workdir, args.datastore_compression)
    effective = args.datastore_compression if args.datastore_compression is not None else level
    assert effective is not None
    say(
        f"  compression level used by the console for {datastore}: {effective} "
        f"({'datastore setting' if args.datastore_compression is not None else 'BACKUP_DEFAULT_COMPRESSION'})"
    )

    worker = Worker(console, src_db, workdir / f"worker-{label}.log")
    say("  starting the Celery worker (prefork, concurrency 1)...")
    worker.start()
    incidents: list[str] = []
    result: dict[str, Any] = {
        "size_gb": size_gb,
        "source": source,
        "level": effective,
        "datastore": datastore,
        "incidents": incidents,
    }
    try:
        idle = idle_worker_memory(worker)
        result["idle_worker"] = idle
        say(
            f"  worker pid {worker.pid}, pool {[p.pid for p in worker.pool_processes()]}, idle RSS {mb(idle['rss'])}"
            f" (PSS {mb(idle['pss'])}, USS {mb(idle['uss'])})"
        )
        raw_path = workdir / "raw.dump"
        for i in range(args.warmup):
            say(f"  warm-up {i + 1}/{args.warmup} (not counted):")
            say(f"    {describe_raw(raw_dump(pg, src_db, effective, raw_path))}")
            warm = console_backup_retrying(console, worker, datastore, src_db, args.interval, incidents)
            say(f"    {describe_console(warm)}")
            result.setdefault("warmup_console", []).append(warm)
        raws: list[dict[str, Any]] = []
        consoles: list[dict[str, Any]] = []
        # `--repeat` rounds; while some were disturbed by other load, up to `--extra-rounds` more, so that the
        # quiet-only figures rest on `--repeat` clean rounds when the machine allows it.
        i = quiet_rounds = 0
        while i < args.repeat or (quiet_rounds < args.repeat and i < args.repeat + args.extra_rounds):
            order = ("raw", "console") if i % 2 == 0 else ("console", "raw")  # alternate, so drift cancels
            say(f"  round {i + 1} ({' then '.join(order)}; {quiet_rounds} quiet so far):")
            i += 1
            for kind in order:
                waited, load = wait_for_quiet(args.quiet_wait)
                if kind == "raw":
                    run = raw_dump(pg, src_db, effective, raw_path)
                    raws.append(run)
                else:
                    run = console_backup_retrying(console, worker, datastore, src_db, args.interval, incidents)
                    if run["level"] != effective:
                        sys.exit(f"the console used level {run['level']}, the raw dump {effective}")
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
        result["raw"], result["console"] = raws, consoles
        raw_med = median([r["seconds"] for r in raws])
        con_med = median([r["seconds"] for r in consoles])
        job_med = median([r["job_seconds"] for r in consoles])
        quiet_pairs = [(r, c) for r, c in zip(raws, consoles) if not (r["disturbed"] or c["disturbed"])]
        quiet_raw = [r["seconds"] for r, _ in quiet_pairs]
        quiet_con = [c["seconds"] for _, c in quiet_pairs]
        paired = [c["seconds"] / r["seconds"] for r, c in zip(raws, consoles)]
        ours = lambda run: run["busy_cpu_seconds"] - run["other_cpu_seconds"]  # noqa: E731
        result["summary"] = {
            "raw_median_s": raw_med,
            "console_median_s": con_med,
            "job_median_s": job_med,
            "ratio": con_med / raw_med,
            "job_ratio": job_med / raw_med,
            "paired_ratio_median": median(paired),
            "rounds": len(raws),
            "quiet_rounds": len(quiet_pairs),
            "raw_cpu_median_s": median([ours(r) for r in raws]),
            "console_cpu_median_s": median([ours(c) for c in consoles]),
            "cpu_ratio": median([ours(c) for c in consoles]) / median([ours(r) for r in raws]),
            "quiet_ratio": median(quiet_con) / median(quiet_raw) if quiet_raw and quiet_con else None,
            "quiet_raw_median_s": median(quiet_raw) if quiet_raw else None,
            "quiet_console_median_s": median(quiet_con) if quiet_con else None,
            "cli_overhead_median_s": median([c["seconds"] - c["job_seconds"] for c in consoles]),
            "pool_cpu_median_s": median([c["pool_cpu_seconds"] for c in consoles]),
            "peak_worker_rss": max(r["peak_worker_rss"] for r in consoles),
            "peak_worker_pss": max(r["peak_worker_pss"] for r in consoles),
            "peak_worker_uss": max(r["peak_worker_uss"] for r in consoles),
            "peak_worker_vmhwm_sum": max((r["peak_worker_vmhwm_sum"] or 0) for r in consoles) or None,
            "peak_pool_child_rss": max(r["peak_rss_by_role"].get("pool child", 0) for r in consoles),
            "peak_main_rss": max(r["peak_rss_by_role"].get("main", 0) for r in consoles),
            "peak_pg_dump_rss": max(r["peak_tool_rss"] for r in consoles),
            "archive_bytes": median([r["size_bytes"] for r in consoles]),
        }
        s = result["summary"]
        say(
            f"  => raw median {raw_med:.2f} s, console median {con_med:.2f} s (job {job_med:.2f} s), "
            f"ratio {s['ratio']:.3f} (job only {s['job_ratio']:.3f}, per-round {s['paired_ratio_median']:.3f}"
            + (f", {s['quiet_rounds']} quiet round(s) only {s['quiet_ratio']:.3f}" if s["quiet_ratio"] else "")
            + f"; CPU used {s['raw_cpu_median_s']:.0f} s vs {s['console_cpu_median_s']:.0f} s, x{s['cpu_ratio']:.3f}"
            + f"); peak worker RSS {mb(s['peak_worker_rss'])}"
        )

        if with_levels:
            result["levels"] = compression_table(args, pg, console, worker, src_db, datastore, workdir, incidents)
    finally:
        worker.stop()
        if args.console_levels:  # put the datastore back on the default level
            console.load_datastore(datastore, src_db, workdir, args.datastore_compression)
    if size_gb == args.first_size and args.attribute_repeat:
        result["attribution"] = attribution(args, pg, src_db, effective, workdir)
    return result


def compression_table(
    args: argparse.Namespace,
    pg: Pg,
    console: Console,
    worker: Worker,
    src_db: str,
    datastore: str,
    workdir: Path,
    incidents: list[str],
) -> list[dict[str, Any]]:
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
            runs.append(raw_dump(pg, src_db, level, workdir / "raw.dump"))
        row: dict[str, Any] = {
            "level": level,
            "seconds": median([r["seconds"] for r in runs]),
            "size_bytes": runs[0]["size_bytes"],
            "cpu_seconds": median([r["cpu_seconds"] for r in runs]),
            "runs": runs,
        }
        line = (
            f"    -Z{level}: {row['seconds']:7.2f} s  {mb(row['size_bytes']):>12}  pg_dump CPU {row['cpu_seconds']:.1f} s"
            f", other load {median([r['other_cpu_seconds'] for r in runs]):.1f} s"
        )
        if args.console_levels:
            console.load_datastore(datastore, src_db, workdir, level)
            wait_for_quiet(args.quiet_wait)
            run = console_backup_retrying(console, worker, datastore, src_db, args.interval, incidents)
            row["console"] = run
            line += f"; console {run['seconds']:.2f} s (x{run['seconds'] / row['seconds']:.3f})"
        say(line)
        rows.append(row)
    return rows


# --- attribution: where the console's in-job overhead goes (no Django, no Celery) ------------------------------------

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
    if str(CODE["dir"]) not in sys.path:
        sys.path.insert(0, str(CODE["dir"]))
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
        _pid, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            sys.exit(f"pg_dump failed: {stderr.read().decode(errors='replace')[-2000:]}")
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
    size = path.stat().st_size
    path.unlink()
    os.sync()
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


def attribution(args: argparse.Namespace, pg: Pg, src_db: str, level: int, workdir: Path) -> list[dict[str, Any]]:
    say(f"  attribution at -Z{level}, {args.attribute_repeat} run(s) of each variant, round-robin:")
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in ATTRIBUTION_VARIANTS}
    for i in range(args.attribute_repeat):
        order = ATTRIBUTION_VARIANTS if i % 2 == 0 else list(reversed(ATTRIBUTION_VARIANTS))
        for key, label, options in order:
            wait_for_quiet(args.quiet_wait)
            run = attributed_dump(pg, src_db, level, workdir / "attr.dump", **options)
            runs[key].append(run)
            say(
                f"    {key} {run['seconds']:7.2f} s  consumer CPU {run['consumer_user_seconds']:.1f} s user + "
                f"{run['consumer_sys_seconds']:.1f} s sys, {run['consumer_wakeups']:,} wake-ups; pg_dump CPU "
                f"{run['pg_dump_cpu_seconds']:.1f} s; all cores busy {run['busy_cpu_seconds']:.0f} s"
                f"{'; pipe ' + str(run['pipe_bytes'] // 1024) + ' KiB' if run['pipe_bytes'] else ''}  ({label})"
            )
    rows = []
    for key, label, _ in ATTRIBUTION_VARIANTS:
        med = lambda field: median([r[field] for r in runs[key]])  # noqa: E731
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


# --- 5. report ------------------------------------------------------------------------------------------------------


def print_summary(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    say("\n" + "=" * 100)
    say("SUMMARY: backup overhead (raw pg_dump -Fc vs manage.py backup --wait through a Celery worker)")
    say(f"{meta['date']}  {meta['machine']}  {meta['pg_dump']}  repeat={meta['repeat']} (medians)")
    say(f"command: {meta['command']}; app code {meta['code']}")
    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            [
                f"{r['size_gb']:g} GiB",
                gb(r["source"]["size_bytes"]),
                f"-Z{r['level']}",
                mb(s["archive_bytes"]),
                f"{s['raw_median_s']:.2f} s",
                f"{s['console_median_s']:.2f} s",
                f"{s['ratio']:.3f}",
                f"{s['paired_ratio_median']:.3f}",
                (
                    f"{s['quiet_ratio']:.3f} ({s['quiet_rounds']}/{s['rounds']})"
                    if s["quiet_ratio"]
                    else f"- (0/{s['rounds']})"
                ),
                f"{s['cpu_ratio']:.3f}",
                f"{s['job_median_s']:.2f} s",
                f"{s['job_ratio']:.3f}",
                f"{s['cli_overhead_median_s']:.2f} s",
            ]
        )
    say(
        table(
            rows,
            [
                "size",
                "on disk",
                "level",
                "archive",
                "raw pg_dump",
                "console (CLI)",
                "ratio",
                "per-round",
                "quiet rounds",
                "CPU ratio",
                "console (job)",
                "job ratio",
                "CLI extra",
            ],
        )
    )
    say("")
    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            [
                f"{r['size_gb']:g} GiB",
                mb(r["idle_worker"]["rss"]),
                mb(s["peak_worker_rss"]),
                mb(s["peak_worker_rss"] - r["idle_worker"]["rss"]),
                mb(s["peak_worker_pss"]),
                mb(s["peak_worker_uss"]),
                mb(s["peak_main_rss"]),
                mb(s["peak_pool_child_rss"]),
                mb(s["peak_worker_vmhwm_sum"]),
                mb(s["peak_pg_dump_rss"]),
            ]
        )
    say(
        table(
            rows,
            [
                "size",
                "idle RSS",
                "peak RSS (sum)",
                "peak - idle",
                "peak PSS (sum)",
                "peak USS (sum)",
                "main",
                "pool child",
                "VmHWM sum",
                "pg_dump",
            ],
        )
    )
    for r in results:
        if "levels" in r:
            say(f"\nCompression levels at {r['size_gb']:g} GiB ({gb(r['source']['size_bytes'])} on disk), raw pg_dump:")
            base = r["levels"][0]
            rows = []
            for row in r["levels"]:
                cells = [
                    f"{row['level']}",
                    f"{row['seconds']:.2f} s",
                    mb(row["size_bytes"]),
                    f"{row['size_bytes'] / r['source']['size_bytes']:.1%}",
                    f"{row['cpu_seconds']:.1f} s",
                    f"{row['size_bytes'] / base['size_bytes']:.1%}",
                ]
                if "console" in row:
                    cells.append(f"{row['console']['seconds']:.2f} s")
                rows.append(cells)
            header = ["level", "time", "archive", "of DB size", "pg_dump CPU", f"vs -Z{base['level']}"]
            if any("console" in row for row in r["levels"]):
                header.append("console")
            say(table(rows, header))
    for r in results:
        if "attribution" in r:
            say(
                f"\nWhere the in-job overhead goes, at {r['size_gb']:g} GiB, -Z{r['level']} (medians; consumer = the "
                "process reading pg_dump's output):"
            )
            base = r["attribution"][0]["seconds"]
            say(
                table(
                    [
                        [
                            a["variant"],
                            f"{a['seconds']:.2f} s",
                            f"{a['seconds'] / base:.3f}",
                            f"{a['consumer_cpu_seconds']:.1f} s",
                            f"{a['consumer_wakeups']:,.0f}",
                            f"{a['pg_dump_cpu_seconds']:.1f} s",
                            f"{a['busy_cpu_seconds']:.0f} s",
                            a["label"],
                        ]
                        for a in r["attribution"]
                    ],
                    ["", "time", "vs A", "consumer CPU", "wake-ups", "pg_dump CPU", "busy CPU", "what"],
                )
            )
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


def manage_py() -> str:
    return str(CODE["dir"] / "manage.py")


def snapshot_code(dest: Path) -> Path:
    """Copy the working tree (tracked and untracked, not ignored) to `dest` and run the console from there, so
    edits made to the app while the benchmark runs (it takes tens of minutes) do not change what is measured
    half-way through."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=APP_DIR, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = APP_DIR / name
        if name.startswith(("bench/out/", "var/")) or not source.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


def code_state() -> str:
    """The app code measured: HEAD plus a digest of uncommitted changes (the code may be edited between runs)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=APP_DIR, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    diff = git("diff", "HEAD", "--", ".", ":(exclude)bench", ":(exclude)docs")
    changed = len(
        [
            line
            for line in git("status", "--porcelain", "--", ".", ":(exclude)bench", ":(exclude)docs").splitlines()
            if line.strip()
        ]
    )
    return f"{head}" + (
        f" + {changed} uncommitted file(s), diff sha256 {hashlib.sha256(diff.encode()).hexdigest()[:12]}"
        if changed
        else ""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=1.0, help="Source database size on disk, GiB (default 1).")
    parser.add_argument("--sizes", default="", help="Several sizes in one run, e.g. 1,2 (overrides --size-gb).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed runs of each side per size (default 3).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed runs of each side first (default 1).")
    parser.add_argument(
        "--levels", default="0,1,3,6,9", help="Compression levels for the table, at the first size ('' to skip)."
    )
    parser.add_argument("--level-repeat", type=int, default=1, help="Raw runs per compression level (default 1).")
    parser.add_argument(
        "--console-levels",
        action="store_true",
        help="Also time one console backup per compression level (datastore compression_level).",
    )
    parser.add_argument(
        "--attribute-repeat",
        type=int,
        default=0,
        help="At the first size, time the parts of the console's job apart (pipe, sha256, row "
        "counting) this many times each (default 0: skip).",
    )
    parser.add_argument(
        "--datastore-compression",
        type=int,
        default=None,
        help="Set the datastore's compression_level (default: none, the console default applies).",
    )
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="Run the console from the working tree instead of a snapshot copied at start.",
    )
    parser.add_argument("--regenerate", action="store_true", help="Rebuild the source database(s).")
    parser.add_argument("--drop-src", action="store_true", help="Drop the generated source database(s) at the end.")
    parser.add_argument("--dims", type=int, default=384, help="Embedding dimensions (default 384).")
    parser.add_argument("--src-db", default="bench_src", help="Source database name prefix (default bench_src).")
    parser.add_argument("--console-db", default="drc_bench", help="The console's own database (default drc_bench).")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/5", help="Broker URL (default Redis db 5).")
    parser.add_argument(
        "--extra-rounds",
        type=int,
        default=3,
        help="Rounds added (at most) while fewer than --repeat rounds were undisturbed (default 3).",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300,
        help="Before each timed run, wait up to this many seconds for the machine to be idle.",
    )
    parser.add_argument(
        "--disturbed-share",
        type=float,
        default=0.15,
        help="Flag a run whose other processes used more than this share of one core.",
    )
    parser.add_argument("--interval", type=float, default=0.2, help="Memory sampling interval, s (default 0.2).")
    parser.add_argument("--json-out", default="", help="Where to write the figures (default bench/out/...).")
    args = parser.parse_args(argv)
    sizes = [float(x) for x in args.sizes.split(",")] if args.sizes else [args.size_gb]
    args.first_size = sizes[0]

    pg = Pg(args.pg_host, args.pg_port, args.pg_user)
    pg_dump = pg_tool("pg_dump")
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / GIB:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        "pg_dump": subprocess.run([pg_dump, "--version"], capture_output=True, text=True).stdout.strip(),
        "command": " ".join(
            [".venv/bin/python bench/backup_overhead.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "repeat": args.repeat,
        "sizes": sizes,
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
    say(f"backup overhead benchmark: {meta['date']}, {meta['machine']}")
    say(f"{meta['pg_dump']}; server {meta['server'].split(' on ')[0]}; {meta['server_settings']}")
    say(f"app code: {meta['code']}")

    ARTIFACTS_ROOT.mkdir(parents=True, exist_ok=True)
    # One run at a time: two runs would share drc_bench and the broker database, and time each other's load.
    lock = open(ARTIFACTS_ROOT / ".lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("another backup_overhead.py run is in progress (var/bench-artifacts/.lock); wait for it to end")
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=ARTIFACTS_ROOT))
    if not args.in_place:
        CODE["dir"] = snapshot_code(workdir / "app")
    console = Console(pg, args.console_db, args.broker, workdir / "artifacts")
    results: list[dict[str, Any]] = []
    made_src: list[str] = []
    try:
        say(
            f"\napp code {'in place' if args.in_place else 'copied to ' + str(CODE['dir'])}; "
            f"console database {args.console_db} (re)created and migrated; artifacts in {workdir}"
        )
        console.prepare()
        level = console.default_compression()
        say(f"  BACKUP_DEFAULT_COMPRESSION = {level}")
        from celery import Celery

        purge = Celery(broker=args.broker)
        dropped = purge.control.purge()  # only the bench's own broker database
        purge.close()
        if dropped:
            say(f"  dropped {dropped} stale message(s) from {args.broker}")
        for index, size in enumerate(sizes):
            made_src.append(f"{args.src_db}_{size_label(size)}")
            results.append(
                bench_size(
                    args, pg, console, workdir, size, level, with_levels=index == 0 and bool(args.levels.strip())
                )
            )
        print_summary(results, meta)
        out = (
            Path(args.json_out)
            if args.json_out
            else OUT_DIR / f"backup_overhead-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
        say(f"\nfigures written to {out.relative_to(APP_DIR) if out.is_relative_to(APP_DIR) else out}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        lock.close()
        with contextlib.suppress(OSError):
            if not any(p for p in ARTIFACTS_ROOT.iterdir() if p.name != ".lock"):
                (ARTIFACTS_ROOT / ".lock").unlink()
                ARTIFACTS_ROOT.rmdir()  # only if nothing else is left
        if args.drop_src:
            with pg.connect() as conn:
                for db in made_src:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            say(f"dropped {', '.join(made_src)}")
        say(f"removed the dumps and artifacts under {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
