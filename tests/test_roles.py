"""The roles the data migration creates hold exactly the permissions the console checks."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def member_of(*groups: str):  # type: ignore[no-untyped-def]
    user = UserFactory()
    user.groups.set(Group.objects.filter(name__in=groups))
    return type(user).objects.get(pk=user.pk)


def test_viewer_reads_but_changes_nothing() -> None:
    viewer = member_of("viewer")
    assert viewer.has_perm("backups.view_backupartifact") and viewer.has_perm("audit.view_auditevent")
    assert not viewer.has_perm("backups.add_backupartifact")
    assert not viewer.has_perm("restores.add_restorerun")
    assert not viewer.has_perm("restores.approve_restorerun")
    assert viewer.has_perm("inventory.view_datastore") and not viewer.has_perm("queues.requeue_job")


def test_operator_starts_backups_and_requests_restores_but_does_not_approve() -> None:
    operator = member_of("operator")
    assert operator.has_perm("backups.add_backupartifact") and operator.has_perm("restores.add_restorerun")
    assert operator.has_perm("queues.requeue_job")
    assert not operator.has_perm("restores.approve_restorerun")


def test_approver_approves_and_is_usually_also_an_operator() -> None:
    assert member_of("approver").has_perm("restores.approve_restorerun")
    both = member_of("approver", "operator")
    assert both.has_perm("restores.approve_restorerun") and both.has_perm("restores.add_restorerun")


def test_operators_download_and_viewers_and_approvers_alone_never() -> None:
    assert member_of("operator").has_perm("backups.download_backupartifact")
    assert not member_of("viewer").has_perm("backups.download_backupartifact")
    assert not member_of("approver").has_perm("backups.download_backupartifact")
