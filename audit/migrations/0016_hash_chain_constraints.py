"""One successor per event, one event per hash (audit.models), once 0014 has chained the old events. On SQLite
adding a constraint rebuilds the table, which drops its triggers: they are installed again (audit.triggers)."""

from __future__ import annotations

from django.db import migrations, models

from audit.triggers import sqlite_append_only_install


class Migration(migrations.Migration):
    dependencies = [("audit", "0015_hash_chain")]

    operations = [
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.UniqueConstraint(fields=("prev_hash",), name="auditevent_one_successor"),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.UniqueConstraint(fields=("hash",), name="auditevent_hash_unique"),
        ),
        migrations.RunPython(sqlite_append_only_install, migrations.RunPython.noop),
    ]
