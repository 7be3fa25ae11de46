"""What the job commands (backup, verify, restore) share: --wait/--inline/--json, waiting for a job row,
and errors as one clear line with a non-zero exit status."""

from __future__ import annotations

import getpass
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models


class OneLineCommand(BaseCommand):
    """A usage mistake on the command line is one line and exit status 2, not the whole usage text."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        original = parser.error

        def error(message: str) -> NoReturn:
            if not parser.called_from_command_line:
                original(message)  # call_command: Django raises CommandError
            self.stderr.write(f"error: {message} (see `manage.py {subcommand} --help`)")
            sys.exit(2)

        parser.error = error  # type: ignore[method-assign]
        return parser


class JobCommand(OneLineCommand):
    """Base for commands that start a job on a worker and optionally wait for it."""

    job_noun = "job"
    _finished = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--wait", action="store_true", help="Wait until the worker has finished the job.")
        parser.add_argument(
            "--inline",
            action="store_true",
            help="Run the job in this process instead of on a worker (no broker needed).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object describing the result.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            metavar="SECONDS",
            help="With --wait: give up waiting after this long (the job goes on).",
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        # Job progress is logged for workers; on the command line the command's own lines say it all.
        if options.get("verbosity", 1) < 2:
            logging.getLogger().setLevel(logging.WARNING)
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if options.get("json") and not self._finished:  # scripts always get one JSON object
                self.stdout.write(json.dumps({"error": str(exc)}))
            raise

    @staticmethod
    def trigger_label() -> str:
        try:
            return f"cli:{getpass.getuser()}"
        except Exception:
            return "cli"

    def finish(self, options: dict[str, Any], summary: dict[str, Any], text: str, failure: str = "") -> None:
        """Print the outcome: JSON on stdout with --json, else `text`; a failure is one line on stderr and
        exit status 1."""
        self._finished = True
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2, default=str))
        elif not failure:
            self.stdout.write(text)
        if failure:
            raise CommandError(failure)

    def warn_if_no_worker(self, options: dict[str, Any]) -> None:
        """A job waits in the queue until a worker takes it; say so instead of hanging silently."""
        if options["inline"]:
            return
        from dr_console.celery import app

        try:
            replies = app.control.ping(timeout=1.0)
        except Exception:
            return  # some transports (the embedded filesystem broker) cannot broadcast: nothing to tell
        if not replies:
            self.stderr.write(
                "warning: no Celery worker answered a ping; the job waits in the queue until one starts "
                "(`make run` starts one, or run `celery -A dr_console worker`)"
            )

    def wait_for(
        self,
        options: dict[str, Any],
        load: Callable[[], models.Model],
        done: Callable[[Any], bool],
        describe: Callable[[Any], str],
    ) -> Any:
        """Poll the job row until `done(row)`. Progress goes to stderr so --json output stays clean."""
        deadline = None if options["timeout"] is None else time.monotonic() + options["timeout"]
        last = ""
        try:
            while True:
                row = load()
                if done(row):
                    return row
                state = describe(row)
                if state != last and not options["json"]:
                    self.stderr.write(state)
                    last = state
                if deadline is not None and time.monotonic() > deadline:
                    raise CommandError(
                        f"{state}: still not finished after {options['timeout']:g} s; the {self.job_noun} goes on",
                        returncode=3,
                    )
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stderr.write(f"\nstopped waiting; the {self.job_noun} goes on on the worker")
            sys.exit(130)


def user_by_name(username: str) -> Any:
    """The console user a command acts as (`--as USERNAME`)."""
    from django.contrib.auth import get_user_model

    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no console user named {username!r} (create one in the admin)") from None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
