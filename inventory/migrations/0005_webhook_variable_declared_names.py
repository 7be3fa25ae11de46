"""Webhook URLs leave the console's database: a Slack webhook URL carries its token, and secrets live in environment
variables named by configuration. An environment that had a URL now names PROD_WEBHOOK_URL (its name, upper case);
the URLs are written to var/webhook-urls.env (mode 0600), to be moved into the workers' environment (.env), and the
file deleted. Nothing is lost, and nothing secret is printed."""

import os
import sys
from pathlib import Path

from django.conf import settings

import django.core.validators
from django.db import migrations, models


def webhook_urls_out_of_the_database(apps, schema_editor):
    Environment = apps.get_model("inventory", "Environment")
    lines = []
    for environment in Environment.objects.exclude(webhook_url=""):
        name = "".join(c if c.isalnum() else "_" for c in environment.name.upper()) + "_WEBHOOK_URL"
        environment.webhook_url_env = name
        environment.save(update_fields=["webhook_url_env"])
        lines.append(f"{name}={environment.webhook_url}\n")
    if not lines:
        return
    path = Path(settings.VAR_DIR) / "webhook-urls.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as file:
        file.writelines(lines)
    sys.stderr.write(
        f"\n  {len(lines)} webhook URL(s) moved out of the console's database into {path} (mode 0600): add those "
        "lines to the workers' environment (.env), restart them, then delete the file.\n"
    )


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0004_target_identity'),
    ]

    operations = [
        migrations.AddField(
            model_name='environment',
            name='webhook_url_env',
            field=models.CharField(blank=True, help_text='Optional: name of the environment variable holding a webhook URL (e.g. PROD_WEBHOOK_URL) that notifications are also posted to as JSON (Slack-compatible). The URL is never stored, shown or logged.', max_length=128, validators=[django.core.validators.RegexValidator('^[A-Z_][A-Z0-9_]*$', 'Use the name of an environment variable (A-Z, 0-9, _), not a URL.'), django.core.validators.RegexValidator('_WEBHOOK_URL\\Z', "A webhook variable's name ends in _WEBHOOK_URL, e.g. PROD_WEBHOOK_URL.")], verbose_name='webhook URL environment variable'),
        ),
        migrations.RunPython(webhook_urls_out_of_the_database, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='environment',
            name='webhook_url',
        ),
        migrations.AlterField(
            model_name='datastore',
            name='drill_server_url_env',
            field=models.CharField(blank=True, help_text="Name of the environment variable holding the URL of the server drills restore into (a scratch database is created there and dropped after). Empty: the datastore's own server.", max_length=128, validators=[django.core.validators.RegexValidator('^[A-Z_][A-Z0-9_]*$', 'Use the name of an environment variable (A-Z, 0-9, _), not a URL.'), django.core.validators.RegexValidator('(_TOKEN|_WEBHOOK_URL)\\Z', 'That name is declared as a token or webhook variable (it ends in _TOKEN or _WEBHOOK_URL), not a URL.', inverse_match=True)], verbose_name='drill server URL environment variable'),
        ),
        migrations.AlterField(
            model_name='datastore',
            name='url_env',
            field=models.CharField(help_text='Name of the environment variable holding the connection URL, e.g. PROD_DATABASE_URL. The URL itself is never stored, shown or logged by the console.', max_length=128, validators=[django.core.validators.RegexValidator('^[A-Z_][A-Z0-9_]*$', 'Use the name of an environment variable (A-Z, 0-9, _), not a URL.'), django.core.validators.RegexValidator('(_TOKEN|_WEBHOOK_URL)\\Z', 'That name is declared as a token or webhook variable (it ends in _TOKEN or _WEBHOOK_URL), not a URL.', inverse_match=True)], verbose_name='URL environment variable'),
        ),
        migrations.AlterField(
            model_name='environment',
            name='api_token_env',
            field=models.CharField(blank=True, help_text="Name of the environment variable holding the application's bearer token, e.g. PROD_API_TOKEN. The token itself is never stored, shown or logged.", max_length=128, validators=[django.core.validators.RegexValidator('^[A-Z_][A-Z0-9_]*$', 'Use the name of an environment variable (A-Z, 0-9, _), not a URL.'), django.core.validators.RegexValidator('_TOKEN\\Z', "A token variable's name ends in _TOKEN, e.g. PROD_API_TOKEN, so that no other secret is sent as a token.")], verbose_name='API token environment variable'),
        ),
    ]
