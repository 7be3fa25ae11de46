"""The PostgreSQL server the benchmarks use: databases made and dropped, and pg_dump/pg_restore run as the
console runs them."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql


def pg_tool(name: str) -> str:
    """Same lookup as the console (PG_BIN_DIR, else PATH), so both sides run the same binary."""
    bin_dir = os.environ.get("PG_BIN_DIR", "")
    found = str(Path(bin_dir) / name) if bin_dir else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        sys.exit(f"{name} not found (PATH or PG_BIN_DIR)")
    return found


def wait_tool(proc: subprocess.Popen[Any], stderr: IO[bytes], name: str = "pg_dump") -> resource.struct_rusage:
    """Wait for a tool whose stderr goes to the temporary file `stderr`; its resource usage (CPU, peak RSS). A
    failure ends the script with the end of what the tool said."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        stderr.seek(0)
        sys.exit(f"{name} failed ({proc.returncode}): {stderr.read().decode(errors='replace')[-2000:]}")
    return usage


def discard(path: Path) -> int:
    """Remove a dump once measured, and flush the page cache's dirty pages so the next run starts alike; the
    dump's size (0 if there was none)."""
    size = path.stat().st_size if path.is_file() else 0
    path.unlink(missing_ok=True)
    os.sync()
    return size


@dataclass
class Pg:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"

    def url(self, db: str, scheme: str = "postgresql") -> str:
        """`scheme` "postgres" for DATABASE_URL (django-environ), "postgresql" for libpq and psycopg."""
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{db}"

    def connect(self, db: str = "postgres", autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=db, autocommit=autocommit)

    def exists(self, db: str) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone() is not None

    def create(self, db: str, template: str = "") -> None:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db))
        if template:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self.connect() as conn:
            conn.execute(query)

    def drop(self, *dbs: str) -> None:
        with self.connect() as conn:
            for db in dbs:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))

    def recreate(self, db: str) -> None:
        """An empty database of that name, whatever a previous run left."""
        self.drop(db)
        self.create(db)

    @contextlib.contextmanager
    def scratch(self, db: str) -> Iterator[str]:
        """An empty database `db` for the length of the block (its psycopg URL), dropped at the end."""
        self.recreate(db)
        try:
            yield self.url(db)
        finally:
            self.drop(db)

    def pretty_size(self, db: str) -> str | None:
        """pg_size_pretty of the database, None when there is no such database."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE datname = %s", [db]
            ).fetchone()
        return row[0] if row else None

    def tool_env(self, db: str) -> dict[str, str]:
        """The environment of a pg_dump/pg_restore run against `db`: the server in PG* variables, a C locale."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "TZ")}
        env.update(
            LC_ALL="C.UTF-8", LANG="C.UTF-8", PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGDATABASE=db
        )
        return env

    def restore_into(self, db: str, archive: Path, jobs: int, *options: str) -> subprocess.CompletedProcess[str]:
        """The raw side of a restore: CREATE DATABASE `db` (from template0), then `pg_restore --jobs N [options]
        --dbname DB ARCHIVE`, output captured (the caller checks returncode)."""
        self.create(db, template="template0")
        args = [pg_tool("pg_restore"), f"--jobs={jobs}", *options, "--no-password", f"--dbname={db}", str(archive)]
        return subprocess.run(args, env=self.tool_env(db), capture_output=True, text=True, check=False)
