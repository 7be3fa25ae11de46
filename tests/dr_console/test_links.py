"""object_url is reverse() for one id or slug: the same URL, for every page the dashboard links to."""

from __future__ import annotations

import pytest
from django.urls import NoReverseMatch, reverse

from dr_console.links import object_url


@pytest.mark.parametrize(
    ("name", "argument"),
    [
        ("backups:artifact_detail", 42),
        ("backups:artifact_detail", 9081726354),  # the placeholder itself
        ("overview:datastore_row", 7),
        ("overview:datastore_chart", 7),
        ("overview:datastore_backup", 7),
        ("overview:datastore_detail", "prod-db"),
        ("overview:datastore_detail", "db_1.eu-west"),
    ],
)
def test_object_url_is_what_reverse_gives(name: str, argument: int | str) -> None:
    assert object_url(name, argument) == reverse(name, args=[argument])


def test_an_argument_that_needs_quoting_or_checking_goes_through_reverse() -> None:
    assert object_url("overview:datastore_detail", "a b") == reverse("overview:datastore_detail", args=["a b"])
    with pytest.raises(NoReverseMatch):
        object_url("backups:artifact_detail", "not/an/id")


def test_a_url_without_one_argument_is_refused() -> None:
    with pytest.raises(NoReverseMatch, match="does not take one id or slug argument"):
        object_url("overview:dashboard", 1)


def test_the_script_prefix_is_honoured() -> None:
    from django.urls import set_script_prefix

    set_script_prefix("/console/")
    try:
        assert (
            object_url("backups:artifact_detail", 3)
            == "/console/backups/3/"
            == reverse("backups:artifact_detail", args=[3])
        )
    finally:
        set_script_prefix("/")
