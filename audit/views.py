"""The audit log page and its CSV export. Read-only: the log is append-only and nobody edits it here."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from audit import selectors
from audit.forms import AuditFilterForm
from dr_console.http import HtmxRequest

VIEW_PERM = "audit.view_auditevent"


def _filter_form(request: HttpRequest) -> AuditFilterForm:
    form = AuditFilterForm(request.GET, object_types=selectors.audit_object_types())
    form.is_valid()  # invalid fields show their error and are left out of the filter
    return form


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
@vary_on_headers("HX-Request")
def event_list(request: HtmxRequest) -> HttpResponse:
    """Who did what, newest first, a page at a time; the filter and the pager swap the rows only."""
    form = _filter_form(request)
    filters = form.filters()
    page = selectors.audit_event_page(
        filters, before=form.cleaned_data.get("before", ""), after=form.cleaned_data.get("after", "")
    )
    export_query = request.GET.copy()
    for key in ("before", "after"):
        export_query.pop(key, None)
    context = {
        "form": form,
        "page": page,
        "export_query": export_query.urlencode(),
        "filtered": filters != selectors.AuditFilters(),
    }
    partial = bool(request.htmx) and not request.htmx.boosted
    return render(request, "audit/partials/event_rows.html" if partial else "audit/event_list.html", context)


class _Echo:
    """csv.writer writes into this and gets the line back, so rows can be streamed one at a time."""

    def write(self, value: str) -> str:
        return value


# A cell starting with one of these is a formula to a spreadsheet: usernames and reasons come from people.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def event_export(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered events (all of them, not one page) as CSV, streamed: memory stays flat for any size."""
    form = _filter_form(request)
    writer = csv.writer(_Echo())
    rows: Iterator[str] = (
        writer.writerow([_cell(v) for v in row]) for row in selectors.audit_event_export_rows(form.filters())
    )
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
    return response
