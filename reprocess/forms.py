"""The form that builds a reprocess batch. It checks what a person chose; the services build the batch."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

from inventory.models import Environment
from reprocess.models import ReprocessBatch, ReprocessItem

Source = ReprocessBatch.Source


class ReprocessBatchForm(forms.Form):
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(),
        label=_("Environment"),
        empty_label=_("Choose an environment…"),
        help_text=_("The application whose documents are sent again."),
    )
    source = forms.ChoiceField(
        label=_("Which documents"),
        choices=[
            (Source.QUERY, _("The documents the environment's query returns (default: PENDING or PROCESSING)")),
            (Source.CSV, _("A list of workspace_id,document_id (paste or upload a CSV)")),
            (Source.FAILED_JOBS, _("The documents of the failed RQ jobs in the environment's queues")),
        ],
        initial=Source.QUERY,
        widget=forms.RadioSelect,
    )
    csv_text = forms.CharField(
        label=_("Paste the CSV"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": "workspace_id,document_id\nws-1,1042\nws-1,1043"}),
        help_text=_("One document per line: workspace_id,document_id. A header line is optional."),
    )
    csv_file = forms.FileField(label=_("Or upload a CSV file"), required=False)

    def __init__(self, *args: Any, upload_refused: bool = False, **kwargs: Any) -> None:
        """`upload_refused`: the request's upload was cut off at UPLOAD_MAX_BYTES (dr_console.uploads), so the
        file is missing from the data rather than absent."""
        super().__init__(*args, **kwargs)
        self.upload_refused = upload_refused

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        too_large = _("The file is larger than %(size)s; nothing of it was kept. Split it.") % {
            "size": filesizeformat(settings.UPLOAD_MAX_BYTES)
        }
        if self.upload_refused:
            self.add_error("csv_file", too_large)
            return cleaned
        if cleaned.get("source") != Source.CSV:
            return cleaned
        upload = cleaned.get("csv_file")
        text = cleaned.get("csv_text", "")
        if upload and text.strip():
            raise forms.ValidationError(_("Paste a CSV or upload a file, not both."))
        if upload:
            if upload.size > settings.UPLOAD_MAX_BYTES:
                raise forms.ValidationError(too_large)
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError(_("The file is not UTF-8 text; save it as a UTF-8 CSV.")) from None
            cleaned["csv_name"] = upload.name
        elif not text.strip():
            raise forms.ValidationError(_("Paste the CSV or choose a file to upload."))
        else:
            cleaned["csv_name"] = ""
        cleaned["csv_content"] = text
        return cleaned


class ItemFilterForm(forms.Form):
    status = forms.ChoiceField(
        required=False,
        label=_("Show"),
        choices=[("", _("Not accepted first")), *ReprocessItem.Status.choices],
    )
