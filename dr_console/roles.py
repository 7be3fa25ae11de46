"""The console's roles, as Django groups holding permissions. A user may hold several (an approver is usually
also an operator). Views, endpoints and commands check the permissions, never the group names."""

from __future__ import annotations

from typing import Any

# Read everything the console records.
VIEWER = [
    "inventory.view_environment",
    "inventory.view_datastore",
    "backups.view_backupartifact",
    "backups.view_backupverification",
    "restores.view_restorerun",
    "restores.view_restoreapproval",
    "audit.view_auditevent",
    "drills.view_drillrun",
    "drills.view_objectivebreach",
    "reprocess.view_reprocessbatch",
]
# Start backups, verifications and drills, request restores (and cancel their own), pin backups, set retention,
# build and send reprocess batches, requeue the application's failed jobs, download backups (as stored: encrypted
# files stay encrypted) and import pg_dump files. A backup of an environment whose data is protected is downloaded
# only once someone else approved (backups.downloads; docs/security.md "Downloads").
OPERATOR = [
    *VIEWER,
    "backups.add_backupartifact",
    "restores.add_restorerun",
    "reprocess.add_reprocessbatch",
    "backups.pin_backupartifact",
    "inventory.change_datastore_retention",
    "drills.add_drillrun",
    "queues.requeue_job",
    "backups.download_backupartifact",
]
# Approve or reject restores, and downloads of protected data, requested by someone else. Not download itself:
# an approver who is no operator only decides on what others asked for.
APPROVER = [*VIEWER, "restores.approve_restorerun"]

ROLES = {"viewer": VIEWER, "operator": OPERATOR, "approver": APPROVER}


def roles_ensure(group_model: Any, permission_model: Any, *, skip_missing: bool = False) -> None:
    """Create the groups and give them their permissions; idempotent. Takes the models so the data migrations
    can pass their historical ones. `skip_missing` passes over permissions that do not exist yet."""
    for name, perms in ROLES.items():
        group, _ = group_model.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            found = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found is None and not skip_missing:
                raise permission_model.DoesNotExist(f"permission {perm} does not exist")
            if found is not None:
                group.permissions.add(found)


def roles_migrate(apps: Any, schema_editor: Any) -> None:
    """The roles data migrations: create the permissions of the apps migrated so far, then the groups.
    A permission of an app that a fresh database migrates later is skipped here: the migration that adds it to a
    role depends on that app and runs this again."""
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations ran; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_ensure(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"), skip_missing=True)
