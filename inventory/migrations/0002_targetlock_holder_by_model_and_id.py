"""Target locks name their holder by model and id instead of a display label ("restore #3")."""

from django.db import migrations, models

LABELS = {"backup": "backups.backupartifact", "restore": "restores.restorerun"}


def holder_from_label(apps, schema_editor):
    TargetLock = apps.get_model("inventory", "TargetLock")
    for lock in TargetLock.objects.all():
        kind, _separator, number = lock.holder.partition(" #")
        if kind in LABELS and number.isdigit():
            lock.holder_model, lock.holder_id = LABELS[kind], int(number)
            lock.save(update_fields=["holder_model", "holder_id"])
        else:  # no job of the console holds it: the reaper would release it anyway
            lock.delete()


def label_from_holder(apps, schema_editor):
    TargetLock = apps.get_model("inventory", "TargetLock")
    kinds = {model: kind for kind, model in LABELS.items()}
    for lock in TargetLock.objects.all():
        lock.holder = f"{kinds.get(lock.holder_model, lock.holder_model)} #{lock.holder_id}"
        lock.save(update_fields=["holder"])


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="targetlock",
            name="holder_model",
            field=models.CharField(
                default="",
                help_text='The job model holding it, e.g. "backups.backupartifact".',
                max_length=64,
                verbose_name="holder model",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="targetlock",
            name="holder_id",
            field=models.PositiveBigIntegerField(default=0, verbose_name="holder id"),
            preserve_default=False,
        ),
        migrations.RunPython(holder_from_label, label_from_holder),
        migrations.RemoveField(model_name="targetlock", name="holder"),
    ]
