"""Reads of the inventory shared by the pages."""

from __future__ import annotations

from inventory.models import Datastore

DATASTORE_SUGGESTIONS = 20


def datastore_name_suggestions(typed: str, limit: int = DATASTORE_SUGGESTIONS) -> list[Datastore]:
    """Datastores whose name contains `typed` (any case), those that start with it first, then by name: what a
    filter field suggests as one types. At most `limit`, whatever the size of the fleet."""
    typed = typed.strip()
    matches = Datastore.objects.select_related("environment").order_by("name")
    if not typed:
        return list(matches[:limit])
    starting = list(matches.filter(name__istartswith=typed)[:limit])
    if len(starting) < limit:
        starting += matches.filter(name__icontains=typed).exclude(name__istartswith=typed)[: limit - len(starting)]
    return starting
