"""Telling people about restores: email (Django's email backend) to the requester and the approvers, and an
optional per-environment webhook (JSON with a Slack-compatible `text`). A notification that cannot be sent is
logged; it never changes the run's outcome."""

from __future__ import annotations

import logging

import httpx
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db.models import Q

from restores.models import RestoreApproval, RestoreRun

logger = logging.getLogger(__name__)


def approvers_for(run: RestoreRun) -> list[User]:
    """Active users who may approve this run (not the requester)."""
    perm = Q(user_permissions__codename="approve_restorerun") | Q(groups__permissions__codename="approve_restorerun")
    users = User.objects.filter(is_active=True).filter(perm | Q(is_superuser=True)).distinct()
    return [user for user in users if user.pk != run.triggered_by_id]


def restore_run_notify(run: RestoreRun, event: str) -> None:
    """`event`: awaiting_approval, queued, succeeded, failed (and the other terminal states)."""
    subject, text = _message(run, event)
    recipients = {run.triggered_by.email} if run.triggered_by and run.triggered_by.email else set()
    if event == "awaiting_approval":
        recipients |= {user.email for user in approvers_for(run) if user.email}
    else:
        decided = RestoreApproval.objects.filter(run=run).select_related("approver")
        recipients |= {approval.approver.email for approval in decided if approval.approver.email}
    if recipients:
        try:
            send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, sorted(recipients))
        except Exception:
            logger.exception("could not email the notification for restore #%s", run.pk)
    webhook = run.target_datastore.environment.webhook_url
    if webhook:
        try:
            httpx.post(webhook, json={"text": f"{subject}\n{text}"}, timeout=5.0).raise_for_status()
        except httpx.HTTPError as exc:
            logger.warning("could not post the notification for restore #%s to the webhook: %s", run.pk, exc)


def _message(run: RestoreRun, event: str) -> tuple[str, str]:
    target = run.target_label
    who = run.triggered_by.get_username() if run.triggered_by else run.trigger
    subjects = {
        "awaiting_approval": f"[DR Console] Restore #{run.pk} into {target} needs your approval",
        "queued": f"[DR Console] Restore #{run.pk} into {target} approved and queued",
        "succeeded": f"[DR Console] Restore #{run.pk} into {target} succeeded",
    }
    subject = subjects.get(event, f"[DR Console] Restore #{run.pk} into {target} {event}")
    lines = [
        f"Restore #{run.pk} of backup #{run.artifact_id} ({run.artifact.datastore.name}) into {target}.",
        f"Requested by {who}: {run.reason}",
        f"Status: {run.get_status_display()}",
    ]
    if run.error:
        lines.append(f"Error: {run.error}")
    if event == "awaiting_approval":
        lines.append(f"Approve with: manage.py approve {run.pk} --as YOU (needs {run.required_approvals}).")
    return subject, "\n".join(lines)
