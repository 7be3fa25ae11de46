"""The dashboard's filters: a part of a datastore's name, an environment, what needs attention or not. A GET
form: the filtered dashboard is a link an operator can share."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from inventory.models import Environment
from overview.selectors import DashboardFilters, DashboardState


class DashboardFilterForm(forms.Form):
    q = forms.CharField(label=_("Name"), max_length=64, required=False, strip=True)
    environment = forms.ChoiceField(label=_("Environment"), required=False)
    state = forms.ChoiceField(
        label=_("Show"),
        required=False,
        choices=[
            (DashboardState.ALL, _("Every datastore")),
            (DashboardState.ATTENTION, _("Needing attention")),
            (DashboardState.HEALTHY, _("Healthy")),
        ],
    )
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        names = Environment.objects.filter(datastores__isnull=False).distinct().values_list("name", flat=True)
        environment = self.fields["environment"]
        assert isinstance(environment, forms.ChoiceField)
        environment.choices = [("", _("Every environment")), *((name, name) for name in names)]

    def filters(self) -> DashboardFilters:
        data = self.cleaned_data
        return DashboardFilters(q=data["q"], environment=data["environment"], state=DashboardState(data["state"] or ""))

    def page_number(self) -> int:
        value = self.cleaned_data.get("page") if self.is_bound and self.is_valid() else None
        return value or 1
