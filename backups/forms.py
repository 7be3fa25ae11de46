from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict
from django.urls import reverse_lazy
from django.utils.translation import gettext_lazy as _

from backups.models import BackupArtifact
from backups.retention import RetentionPolicy
from backups.selectors import BackupArtifactFilters
from dr_console.history import check_day_range
from inventory.models import Datastore, Environment

DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


DATASTORE_OPTIONS_ID = "datastore-options"


class DatastoreNameField(forms.CharField):
    """A datastore typed by its name, with the names that match suggested as one types (backups:datastore_options
    fills the input's datalist), rather than a select of every datastore: a fleet has hundreds, and the page would
    carry them all. Cleans to the Datastore; an unknown name is an error on the field."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", Datastore._meta.get_field("name").max_length)
        super().__init__(**kwargs)
        self.widget.attrs.update(
            {
                "type": "search",
                "list": DATASTORE_OPTIONS_ID,
                "autocomplete": "off",
                "placeholder": _("All"),
                "hx-get": reverse_lazy("backups:datastore_options"),
                "hx-trigger": "input changed delay:200ms, focus once",
                "hx-target": f"#{DATASTORE_OPTIONS_ID}",
                "hx-swap": "innerHTML",
                "hx-push-url": "false",
            }
        )

    def clean(self, value: Any) -> Datastore | None:
        name = super().clean(value)
        if not name:
            return None
        datastore = Datastore.objects.select_related("environment").filter(name=name).first()
        if datastore is None:
            raise ValidationError(_("No datastore is named “%(name)s”."), code="unknown", params={"name": name})
        return datastore


class BackupArtifactFilterForm(forms.Form):
    """The history page's filters, read from the query string. Environments and datastores go by name so a
    shared URL stays readable. A wrong value is reported on its field and ignored, never fatal."""

    FILTER_FIELDS = ("environment", "datastore", "status", "verification", "date_from", "date_to")

    environment = forms.ModelChoiceField(
        label=_("Environment"),
        queryset=Environment.objects.all(),
        to_field_name="name",
        required=False,
        empty_label=_("All"),
    )
    datastore = DatastoreNameField(label=_("Datastore"), required=False)
    status = forms.ChoiceField(
        label=_("Status"), choices=[("", _("All")), *BackupArtifact.Status.choices], required=False
    )
    verification = forms.ChoiceField(
        label=_("Verification"), choices=[("", _("All")), *BackupArtifact.Verification.choices], required=False
    )
    date_from = forms.DateField(label=_("From"), required=False, widget=DATE_WIDGET)
    date_to = forms.DateField(label=_("To"), required=False, widget=DATE_WIDGET)
    # The pager's keyset cursors. The filter form does not send them, so changing a filter starts from the newest.
    before = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    after = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        check_day_range(self, "date_from", "date_to")
        return cleaned

    def filters(self) -> BackupArtifactFilters:
        self.is_valid()  # fills cleaned_data with the valid fields only
        data = self.cleaned_data
        return BackupArtifactFilters(
            environment=data.get("environment"),
            datastore=data.get("datastore"),
            status=data.get("status") or "",
            verification=data.get("verification") or "",
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
        )

    def cursor(self, name: str) -> str:
        self.is_valid()
        return str(self.cleaned_data.get(name) or "")

    def filter_query(self, *, with_cursor: bool = False) -> str:
        """The query string of the valid, non-empty filters (and the cursor, if asked): the pager's links add
        their own cursor to it, and the URL pushed to the browser's history is the page's with it."""
        self.is_valid()
        query = QueryDict(mutable=True)
        for name in (*self.FILTER_FIELDS, "before", "after") if with_cursor else self.FILTER_FIELDS:
            value = self.data.get(name, "")
            if value and name not in self.errors:
                query[name] = value
        return query.urlencode()


class RetentionPolicyForm(forms.Form):
    """A datastore's retention policy, as the datastore page previews and saves it."""

    keep_last = forms.IntegerField(label=_("Keep the newest"), min_value=0, max_value=1000, initial=0)
    keep_daily = forms.IntegerField(label=_("Daily"), min_value=0, max_value=1000, initial=0)
    keep_weekly = forms.IntegerField(label=_("Weekly"), min_value=0, max_value=1000, initial=0)
    keep_monthly = forms.IntegerField(label=_("Monthly"), min_value=0, max_value=1000, initial=0)

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy(**self.cleaned_data)
