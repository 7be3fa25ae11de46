"""Error reports (Django's debug page in DEBUG, error mail and 500 logs out of it) with secrets masked: the console's
exception reporter and filter (settings.DEFAULT_EXCEPTION_REPORTER, DEFAULT_EXCEPTION_REPORTER_FILTER)."""

from __future__ import annotations

from typing import Any

from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from dr_console.secrets import SECRET_NAME, mask_secrets, secret_values


def _masked(data: Any, values: list[str]) -> Any:
    if isinstance(data, str):
        return mask_secrets(str(data), values)
    if isinstance(data, dict):
        return {key: _masked(value, values) for key, value in data.items()}
    if type(data) in (list, tuple):  # not a named tuple, whose fields would not survive
        return type(data)(_masked(item, values) for item in data)
    return data


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, with URLs and DSNs among the settings it hides, and active in DEBUG too: the variables of
    functions marked @sensitive_variables are hidden on the debug page as well."""

    hidden_settings = SECRET_NAME

    def is_active(self, request: Any) -> bool:
        return True


class MaskingExceptionReporter(ExceptionReporter):
    """Every text of the report (the exception, frame variables, request, settings, environment) with the secret
    values masked, whichever variable or local holds them: what DEBUG's page shows and what error mail carries."""

    def get_traceback_data(self) -> dict[str, Any]:
        data = super().get_traceback_data()
        values = secret_values(configured=True)
        masked: dict[str, Any] = _masked(data, values)  # frame variables are (name, repr text) pairs by now
        return masked
