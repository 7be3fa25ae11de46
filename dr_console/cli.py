"""What the job commands (backup, verify, restore) share: --wait/--inline/--json, waiting for a job row,
and errors as one clear line with a non-zero exit status.

With --json, stdout is exactly one JSON document, whatever else happens: the outcome, or `{"error": ...}` with a
non-zero exit status. Anything else that writes to stdout while the command runs goes to stderr.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, NoReturn, TextIO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import OperationalError, models

from dr_console.channel import channel_set, cli_channel


@contextlib.contextmanager
def stdout_kept_for_json(*, process_stdout: bool) -> Iterator[TextIO | None]:
    """While a --json command runs, everything else written to stdout goes to stderr: print() and Python libraries
    (Django's console mail backend wrote a whole email there, before the JSON), and, when the command writes to the
    process's own stdout, child processes too: file descriptor 1 points at stderr meanwhile. Yields a stream on the
    real stdout for the JSON document when descriptor 1 was moved, else None (the command's stdout stays the
    document's: call_command with stdout=..., or a test capturing sys.stdout)."""
    process = sys.__stdout__
    with contextlib.redirect_stdout(sys.stderr):
        if not process_stdout or process is None:
            yield None
            return
        process.flush()
        document = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
        try:
            yield document
        finally:
            process.flush()  # what a library buffered for descriptor 1 meanwhile still goes to stderr
            document.flush()
            os.dup2(document.fileno(), 1)
            document.close()


def json_asked() -> bool:
    """`--json` is on the command line (for errors raised before the options are parsed)."""
    return "--json" in sys.argv[2:]


class OneLineCommand(BaseCommand):
    """A usage mistake on the command line is one line and exit status 2, not the whole usage text. What the command
    does is audited as coming from the command line, with the OS user and host that ran it (dr_console.channel)."""

    def execute(self, *args: Any, **options: Any) -> Any:
        with channel_set(cli_channel()):
            return super().execute(*args, **options)

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        original = parser.error

        def error(message: str) -> NoReturn:
            if not parser.called_from_command_line:
                original(message)  # call_command: Django raises CommandError
            self.stderr.write(f"error: {message} (see `manage.py {subcommand} --help`)")
            if json_asked():
                self.stdout.write(json.dumps({"error": message}))
            sys.exit(2)

        parser.error = error  # type: ignore[method-assign]
        return parser


class JobCommand(OneLineCommand):
    """Base for commands that start a job on a worker and optionally wait for it."""

    job_noun = "job"
    _finished = False  # the outcome (or, with --json, the error document) has been printed
    _document: OutputWrapper  # with --json: where the one JSON document goes

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
        parser.add_argument(
            "--pickup-timeout",
            type=float,
            default=settings.CLI_WAIT_PICKUP_SECONDS,
            metavar="SECONDS",
            help=(
                "With --wait: give up when no worker has taken the job after this long (default "
                f"{settings.CLI_WAIT_PICKUP_SECONDS:g} s, CLI_WAIT_PICKUP_SECONDS); the job stays queued."
            ),
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        # Job progress is logged for workers; on the command line the command's own lines say it all.
        if options.get("verbosity", 1) < 2:
            logging.getLogger().setLevel(logging.WARNING)
        if not options.get("json"):
            return super().execute(*args, **options)
        self._document = OutputWrapper(options["stdout"]) if options.get("stdout") else self.stdout
        with stdout_kept_for_json(process_stdout=not options.get("stdout") and sys.stdout is sys.__stdout__) as real:
            if real is not None:
                self._document = OutputWrapper(real)
            options["stdout"] = options.get("stderr") or sys.stderr  # the command's own other lines, too
            try:
                return super().execute(*args, **options)
            except CommandError as exc:
                self.json_error(str(exc))
                raise
            except (ImproperlyConfigured, OperationalError):
                raise  # Django itself cannot run: manage.py says so, as one JSON document too
            except Exception as exc:
                self.json_error(f"internal error: {type(exc).__name__}: {one_line(exc)}")
                raise

    def json_error(self, message: str) -> None:
        """With --json, a failure is one `{"error": ...}` document, unless the outcome was already printed."""
        if not self._finished:
            self._finished = True
            self._document.write(json.dumps({"error": message}))

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
            self._document.write(json.dumps(summary, indent=2, default=str))
        elif not failure:
            self.stdout.write(text)
        if failure:
            raise CommandError(failure)

    def warn_if_no_worker(self, options: dict[str, Any]) -> None:
        """A job waits in the queue until a worker takes it; say so first, instead of hanging silently."""
        if options["inline"]:
            return
        from dr_console.celery import app

        try:
            replies = app.control.ping(timeout=1.0)
        except Exception:
            return  # some transports (the embedded filesystem broker) cannot broadcast: nothing to tell
        if not replies:
            self.stderr.write(
                f"no Celery worker answered: the {self.job_noun} waits in the queue until one starts "
                "(`make run` starts one, or run `celery -A dr_console worker`)"
            )

    def run_requested(
        self,
        options: dict[str, Any],
        job: Any,
        *,
        execute: Callable[[int], None],
        describe: Callable[[Any], str],
        summary: Callable[[Any], dict[str, Any]],
        queued: str,
        load: Callable[[], Any] | None = None,
        succeeded: Collection[str] = ("succeeded",),
    ) -> None:
        """What every job command does once its job is requested: run it in this process (--inline) or wait for a
        worker (--wait), then print the outcome (`finish`); a job that ended any other way than `succeeded` is the
        command's failure."""
        manager = type(job)._default_manager
        reload = load or (lambda: manager.get(pk=job.pk))
        if options.get("inline") and job.is_active:
            execute(job.pk)
        elif options.get("wait") and job.is_active:
            self.warn_if_no_worker(options)
            self.wait_for(options, load=reload, done=lambda row: row.is_finished, describe=describe)
        row = reload()
        waited = options.get("wait") or options.get("inline") or row.is_finished
        failed = row.is_finished and row.status not in succeeded
        text = describe(row) if waited else queued
        self.finish(options, summary(row), text, failure=text if failed else "")

    def wait_for(
        self,
        options: dict[str, Any],
        load: Callable[[], models.Model],
        done: Callable[[Any], bool],
        describe: Callable[[Any], str],
    ) -> Any:
        """Poll the job row until `done(row)`. Progress goes to stderr so --json output stays clean."""
        deadline = None if options["timeout"] is None else time.monotonic() + options["timeout"]
        pickup = options.get("pickup_timeout", settings.CLI_WAIT_PICKUP_SECONDS)
        pickup_deadline: float | None = None
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
                # Waiting for a worker is not waiting for the job: with none running it would be forever.
                if getattr(row, "status", None) not in getattr(type(row), "QUEUED_STATES", ()):
                    pickup_deadline = None
                elif pickup_deadline is None:
                    pickup_deadline = time.monotonic() + pickup
                elif time.monotonic() > pickup_deadline:
                    raise CommandError(
                        f"no worker took the {self.job_noun} within {pickup:g} s: {state}; it "
                        "stays queued and runs when a worker starts (`make run`, or `celery -A dr_console worker`)",
                        returncode=3,
                    )
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stderr.write(f"\nstopped waiting; the {self.job_noun} goes on on the worker")
            if options["json"]:
                self.json_error(f"stopped waiting; the {self.job_noun} goes on on the worker")
            sys.exit(130)


def user_may(user: Any, perm: str, what: str, role: str = "operator") -> None:
    """Refuse, in one line, a `--as` user who lacks the permission the command needs."""
    if user is not None and not user.has_perm(perm):
        raise CommandError(f"{user.get_username()} may not {what} (needs the {role} role)")


def user_by_name(username: str) -> Any:
    """The console user a command acts as (`--as USERNAME`)."""
    from django.contrib.auth import get_user_model

    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no console user named {username!r} (create one in the admin)") from None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
