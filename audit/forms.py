"""The audit log's filter form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.apps import apps
from django.utils.translation import gettext_lazy as _

from audit.models import AuditEvent
from audit.selectors import AuditFilters
from dr_console.history import check_day_range


def object_type_label(object_type: str) -> str:
    """ "restores.restorerun" -> "restore run" (the model's own verbose name, translated)."""
    try:
        return str(apps.get_model(object_type)._meta.verbose_name)
    except (LookupError, ValueError):
        return object_type


class AuditFilterForm(forms.Form):
    """Narrows the log; every field is optional. A field that does not validate is shown with its error and
    left out of the filter, never silently replaced."""

    action = forms.ChoiceField(required=False, label=_("Action"), choices=[])
    actor = forms.CharField(
        required=False, max_length=150, label=_("Actor"), widget=forms.TextInput(attrs={"type": "search"})
    )
    object_type = forms.ChoiceField(required=False, label=_("Object type"), choices=[])
    via = forms.ChoiceField(required=False, label=_("Via"), choices=[("", _("Any way")), *AuditEvent.Via.choices])
    since = forms.DateField(required=False, label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
    before = forms.CharField(required=False, widget=forms.HiddenInput)
    after = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, object_types: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [("", _("Any action")), *AuditEvent.Action.choices]  # type: ignore[attr-defined]
        self.fields["object_type"].choices = [  # type: ignore[attr-defined]
            ("", _("Any type")),
            *((value, object_type_label(value)) for value in object_types),
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        check_day_range(self, "since", "until")
        return data

    def filters(self) -> AuditFilters:
        """The valid part of the submitted filter (call is_valid() first)."""
        data = self.cleaned_data
        return AuditFilters(
            action=data.get("action", ""),
            actor=(data.get("actor") or "").strip(),
            object_type=data.get("object_type", ""),
            via=data.get("via", ""),
            since=data.get("since"),
            until=data.get("until"),
        )
