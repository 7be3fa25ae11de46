from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from backups.models import BackupArtifact, BackupArtifactEvent, BackupVerification, BackupVerificationEvent
from backups.services import BackupRefused, backup_artifact_request
from backups.verification import VerificationRefused, backup_verification_request
from dr_console.admin_base import JobEventInline, ReadOnlyHistoryAdmin
from dr_console.http import client_ip
from dr_console.jobs import BrokerUnavailable
from inventory import admin as inventory_admin
from inventory.models import Datastore

VERIFY_PERM = "backups.add_backupartifact"  # backups.views.START_PERM: operators start backups and verifications

# The datastore admin is the inventory's; the backups app adds its action. Re-registering a subclass is Django's
# way of extending another app's ModelAdmin (as for contrib.auth's UserAdmin).
admin.site.unregister(Datastore)


@admin.register(Datastore)
class DatastoreAdmin(inventory_admin.DatastoreAdmin):
    actions = ["back_up_now"]

    @admin.action(description=_("Back up now"), permissions=["change"])
    def back_up_now(self, request: HttpRequest, queryset: QuerySet[Datastore]) -> None:
        for datastore in queryset:
            try:
                artifact = backup_artifact_request(
                    datastore=datastore,
                    trigger=f"admin:{request.user.get_username()}",
                    triggered_by=request.user,  # type: ignore[arg-type]
                    client_ip=client_ip(request),
                )
            except (BackupRefused, BrokerUnavailable) as exc:
                message = gettext("No backup of %(datastore)s: %(reason)s") % {
                    "datastore": datastore.name,
                    "reason": exc,
                }
                self.message_user(request, message, messages.ERROR)
            else:
                message = gettext("Backup #%(id)s of %(datastore)s queued") % {
                    "id": artifact.pk,
                    "datastore": datastore.name,
                }
                self.message_user(request, message, messages.SUCCESS)


class BackupArtifactEventInline(JobEventInline):
    model = BackupArtifactEvent


@admin.register(BackupArtifact)
class BackupArtifactAdmin(ReadOnlyHistoryAdmin):
    """History of backups: read-only. Backups are taken with "Back up now" or `manage.py backup`."""

    list_display = ["id", "datastore", "status", "verification", "size", "created_at", "duration", "trigger"]
    list_filter = ["status", "verification", "datastore__environment", "datastore"]
    list_select_related = ["datastore"]
    date_hierarchy = "created_at"
    inlines = [BackupArtifactEventInline]
    actions = ["verify"]

    @admin.display(description=_("size"), ordering="size_bytes")
    def size(self, obj: BackupArtifact) -> str:
        return filesizeformat(obj.size_bytes) if obj.size_bytes is not None else "-"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Without the permission Django leaves the action out and ignores a POST naming it: answer 403 instead (the
        # console's "Not allowed" page), so whoever tried knows it was refused.
        verifying = request.method == "POST" and request.POST.get("action") == "verify"
        if verifying and not self.has_verify_permission(request):
            raise PermissionDenied("verifying backups needs the operator role")
        return super().changelist_view(request, extra_context)

    def has_verify_permission(self, request: HttpRequest) -> bool:
        """Who may verify: whoever may start backups and verifications on the pages (operators), as the backup's
        page and `manage.py verify` ask; seeing the list is not enough."""
        return request.user.has_perm(VERIFY_PERM)

    @admin.action(description=_("Verify selected backups"), permissions=["verify"])
    def verify(self, request: HttpRequest, queryset: QuerySet[BackupArtifact]) -> None:
        for artifact in queryset:
            try:
                backup_verification_request(
                    artifact=artifact,
                    requested_by=request.user,  # type: ignore[arg-type]
                    client_ip=client_ip(request),
                )
            except (VerificationRefused, BrokerUnavailable) as exc:
                self.message_user(request, gettext("Not verified: %(reason)s") % {"reason": exc}, messages.ERROR)
            else:
                message = gettext("Verification of backup #%(id)s queued") % {"id": artifact.pk}
                self.message_user(request, message, messages.SUCCESS)


class BackupVerificationEventInline(JobEventInline):
    model = BackupVerificationEvent


@admin.register(BackupVerification)
class BackupVerificationAdmin(ReadOnlyHistoryAdmin):
    """Verifications of backups: read-only. Started after each backup, by "Verify", or `manage.py verify`."""

    list_display = ["id", "artifact", "status", "created_at", "duration", "trigger", "error"]
    list_filter = ["status", "artifact__datastore"]
    list_select_related = ["artifact__datastore"]
    inlines = [BackupVerificationEventInline]
