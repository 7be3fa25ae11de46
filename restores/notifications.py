"""Telling people about restores: email to the requester and the approvers, and the environment's webhook
(dr_console.notifications.notify)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Q

from dr_console.notifications import notify
from restores.models import RestoreApproval, RestoreRun


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
    notify(
        subject=subject,
        text=text,
        recipients=recipients,
        webhook_env=run.target_datastore.environment.webhook_url_env,
        about=f"restore #{run.pk}",
    )


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
        lines.append(
            f"Approve with: DR_CONSOLE_TOKEN=<your token> manage.py approve {run.pk} (needs {run.required_approvals})."
        )
    return subject, "\n".join(lines)
