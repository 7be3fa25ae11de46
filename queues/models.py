from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class RqQueue(models.Model):
    """No table: the RQ queues live in the application's Redis. This model only carries the permission to requeue
    their failed jobs (reading them needs inventory.view_datastore, like every other page about a datastore)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("requeue_job", _("Can requeue failed jobs of the application's RQ queues"))]
