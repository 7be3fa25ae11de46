"""The console's roles, as Django groups holding permissions. A user may hold several (an approver is usually
also an operator). Views, endpoints and commands check the permissions, never the group names."""

from __future__ import annotations

# Read everything the console records.
VIEWER = [
    "backups.view_environment",
    "backups.view_datastore",
    "backups.view_backupartifact",
    "restores.view_restorerun",
    "restores.view_restoreapproval",
    "audit.view_auditevent",
]
# Start backups and verifications, request restores (and cancel their own).
OPERATOR = [*VIEWER, "backups.add_backupartifact", "restores.add_restorerun"]
# Approve or reject restores requested by someone else.
APPROVER = [*VIEWER, "restores.approve_restorerun"]

ROLES = {"viewer": VIEWER, "operator": OPERATOR, "approver": APPROVER}
