"""Refusals of the restore workflow: nothing was created or changed, and the message says why."""

from __future__ import annotations


class RestoreRefused(Exception):
    """A restore request that cannot be accepted; nothing was created. `field` names the request's field at fault
    (the form shows the message next to it), when one is."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class ApprovalRefused(Exception):
    """An approval, rejection or cancel that is not allowed; nothing was changed."""
