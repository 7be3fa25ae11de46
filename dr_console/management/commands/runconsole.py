"""manage.py runconsole: what `make run` starts on a laptop or a fresh machine.

Migrates, makes sure someone can log in, picks a broker (Redis if one answers, else the embedded filesystem
broker under var/), then runs the web console and a Celery worker until Ctrl-C. The worker also runs beat:
backup schedules, retention and the job reaper.
Production runs gunicorn, `celery worker` and `celery beat` separately (see docker-compose.yml).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dr_console.jobs import broker_label


class Command(BaseCommand):
    help = (
        "Run the web console, a Celery worker for the jobs and one for the maintenance queue (with beat), for local "
        "use (what `make run` does)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="Address for the web console.")

    def handle(self, *args: Any, **options: Any) -> None:
        host, _, port = options["addr"].rpartition(":")
        with socket.socket() as probe:
            if probe.connect_ex((host or "127.0.0.1", int(port))) == 0:
                raise CommandError(
                    f"port {port} on {host} is already in use (another `make run`?); stop it first, "
                    "or run `manage.py runconsole --addr 127.0.0.1:8080`"
                )
        var = Path(settings.VAR_DIR)
        var.mkdir(parents=True, exist_ok=True)
        self._ensure_dotenv()
        call_command("migrate", verbosity=0)
        child_env = dict(os.environ)
        child_env["DJANGO_DEBUG"] = "True" if settings.DEBUG else "False"
        child_env["CELERY_BROKER_URL"] = self._choose_broker()
        self._announce_login(options["addr"], var)

        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        celery = str(Path(python).with_name("celery"))
        named = {
            "the web console": subprocess.Popen(
                [python, manage, "runserver", options["addr"], "--noreload"], env=child_env
            ),
            "the Celery worker": subprocess.Popen(
                [celery, "-A", "dr_console", "worker", "--loglevel=INFO", "--concurrency=2", "--hostname=jobs@%h"],
                env=child_env,
            ),
            # Its own worker for the maintenance queue, so that long jobs on the one above never starve the
            # reapers and the schedules; it also runs beat (the reapers, retention, every datastore's schedules).
            "the maintenance worker": subprocess.Popen(
                [
                    celery,
                    "-A",
                    "dr_console",
                    "worker",
                    f"--queues={settings.MAINTENANCE_QUEUE}",
                    "--pool=solo",
                    "--hostname=maintenance@%h",
                    "--beat",
                    f"--scheduler={settings.CELERY_BEAT_SCHEDULER}",
                    "--loglevel=INFO",
                ],
                env=child_env,
            ),
        }
        processes = list(named.values())

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)  # also when started in the background, where SIGINT is ignored
        try:
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            name, failed = next((n, p) for n, p in named.items() if p.poll() is not None)
            self.stderr.write(f"{name} stopped (exit status {failed.returncode}); stopping the rest")
        except KeyboardInterrupt:
            self.stdout.write("\nstopping the console and the workers...")
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()

    def _ensure_dotenv(self) -> None:
        """First start: write .env so `manage.py` in another shell runs with the same local settings."""
        dotenv = Path(settings.BASE_DIR) / ".env"
        if dotenv.exists():
            return
        dotenv.write_text(
            "# Local settings for `make run` and manage.py (never commit this file). See .env.example for all.\n"
            "DJANGO_DEBUG=True\n"
            f"DJANGO_SECRET_KEY={secrets.token_urlsafe(48)}\n"
            "# The URLs of the datastores you register, by the variable names of their url_env, e.g.:\n"
            "# PROD_DATABASE_URL=postgresql://user:password@host:5432/dbname\n"
        )
        dotenv.chmod(0o600)
        self.stdout.write(f"Wrote {dotenv} (local settings; put your datastores' URLs there).")

    def _choose_broker(self) -> str:
        url = os.environ.get("CELERY_BROKER_URL", settings.CELERY_BROKER_URL)
        if not url.startswith(("redis://", "rediss://")):
            return url
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        except redis.RedisError:
            self.stdout.write(
                f"No Redis answers at {broker_label()}: using the embedded broker under var/broker instead "
                "(fine on one machine; set CELERY_BROKER_URL to a Redis for anything else)."
            )
            with open(Path(settings.BASE_DIR) / ".env", "a") as dotenv:
                dotenv.write(
                    f"# Written by `make run`: no Redis answered at {broker_label()}. "
                    "Delete this line to use Redis.\nCELERY_BROKER_URL=embedded\n"
                )
            return "embedded"
        self.stdout.write(f"Task broker: {broker_label()}")
        return url

    def _announce_login(self, addr: str, var: Path) -> None:
        user_model = get_user_model()
        password_file = var / "admin-password.txt"
        url = f"http://{addr}/"
        if not user_model.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser("admin", "", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            # Shown once, at creation; later starts only point at the file.
            self.stdout.write(f"Open {url} and log in as admin with password {password} (saved in {password_file})")
        elif password_file.exists() and user_model.objects.filter(username="admin").exists():
            self.stdout.write(f"Open {url} and log in as admin (password in {password_file})")
        else:
            self.stdout.write(
                f"Open {url} and log in with your superuser (create one with `manage.py createsuperuser`)."
            )
