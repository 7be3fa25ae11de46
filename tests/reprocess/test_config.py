"""The reprocess query and drill probes, refused when saved (loadconfig, the admin) if they hold more than one
statement. The run-time guard is the protocol (tests/backups/test_readonly.py); this is the early, clear word."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from inventory.config import ConfigError, config_apply
from inventory.models import Datastore, Environment
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SEVERAL = "SELECT workspace_id, id AS document_id FROM documents; COMMIT; UPDATE documents SET status = 'READY'"
SAID = "the query holds more than one statement; the console runs exactly one (remove the ';' and what follows it)"
DATASTORE = {"name": "prod-db", "environment": "prod", "kind": "postgres", "url_env": "PROD_DATABASE_URL"}


def test_loadconfig_refuses_a_reprocess_query_of_several_statements_and_applies_nothing() -> None:
    with pytest.raises(ConfigError) as caught:
        config_apply({"environments": {"prod": {"reprocess_query": SEVERAL}}})
    assert caught.value.errors == [f"environments.prod.reprocess_query: {SAID}"]
    assert not Environment.objects.exists()
    assert AuditEvent.objects.get(action=AuditEvent.Action.CONFIG_REFUSED).details["errors"] == caught.value.errors


def test_loadconfig_refuses_a_drill_probe_of_several_statements_naming_it() -> None:
    probes = ["SELECT true;", "SELECT true; DELETE FROM documents"]
    with pytest.raises(ConfigError) as caught:
        config_apply({"environments": {"prod": {}}, "datastores": [{**DATASTORE, "drill_probes": probes}]})
    assert caught.value.errors == [f"datastores[0] (prod-db).drill_probes: probe 2: {SAID}"]
    assert not Datastore.objects.exists()


def test_one_statement_with_semicolons_in_strings_and_a_trailing_one_is_accepted() -> None:
    query = "SELECT workspace_id, id AS document_id FROM documents WHERE title <> ';' ;"
    config_apply({"environments": {"prod": {"reprocess_query": query}}})
    assert Environment.objects.get(name="prod").reprocess_query == query


def test_loadconfig_sets_the_read_only_role_of_the_reprocess_query_and_refuses_a_url() -> None:
    config_apply({"environments": {"prod": {"reprocess_query_url_env": "PROD_READER_URL"}}})
    assert Environment.objects.get(name="prod").reprocess_query_url_env == "PROD_READER_URL"
    with pytest.raises(ConfigError) as caught:
        config_apply({"environments": {"prod": {"reprocess_query_url_env": "postgresql://reader@db/app"}}})
    assert caught.value.errors[0].startswith("environments.prod.reprocess_query_url_env: Use the name of")


@pytest.mark.parametrize(
    ("language", "said"),
    [
        ("en", "the query holds more than one statement"),
        ("es", "la consulta contiene más de una sentencia"),
    ],
)
def test_the_admin_refuses_it_in_the_readers_language(client: Client, settings: Any, language: str, said: str) -> None:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    response = client.post(
        reverse("admin:inventory_environment_add"),
        {
            "name": "staging",
            "required_approvals": 1,
            "safety_backup": "unknown",
            "reprocess_concurrency": 16,
            "reprocess_query": SEVERAL,
        },
    )
    assert response.status_code == 200
    assert said in response.content.decode()
    assert not Environment.objects.exists()
