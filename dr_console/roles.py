"""The console's roles, as Django groups holding permissions. A user may hold several (an approver is usually
also an operator). Views, endpoints and commands check the permissions, never the group names."""

from __future__ import annotations

from typing import Any

# Read everything the console records.
VIEWER = [
    "backups.view_environment",
    "backups.view_datastore",
    "backups.view_backupartifact",
    "restores.view_restorerun",
    "restores.view_restoreapproval",
    "audit.view_auditevent",
    "drills.view_drillrun",
    "drills.view_objectivebreach",
]
# Start backups, verifications and drills, request restores (and cancel their own), pin backups, set retention.
OPERATOR = [
    *VIEWER,
    "backups.add_backupartifact",
    "restores.add_restorerun",
    "backups.pin_backupartifact",
    "backups.change_datastore_retention",
    "drills.add_drillrun",
]
# Approve or reject restores requested by someone else.
APPROVER = [*VIEWER, "restores.approve_restorerun"]

ROLES = {"viewer": VIEWER, "operator": OPERATOR, "approver": APPROVER}


def roles_ensure(group_model: Any, permission_model: Any) -> None:
    """Create the groups and give them their permissions; idempotent. Takes the models so the data migration
    can pass its historical ones."""
    for name, perms in ROLES.items():
        group, _ = group_model.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            # A permission of a model a later migration creates is not there yet: that app's own roles migration
            # runs this again once it is.
            found = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found is not None:
                group.permissions.add(found)
