from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class PersonalToken(models.Model):
    """A person's credential for the command line (DR_CONSOLE_TOKEN). Only the sha256 of the token is stored: the
    token itself is printed once, when it is made, and the console cannot show it again."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, related_name="personal_tokens", verbose_name=_("user")
    )
    name = models.CharField(_("name"), max_length=100, blank=True, help_text=_("What it is for, e.g. a laptop."))
    # sha256 of the whole token, hex. The token carries 256 random bits, so a plain hash is enough (a slow password
    # hash protects guessable secrets); the digest is what a presented token is looked up by.
    digest = models.CharField(_("digest"), max_length=64, unique=True, editable=False)
    hint = models.CharField(
        _("hint"), max_length=16, editable=False, help_text=_("The token's first characters, to tell tokens apart.")
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    created_by = models.CharField(_("created by"), max_length=150)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("personal token")
        verbose_name_plural = _("personal tokens")
        ordering = ["user__username", "-created_at"]

    def __str__(self) -> str:
        return f"token #{self.pk} ({self.hint}…) of {self.user.get_username()}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired else "active"
