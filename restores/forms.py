"""Forms of the restore pages. They check what a person typed; the services decide what is allowed."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from backups.models import BackupArtifact
from backups.sources import artifact_sources
from inventory.models import Datastore
from restores.models import RestoreRun
from restores.redis_restore import KeyPatternError, key_matcher
from restores.selectors import ACTIVE_FILTER, RestoreImpact, restore_impact, restore_target_datastores
from restores.services import database_name_problem

TargetKind = RestoreRun.TargetKind


def _database_name_validate(name: str) -> None:
    if problem := database_name_problem(name):  # the CLI says the same (restores.services)
        raise forms.ValidationError(problem)


class DatastoreChoiceField(forms.ModelChoiceField):
    """Names the environment, and whether it is protected, next to each datastore."""

    def label_from_instance(self, obj: Any) -> str:
        environment = obj.environment
        if environment.protected:
            return str(_("%(name)s (%(environment)s, protected)") % {"name": obj.name, "environment": environment.name})
        return f"{obj.name} ({environment.name})"


class RestoreRequestForm(forms.Form):
    """Request a restore of one backup. `impact` says what the choice of target would overwrite.

    The fields follow the backup's format: a PostgreSQL archive can also go into a new database and has
    pg_restore's options; a Redis snapshot goes in place or into another Redis datastore, replacing existing keys
    or not, optionally only the keys matching a pattern."""

    PG_ONLY = ("new_database_name", "server_datastore", "jobs", "no_owner")
    REDIS_ONLY = ("replace", "key_pattern")

    target_kind = forms.ChoiceField(
        label=_("Restore into"),
        choices=[
            (TargetKind.IN_PLACE, _("Its own datastore (in place)")),
            (TargetKind.DATASTORE, _("Another PostgreSQL datastore")),
            (TargetKind.NEW_DATABASE, _("A new database")),
        ],
        widget=forms.RadioSelect,
        # Nothing chosen for the operator: in place is the most destructive, and a restore is chosen, not defaulted.
        error_messages={"required": _("Choose where to restore into.")},
    )
    target_datastore = DatastoreChoiceField(
        queryset=Datastore.objects.none(),
        required=False,
        label=_("Datastore to overwrite"),
        empty_label=_("Choose a datastore…"),
        help_text=_("Only with “Another PostgreSQL datastore”."),
    )
    new_database_name = forms.CharField(
        required=False,
        max_length=63,
        label=_("New database name"),
        validators=[_database_name_validate],
        help_text=_("Only with “A new database”. It must not exist yet."),
    )
    server_datastore = DatastoreChoiceField(
        queryset=Datastore.objects.none(),
        required=False,
        label=_("Create it on the server of"),
        empty_label=_("The backup's own datastore"),
        help_text=_("Only with “A new database”. Optional."),
    )
    replace = forms.BooleanField(
        required=False,
        label=_("Replace existing keys"),
        help_text=_(
            "Keys that exist in the target are overwritten with the backup's. Without it, the restore stops before "
            "writing anything if any key of the backup already exists, and names them."
        ),
    )
    key_pattern = forms.CharField(
        required=False,
        max_length=1000,
        label=_("Only keys matching"),
        widget=forms.TextInput(attrs={"placeholder": "rq:*", "spellcheck": "false"}),
        help_text=_("A Redis glob pattern (* ? [abc] [^a] \\ to escape), as in SCAN MATCH. Empty: every key."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text=_("Why this restore is needed. Approvers read it, and it stays in the audit log."),
    )
    confirm = forms.CharField(
        required=False,
        max_length=64,
        label=_("Type the name of the datastore to confirm"),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    jobs = forms.IntegerField(
        label=_("Parallel pg_restore jobs"),
        min_value=1,
        max_value=64,
        help_text=_("pg_restore --jobs: more is faster on a server with spare cores."),
    )
    no_owner = forms.BooleanField(
        required=False,
        label=_("Skip ownership and privileges (--no-owner)"),
        help_text=_("For a target that lacks the roles of the original database."),
    )

    location = forms.ChoiceField(
        required=False,
        label=_("Read the backup from"),
        help_text=_("If that file cannot be used, the restore falls back to the others and says so."),
    )

    def __init__(self, *args: Any, artifact: BackupArtifact, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.artifact = artifact
        sources = artifact_sources(artifact)
        if len(sources) > 1:
            location: Any = self.fields["location"]
            location.choices = [("", _("Any: the primary first, then the copies"))] + [
                (source.location_name, source.label) for source in sources
            ]
        else:
            del self.fields["location"]
        self.is_redis = artifact.format == BackupArtifact.Format.REDIS_SNAPSHOT
        choices = restore_target_datastores(kind=artifact.datastore.kind)
        self.fields["target_datastore"].queryset = choices  # type: ignore[attr-defined]
        for name in self.PG_ONLY if self.is_redis else self.REDIS_ONLY:
            del self.fields[name]
        if self.is_redis:
            target_kind: Any = self.fields["target_kind"]
            target_kind.choices = [
                (TargetKind.IN_PLACE, _("Its own datastore (in place)")),
                (TargetKind.DATASTORE, _("Another Redis datastore")),
            ]
            self.fields["target_datastore"].help_text = _("Only with “Another Redis datastore”.")
        else:
            self.fields["jobs"].initial = settings.RESTORE_JOBS
            self.fields["server_datastore"].queryset = choices  # type: ignore[attr-defined]
        self.impact: RestoreImpact | None = None

    def current_impact(self) -> RestoreImpact | None:
        """What the form's current choice would overwrite, from the submitted values when there are any (also
        for a form that is not valid yet: the page explains the choice while it is being made)."""
        if self.impact is not None:
            return self.impact
        if not self.is_bound:
            return None  # nothing chosen yet
        if not hasattr(self, "cleaned_data"):
            self.is_valid()
        data = self.cleaned_data
        kind = data.get("target_kind")
        return self._impact(kind, data) if kind else None

    def _impact(self, kind: str, data: dict[str, Any]) -> RestoreImpact | None:
        datastore = data.get("server_datastore") if kind == TargetKind.NEW_DATABASE else data.get("target_datastore")
        return restore_impact(
            artifact=self.artifact,
            target_kind=kind,
            target_datastore=datastore,
            new_database_name=data.get("new_database_name") or "",
            replace=bool(data.get("replace")),
            key_pattern=data.get("key_pattern") or "",
        )

    def clean_key_pattern(self) -> str:
        pattern: str = self.cleaned_data.get("key_pattern") or ""
        try:
            key_matcher(pattern)
        except KeyPatternError as exc:
            raise forms.ValidationError(str(exc)) from None
        return pattern

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("target_kind")
        if kind == TargetKind.DATASTORE and not data.get("target_datastore"):
            self.add_error("target_datastore", _("Choose the datastore to restore into."))
        if kind == TargetKind.NEW_DATABASE and not data.get("new_database_name") and "new_database_name" in data:
            self.add_error("new_database_name", _("Name the new database."))
        if kind:
            self.impact = self._impact(kind, data)
        impact = self.impact
        # The typed name is the last guard against restoring over the wrong database; the service checks it
        # too, this says it in the form, next to the field.
        typed = data.get("confirm", "").strip()
        if impact is not None and impact.protected and typed != impact.datastore.name:
            values = {"name": impact.datastore.name, "environment": impact.datastore.environment.name, "typed": typed}
            if typed:  # a wrong name is not a missing one: say it did not match
                message = _("“%(typed)s” does not match: type %(name)s exactly (it is in the protected environment "
                            "%(environment)s).")  # fmt: skip
            else:
                message = _("Type %(name)s exactly: it is in the protected environment %(environment)s.")
            self.add_error("confirm", message % values)
        return data

    def service_kwargs(self) -> dict[str, Any]:
        """The arguments of restore_run_request this form provides."""
        data = self.cleaned_data
        kind = data["target_kind"]
        if kind == TargetKind.NEW_DATABASE:
            datastore = data.get("server_datastore")
        elif kind == TargetKind.DATASTORE:
            datastore = data.get("target_datastore")
        else:
            datastore = None
        common = {
            "target_kind": kind,
            "target_datastore": datastore,
            "reason": data["reason"],
            "confirm": data.get("confirm", "").strip(),
            "location": data.get("location") or "",
        }
        if self.is_redis:
            return common | {"replace": data["replace"], "key_pattern": data["key_pattern"]}
        return common | {
            "new_database_name": data.get("new_database_name", "") if kind == TargetKind.NEW_DATABASE else "",
            "jobs": data["jobs"],
            "no_owner": data["no_owner"],
        }


class ApproveForm(forms.Form):
    comment = forms.CharField(
        required=False, max_length=2000, label=_("Comment (optional)"), widget=forms.Textarea(attrs={"rows": 2})
    )


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        label=_("Reason for rejecting"),
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": _("Say why you reject the restore: the requester reads it.")},
    )


class RunFilterForm(forms.Form):
    """The restore history's filter. An unknown status is ignored (the form is not valid), not an error page."""

    status = forms.ChoiceField(
        required=False,
        label=_("Status"),
        choices=[
            ("", _("Any status")),
            (ACTIVE_FILTER, _("Still going (any active status)")),
            *RestoreRun.Status.choices,
        ],
    )
    before = forms.CharField(required=False, widget=forms.HiddenInput)
    after = forms.CharField(required=False, widget=forms.HiddenInput)
