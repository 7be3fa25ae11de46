"""Secrets: the values of the environment variables that configuration names (datastore URLs, API tokens, webhook
URLs, the console's own DATABASE_URL and broker URL). The console reads them only through `secret_env`, and keeps
them out of everything it writes: log records (dr_console.text.UntrustedTextFilter masks them), error reports and
Django's debug page (dr_console.error_reports), in DEBUG and out of it.

A value is masked when the process has read it through `secret_env`, when its variable's name looks secret
(SECRET_NAME), or when a name source says configuration names it (`secret_names_source`: inventory registers the
variables its datastores and environments name, so a web process that never read PROD_DATABASE_URL still masks
it on its debug page). Variables are declared by their names: a token variable ends in _TOKEN, a webhook variable in
_WEBHOOK_URL, so that one kind can never be sent as another (inventory.models)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable

MASK = "********"
TOKEN_SUFFIX = "_TOKEN"
WEBHOOK_SUFFIX = "_WEBHOOK_URL"
# Variable names whose values are secret whoever names them (Django's own list, plus URLs and DSNs: a connection
# URL carries its password).
SECRET_NAME = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|COOKIE|AUTH|URL|DSN|CREDENTIAL", re.IGNORECASE)
# Shorter values are not masked: "1" or "on" in a variable would blank every digit or word of a report.
MIN_MASKED_LENGTH = 6
# A password in a URL whatever variable it came from: scheme://user:password@host.
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^@/?#\s]+)(?P<tail>@)", re.I)

_read_values: set[str] = set()
_lock = threading.Lock()
_name_sources: list[Callable[[], Iterable[str]]] = []


def secret_env(name: str) -> str:
    """The value of the environment variable `name` ("" if unset), remembered so that it is masked from now on."""
    value = os.environ.get(name, "")
    if len(value) >= MIN_MASKED_LENGTH and value not in _read_values:
        with _lock:
            _read_values.add(value)
    return value


def secret_names_source(source: Callable[[], Iterable[str]]) -> None:
    """Register a function naming configured secret variables, asked when an error report is drawn."""
    if source not in _name_sources:
        _name_sources.append(source)


def _values_of(names: Iterable[str]) -> set[str]:
    values = (os.environ.get(name, "") for name in names)
    return {value for value in values if len(value) >= MIN_MASKED_LENGTH}


def secret_values(*, configured: bool = False) -> list[str]:
    """Every value to mask, longest first (a URL before the password inside it). `configured` also asks the name
    sources, which may query the database: error reports do, log records do not (a query from inside logging
    could log, and would run on every line)."""
    values = set(_read_values) | _values_of(name for name in os.environ if SECRET_NAME.search(name))
    if configured:
        for source in _name_sources:
            try:
                values |= _values_of(source())
            except Exception:  # noqa: BLE001 - a report of a broken database must still be drawn, masked as it can
                continue
    return sorted(values, key=len, reverse=True)


def mask_secrets(text: str, values: list[str] | None = None) -> str:
    """`text` with every secret value, and any password inside a URL, replaced by MASK."""
    for value in secret_values() if values is None else values:
        if value in text:
            text = text.replace(value, MASK)
    return URL_PASSWORD.sub(lambda match: f"{match['head']}{MASK}{match['tail']}", text)
