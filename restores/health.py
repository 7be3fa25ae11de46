"""The protected application's health after a restore: GET {api_url}/healthz and /readyz through httpx.

Each result is a checklist item with the status code or the error. Connection errors are retried briefly
(httpx's transport retries): the application may still be reconnecting to the restored database.
"""

from __future__ import annotations

from typing import Any

import httpx
from django.conf import settings

from dr_console.text import untrusted_text


def http_client(transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The one place the client is built, so a unit test could pass a transport."""
    timeout = httpx.Timeout(settings.APP_CHECK_TIMEOUT, connect=min(3.0, settings.APP_CHECK_TIMEOUT))
    return httpx.Client(
        timeout=timeout,
        transport=transport or httpx.HTTPTransport(retries=settings.APP_CHECK_CONNECT_RETRIES),
        follow_redirects=False,
        headers={"User-Agent": "dr-console/restore-check"},
    )


def application_checks(api_url: str, client: httpx.Client | None = None) -> list[dict[str, Any]]:
    """GET /healthz and /readyz; a check passes on a 2xx answer."""
    base = api_url.rstrip("/")
    checks = []
    with client or http_client() as http:
        for path in ("/healthz", "/readyz"):
            url = f"{base}{path}"
            try:
                response = http.get(url)
            except httpx.HTTPError as exc:
                error = untrusted_text(str(exc))
                detail = f"GET {url}: {type(exc).__name__}: {error}" if error else f"GET {url}: {type(exc).__name__}"
                checks.append({"name": f"GET {path}", "ok": False, "detail": detail, "status_code": None})
                continue
            ok = response.is_success
            # The application's own words, as bytes from outside: escaped before they reach the run's checks.
            body = untrusted_text(response.text[:200].strip())
            reason = untrusted_text(response.reason_phrase)
            checks.append(
                {
                    "name": f"GET {path}",
                    "ok": ok,
                    "status_code": response.status_code,
                    "detail": f"{response.status_code} {reason}" + ("" if ok else f": {body}"),
                }
            )
    return checks
