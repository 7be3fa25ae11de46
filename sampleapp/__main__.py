"""`python -m sampleapp COMMAND`: api, worker, run (both), seed N. Errors are one line, no traceback."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from typing import Any

import psycopg

from sampleapp import db
from sampleapp.config import QUEUE_NAME, Config, ConfigError, check_reachable, config_from_env, safe_location


def _say(message: str) -> None:
    print(message, flush=True)


def _startup(*, need_token: bool, create_database: bool = False) -> Config:
    config = config_from_env(need_token=need_token)
    if create_database:
        try:
            if db.database_create_if_missing(config.database_url):
                _say(f"created database {safe_location(config.database_url)}")
        except psycopg.Error:
            pass  # check_reachable below says what is wrong, in one line
    check_reachable(config)
    return config


def _seed(config: Config, count: int, workspaces: int) -> None:
    db.schema_ensure(config.database_url)
    with db.connect(config.database_url) as conn:
        rows = db.documents_seed(conn, count, workspaces=workspaces)
    _say(f"created {len(rows)} PENDING documents over {workspaces} workspaces")


def command_api(args: argparse.Namespace) -> None:
    from sampleapp.api import server_create

    config = _startup(need_token=True, create_database=args.create_database)
    db.schema_ensure(config.database_url)
    if args.seed:
        _seed(config, args.seed, args.workspaces)
    server = server_create(config, args.host, args.port)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    # The first line on stdout says where it listens (tests start it on port 0 and read the port from here).
    _say(f"sampleapp API listening on http://{host}:{port}")
    worker = _worker_process() if args.with_worker else None
    if args.print_token:
        _say(f"bearer token: {config.token}")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.app.close()
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)


def _worker_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sampleapp", "worker"], env=os.environ.copy())


def command_worker(args: argparse.Namespace) -> None:
    import redis
    from rq import Queue, SimpleWorker

    config = _startup(need_token=False)
    connection = redis.Redis.from_url(config.redis_url)
    # SimpleWorker runs each job in this process instead of forking a child per job: a job here is two UPDATEs,
    # cheaper than a fork, and it reuses the process's pooled database connection.
    worker = SimpleWorker([Queue(QUEUE_NAME, connection=connection)], connection=connection)
    _say(f"sampleapp worker {worker.name} listening on queue {QUEUE_NAME!r}")
    worker.work(logging_level=args.log_level)


def command_seed(args: argparse.Namespace) -> None:
    config = _startup(need_token=False, create_database=args.create_database)
    _seed(config, args.count, args.workspaces)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sampleapp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8001, help="0 picks a free port (printed on the first line)")
    api.add_argument("--with-worker", action="store_true", help="also start a worker process (what make runs)")
    api.add_argument("--seed", type=int, default=0, metavar="N", help="create N PENDING documents first")
    api.add_argument("--workspaces", type=int, default=3, help="spread seeded documents over this many")
    api.add_argument("--create-database", action="store_true", help="create the database when it is missing")
    api.add_argument("--print-token", action="store_true", help="print the bearer token (local use)")
    api.set_defaults(handler=command_api)

    worker = commands.add_parser("worker", help="run the RQ worker")
    worker.add_argument("--log-level", default="WARNING")
    worker.set_defaults(handler=command_worker)

    seed = commands.add_parser("seed", help="create N PENDING documents")
    seed.add_argument("count", type=int)
    seed.add_argument("--workspaces", type=int, default=3)
    seed.add_argument("--create-database", action="store_true")
    seed.set_defaults(handler=command_seed)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("seed", "count", "workspaces"):
        if getattr(args, name, 0) is not None and getattr(args, name, 0) < 0:
            parser.error(f"--{name} must not be negative")
    if getattr(args, "workspaces", 1) == 0:
        parser.error("--workspaces must be at least 1")
    try:
        args.handler(args)
    except ConfigError as exc:
        print(f"sampleapp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
