"""Which way an action came into the console (web, cli, api, system), and from which OS user and host.

A context variable: the web middleware (dr_console.http.ChannelMiddleware) sets it for each request, the
management-command base (dr_console.cli.OneLineCommand) for each command; workers, beat and anything else keep
the default, "system". audit_record reads it, so every audit event says which way its action came without each
caller passing it. A new thread starts with the default (threads do not inherit context variables), which is
what a worker's thread should say.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

WEB = "web"
CLI = "cli"
API = "api"
SYSTEM = "system"


@dataclass(frozen=True)
class Channel:
    """`via` is one of WEB, CLI, API, SYSTEM; on the command line, who ran it on which machine."""

    via: str = SYSTEM
    os_user: str = ""
    host: str = ""


_SYSTEM = Channel()  # frozen: safe to share as the default
_current: ContextVar[Channel] = ContextVar("dr_console_channel", default=_SYSTEM)  # noqa: B039


def channel_current() -> Channel:
    return _current.get()


@contextlib.contextmanager
def channel_set(channel: Channel) -> Iterator[Channel]:
    token = _current.set(channel)
    try:
        yield channel
    finally:
        _current.reset(token)


def cli_channel() -> Channel:
    """The command line's channel: the OS user (getpass.getuser(): LOGNAME, USER, then the password database) and
    the host name. Either may be unknown (a container without a passwd entry): then it is empty, not an error."""
    try:
        os_user = getpass.getuser()
    except Exception:  # getpwuid raises KeyError (or OSError) for a uid with no entry
        os_user = ""
    try:
        host = socket.gethostname()
    except OSError:
        host = ""
    return Channel(via=CLI, os_user=os_user[:150], host=host[:255])
