"""The sample application's HTTP API (stdlib ThreadingHTTPServer, HTTP/1.1 keep-alive):

- GET  /healthz: the process answers (no dependency consulted).
- GET  /readyz: PostgreSQL and Redis answer; otherwise 503 naming the failed checks.
- POST /workspaces/{workspace_id}/documents/{document_id}/reprocess (Authorization: Bearer TOKEN): set the
  document back to PENDING, record the accepted request, enqueue its RQ job; 202. 401 without or with a wrong
  token, 404 for an unknown document or one of another workspace, 503 when the queue is unreachable.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import redis
from psycopg_pool import PoolTimeout
from rq import Queue

from sampleapp.config import QUEUE_NAME, Config
from sampleapp.jobs import reprocess_document

logger = logging.getLogger("sampleapp.api")

REPROCESS_PATH = re.compile(r"^/workspaces/(?P<workspace>[^/]+)/documents/(?P<document>[^/]+)/reprocess/?$")
JOB_TIMEOUT = 120  # seconds an RQ job may run
JOB_FAILURE_TTL = 7 * 24 * 3600  # failed jobs stay in RQ's failed registry for a week


class App:
    """What every request thread shares: the configuration, one PostgreSQL pool and one Redis pool."""

    def __init__(self, config: Config, *, pool_size: int = 20) -> None:
        from sampleapp import db

        self.config = config
        self.pg = db.pool_open(config.database_url, max_size=pool_size)
        self.redis = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                config.redis_url, max_connections=pool_size, timeout=5, socket_connect_timeout=3, socket_timeout=5
            )
        )

    def close(self) -> None:
        self.pg.close()
        self.redis.close()

    def readiness(self) -> dict[str, str]:
        checks = {"postgres": "ok", "redis": "ok"}
        try:
            with self.pg.connection(timeout=3) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout) as exc:
            checks["postgres"] = _first_line(exc)
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            checks["redis"] = _first_line(exc)
        return checks

    def reprocess(self, workspace_id: str, document_id: int) -> str | None:
        """Accept a reprocess request; the job id, or None when the document is not in that workspace.
        The accepted request is recorded in the transaction that found the document and committed only once the
        job is in the queue: a 202 always means "recorded and queued", and a failure leaves no record."""
        with self.pg.connection() as conn, conn.transaction():
            found = conn.execute(
                "UPDATE documents SET status = 'PENDING', updated_at = now() "
                "WHERE id = %s AND workspace_id = %s RETURNING id",
                [document_id, workspace_id],
            ).fetchone()
            if found is None:
                return None
            job_id = uuid.uuid4().hex
            conn.execute("INSERT INTO reprocess_requests (document_id, job_id) VALUES (%s, %s)", [document_id, job_id])
            # The worker's UPDATE of this row waits for this transaction: the job cannot mark the document
            # PROCESSING before the PENDING above is committed.
            Queue(QUEUE_NAME, connection=self.redis).enqueue(
                reprocess_document,
                workspace_id,
                document_id,
                job_id=job_id,
                job_timeout=JOB_TIMEOUT,
                failure_ttl=JOB_FAILURE_TTL,
                description=f"reprocess document {document_id} of workspace {workspace_id}",
            )
        return job_id


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parse_ids(workspace: str, document: str) -> tuple[str, int] | None:
    try:
        return str(uuid.UUID(workspace)), int(document)
    except ValueError:
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client sending many requests reuses its connections
    # Headers and body go out as two writes; with Nagle's algorithm the second waits for the client's delayed ACK
    # (about 40 ms a response on a kept-alive connection).
    disable_nagle_algorithm = True
    server: Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            checks = self.server.app.readiness()
            failed = [name for name, result in checks.items() if result != "ok"]
            if failed:
                self._json(503, {"status": "unavailable", "failed": failed, "checks": checks})
            else:
                self._json(200, {"status": "ready", "checks": checks})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        self._discard_body()
        match = REPROCESS_PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._json(404, {"error": "not found"})
            return
        if not self._authorized():
            self._json(401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"})
            return
        ids = _parse_ids(match["workspace"], match["document"])
        try:
            job_id = self.server.app.reprocess(*ids) if ids else None
        except redis.RedisError as exc:
            logger.warning("queue unavailable: %s", _first_line(exc))
            self._json(503, {"error": "queue unavailable"}, {"Retry-After": "1"})
            return
        except (psycopg.OperationalError, PoolTimeout) as exc:
            logger.warning("database unavailable: %s", _first_line(exc))
            self._json(503, {"error": "database unavailable"}, {"Retry-After": "1"})
            return
        if job_id is None or ids is None:
            self._json(404, {"error": "document not found in this workspace"})
            return
        workspace_id, document_id = ids
        self._json(
            202, {"status": "accepted", "job_id": job_id, "workspace_id": workspace_id, "document_id": document_id}
        )

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expected = self.server.app.config.token
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a client opening 16+ connections at once is not refused

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, Handler)


def server_create(config: Config, host: str, port: int) -> Server:
    return Server((host, port), App(config))
