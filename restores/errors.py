"""Refusals of the restore workflow: nothing was created or changed, and the message says why."""

from __future__ import annotations


class RestoreRefused(Exception):
    """A restore request that cannot be accepted; nothing was created."""


class ApprovalRefused(Exception):
    """An approval, rejection or cancel that is not allowed; nothing was changed."""
