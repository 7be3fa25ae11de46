"""The audit log's hash chain (audit.chain): two fields, the PostgreSQL function that serializes appends, and the
events already in the log chained in id order, the first linking to GENESIS.

Chaining the old events attests them as they are at this migration: an edit made before it cannot show, anything
after it can. `manage.py audit verify` walks all of them. The append-only triggers are off only for this update,
inside this migration's transaction. Stop the console's writers while it runs (docker-compose.yml starts them only
once `migrate` has finished): an event written meanwhile by the old code would carry no hash."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

from audit.chain import GENESIS, POSTGRES_HEAD_FUNCTION, event_hash
from audit.triggers import sqlite_append_only_install

BATCH = 1000


def chain_existing(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    AuditEvent = apps.get_model("audit", "AuditEvent")
    events = AuditEvent.objects.using(connection.alias)
    if connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_HEAD_FUNCTION)
        schema_editor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_update")
    elif connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_auditevent_no_update")
    prev_hash, last_id = GENESIS, 0
    while batch := list(events.filter(pk__gt=last_id).order_by("pk")[:BATCH]):
        links = []
        for event in batch:
            links.append((prev_hash, prev_hash := event_hash(event, prev_hash), event.pk))
        with connection.cursor() as cursor:  # executemany: pipelined by psycopg, 4x faster than bulk_update here
            cursor.executemany("UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s", links)
        last_id = batch[-1].pk
    if connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_update")
    sqlite_append_only_install(apps, schema_editor)


def unchain(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS audit_auditevent_chain_head()")


class Migration(migrations.Migration):
    dependencies = [("audit", "0014_refuse_truncate")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, default="", editable=False, max_length=64, verbose_name="hash"),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(
                blank=True, default="", editable=False, max_length=64, verbose_name="previous hash"
            ),
        ),
        migrations.RunPython(chain_existing, unchain),
    ]
