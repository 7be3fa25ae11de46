"""Drill settings and the RTO target from `loadconfig`, all or nothing like the rest of the file."""

from __future__ import annotations

from datetime import timedelta

import pytest

from inventory.config import ConfigError, config_apply
from inventory.models import Datastore

pytestmark = pytest.mark.django_db

ENTRY = {"name": "prod-db", "environment": "prod", "kind": "postgres", "url_env": "PROD_DATABASE_URL"}


def load(**datastore: object) -> Datastore:
    config_apply({"environments": {"prod": {}}, "datastores": [{**ENTRY, **datastore}]})
    return Datastore.objects.get(name="prod-db")


def test_loadconfig_sets_the_drill_settings_and_the_rto_target() -> None:
    store = load(
        drill_schedule="0 5 * * 0",
        drill_server_url_env="DRILL_SERVER_URL",
        drill_probes=["SELECT count(*) > 0 FROM documents", " SELECT true "],
        rto_minutes=30,
    )
    assert store.drill_schedule == "0 5 * * 0"
    assert store.drill_url_env == "DRILL_SERVER_URL"
    assert store.drill_probe_list == ["SELECT count(*) > 0 FROM documents", "SELECT true"]
    assert store.rto_target == timedelta(minutes=30)


def test_keys_left_out_go_back_to_their_defaults() -> None:
    load(drill_schedule="0 5 * * 0", drill_probes=["SELECT true"], rto_minutes=30)
    store = load()
    assert (store.drill_schedule, store.drill_probes, store.rto_target) == ("", "", timedelta(hours=1))
    assert store.drill_url_env == "PROD_DATABASE_URL"  # the datastore's own server


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("drill_schedule", "0 5 * *", "datastores[0] (prod-db).drill_schedule: '0 5 * *' has 4 fields"),
        ("drill_probes", "SELECT true", "datastores[0] (prod-db).drill_probes: expected list, got 'SELECT true'"),
        ("drill_probes", ["SELECT\ntrue"], "datastores[0] (prod-db).drill_probes: expected a list of one-line SQL"),
        ("drill_server_url_env", "postgres://x", "datastores[0] (prod-db).drill_server_url_env: Use the name of"),
        ("rto_minutes", 0, "datastores[0] (prod-db).rto_minutes: must be 1 to 10080 minutes, got 0"),
    ],
)
def test_a_bad_drill_setting_is_named_and_nothing_is_applied(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**{key: value})
    assert any(error.startswith(message) for error in caught.value.errors), caught.value.errors
    assert not Datastore.objects.exists()
