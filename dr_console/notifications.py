"""Telling people: email (Django's email backend, EMAIL_URL; unset, one file per message under EMAIL_FILE_PATH) and an
environment's optional webhook (JSON with a Slack-compatible `text`). One function for every notification
(restores, failed backups, failed drills, objective breaches). A notification that cannot be sent is logged; it
never changes a job's outcome."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import httpx
from django.conf import settings
from django.core.mail import send_mail

from dr_console.secrets import secret_env

logger = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 5.0


def notify(*, subject: str, text: str, recipients: Iterable[str], webhook_env: str = "", about: str = "") -> None:
    """Email `recipients` (empty addresses skipped) and post to the webhook whose URL is in the environment variable
    `webhook_env`, if one is named. `about` names the subject of the notification in the log when sending fails
    ("restore #3")."""
    addresses = sorted({address for address in recipients if address})
    if addresses:
        try:
            send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, addresses)
        except Exception:
            logger.exception("could not email the notification about %s", about or subject)
        else:
            if settings.EMAIL_BACKEND == "django.core.mail.backends.filebased.EmailBackend":
                logger.info(
                    "EMAIL_URL is not set: the email about %s was saved under %s, not sent",
                    about or subject,
                    settings.EMAIL_FILE_PATH,
                )
    if webhook_env:
        webhook_post(webhook_env, f"{subject}\n{text}", about=about or subject)


def webhook_post(webhook_env: str, text: str, *, about: str) -> bool:
    """Post `text` to the webhook in variable `webhook_env`. A webhook URL is itself a secret (Slack's carry their
    token in the path), and httpx names the URL in its errors: what is logged names the variable and what failed,
    never the address or the error's own words."""
    url = secret_env(webhook_env)
    if not url:
        logger.warning("could not post the notification about %s: %s is not set in this process", about, webhook_env)
        return False
    try:
        response = httpx.post(url, json={"text": text}, timeout=WEBHOOK_TIMEOUT)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        logger.warning("could not post the notification about %s: %s does not hold a valid URL", about, webhook_env)
    except httpx.TimeoutException:
        logger.warning("could not post the notification about %s: the webhook in %s timed out", about, webhook_env)
    except httpx.HTTPError as exc:
        logger.warning(
            "could not post the notification about %s to the webhook in %s: %s", about, webhook_env, type(exc).__name__
        )
    else:
        if response.is_success:
            return True
        logger.warning(
            "could not post the notification about %s: the webhook in %s answered HTTP %s",
            about,
            webhook_env,
            response.status_code,
        )
    return False


def alert_recipients(*extra: str) -> list[str]:
    """Who hears about what went wrong without a person asking: ALERT_EMAILS, plus `extra` (the person who
    started the job, if any)."""
    return [*settings.ALERT_EMAILS, *extra]


def notify_job_failed(*, noun: str, job: Any, datastore_name: str, environment: Any, lines: Iterable[str] = ()) -> None:
    """Tell the alert recipients, the person who started it and the environment's webhook that a job failed:
    "Backup #12 of prod-db failed", who started it, its error, and what the job type adds (`lines`)."""
    label = f"{noun} #{job.pk}"
    notify(
        subject=f"[DR Console] {label[0].upper()}{label[1:]} of {datastore_name} failed",
        text="\n".join(
            [
                f"{label[0].upper()}{label[1:]} of {datastore_name} ({environment.name}) {job.status}.",
                f"Started by: {job.trigger}",
                f"Error: {job.error}",
                *lines,
            ]
        ),
        recipients=alert_recipients(job.triggered_by.email if job.triggered_by else ""),
        webhook_env=environment.webhook_url_env,
        about=label,
    )
