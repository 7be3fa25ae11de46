#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dr_console.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import OperationalError

    # A configuration mistake or an unreachable console database is one line, not a traceback.
    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        fail(f"configuration error: {exc}")
    except OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(f"cannot use the console's database (DATABASE_URL): {first}")


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2; with --json also the one JSON document a script reads on stdout."""
    sys.stderr.write(f"{message}\n")
    if "--json" in sys.argv[2:]:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
    sys.exit(2)


if __name__ == "__main__":
    main()
