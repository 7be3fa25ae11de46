"""The small formatting helpers of the backup pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import translation

from dr_console.formatting import duration_short


@pytest.mark.parametrize(
    ("language", "seconds", "shown"),
    [("en", 6.24, "6.2 s"), ("es", 6.24, "6,2 s"), ("en", 89, "1 min 29 s"), ("en", 3 * 86400 + 7200, "3 d 2 h")],
)
def test_durations_are_short_and_use_the_languages_decimal_separator(language: str, seconds: float, shown: str) -> None:
    with translation.override(language):
        assert duration_short(timedelta(seconds=seconds)) == shown
