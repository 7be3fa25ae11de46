"""The protected application's reprocess endpoint, called with httpx.AsyncClient.

POST {api_url}/workspaces/{workspace_id}/documents/{document_id}/reprocess with a bearer token.
- 2xx: accepted.
- Transient, retried with exponential backoff and jitter (tenacity): connect errors, timeouts, 429 (its
  Retry-After is honoured) and 5xx.
- Anything else (401, 403, 404, 409, a redirect...): the item fails at once, with the reason.
Each call carries an Idempotency-Key, so an application that honours it never processes one item twice even when
a retry follows a response that was lost on the way back.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from dr_console.text import untrusted_text

ACCEPTED_STATUS = range(200, 300)


@dataclass(frozen=True)
class CallOutcome:
    accepted: bool
    attempts: int
    status_code: int | None
    error: str
    interrupted: bool = False  # the batch was stopped while this item waited for a retry


class TransientCallError(Exception):
    def __init__(self, message: str, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class SendingStopped(Exception):
    """The batch was cancelled while an item waited to be retried."""


def reprocess_path(workspace_id: str, document_id: str) -> str:
    return f"/workspaces/{quote(workspace_id, safe='')}/documents/{quote(document_id, safe='')}/reprocess"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff: float  # the first retry's base wait, in seconds; doubled each time, with jitter
    backoff_max: float

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientCallError) and exc.retry_after is not None:
            return min(exc.retry_after, self.backoff_max)
        return float(wait_exponential_jitter(multiplier=self.backoff, max=self.backoff_max, jitter=self.backoff)(state))


def error_text(exc: httpx.HTTPError) -> str:
    kind = type(exc).__name__
    detail = untrusted_text(str(exc).strip())
    return f"{kind}: {detail}" if detail else kind


async def reprocess_call(
    client: httpx.AsyncClient,
    workspace_id: str,
    document_id: str,
    *,
    policy: RetryPolicy,
    idempotency_key: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> CallOutcome:
    """Send one item until it is accepted, refused, or out of attempts. Never raises for HTTP trouble."""
    path = reprocess_path(workspace_id, document_id)
    attempts = 0

    async def once() -> CallOutcome:
        nonlocal attempts
        attempts += 1
        try:
            response = await client.post(path, headers={"Idempotency-Key": idempotency_key})
        except httpx.TimeoutException as exc:
            raise TransientCallError(f"no answer in time ({error_text(exc)})") from None
        except httpx.TransportError as exc:
            raise TransientCallError(f"cannot reach the application ({error_text(exc)})") from None
        status = response.status_code
        if status in ACCEPTED_STATUS:
            return CallOutcome(accepted=True, attempts=attempts, status_code=status, error="")
        # The reason phrase, a Location and the body are the application's bytes: escaped before they are stored.
        reason = f"{status} {untrusted_text(response.reason_phrase)}"
        if status == 429 or status >= 500:
            raise TransientCallError(reason, status, retry_after_seconds(response.headers.get("Retry-After")))
        if 300 <= status < 400:
            location = untrusted_text(response.headers.get("Location", "?"))
            reason += f" to {location}: check the environment's api_url"
        else:
            body = untrusted_text(" ".join(response.text[:300].split()))
            reason += f": {body}" if body else ""
        return CallOutcome(accepted=False, attempts=attempts, status_code=status, error=reason[:500])

    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=policy.wait,
            retry=retry_if_exception_type(TransientCallError),
            sleep=sleep,
            reraise=True,
        ):
            with attempt:
                return await once()
    except TransientCallError as exc:
        return CallOutcome(
            accepted=False,
            attempts=attempts,
            status_code=exc.status_code,
            error=f"{exc} (gave up after {attempts} attempts)"[:500],
        )
    except SendingStopped:
        return CallOutcome(
            accepted=False, attempts=attempts, status_code=None, error="stopped before a retry", interrupted=True
        )
    raise AssertionError("unreachable: tenacity either returns or raises")
