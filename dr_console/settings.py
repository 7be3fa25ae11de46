"""DR Console settings: one file, everything from the environment (twelve-factor).

Tests override what they need in tests/conftest.py; production differs only by environment variables.
Every variable is listed in .env.example.
"""

from __future__ import annotations

import os
from logging.handlers import SysLogHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# A local .env file (never committed; `make run` writes one on first start) fills in what the process
# environment does not set, so `manage.py` in any shell sees the same configuration as the running console.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def env_secret(name: str, default: str = "") -> str:
    """Read NAME, or the file NAME_FILE points to (Docker/Kubernetes secrets)."""
    file_path = env.str(f"{name}_FILE", default="")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_path!r} cannot be read: {exc.strerror}") from None
    return env.str(name, default=default)


def env_flag(name: str, default: bool) -> bool:
    """env.bool, but a value that is neither true nor false is an error, not a silent False."""
    raw = env.str(name, default="").strip().lower()
    if raw and raw not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
        raise ImproperlyConfigured(f"{name}={raw!r}: use True or False")
    return env.bool(name, default=default)


def env_int(name: str, default: int) -> int:
    try:
        return env.int(name, default=default)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={env.str(name)!r}: expected a whole number") from None


def env_float(name: str, default: float) -> float:
    try:
        return env.float(name, default=default)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={env.str(name)!r}: expected a number") from None


DEBUG = env_flag("DJANGO_DEBUG", default=False)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY") or ("insecure-dev-key-do-not-use-in-production" if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required when DJANGO_DEBUG is off; "
        "`make run` sets DJANGO_DEBUG=True for local use."
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_celery_beat",  # beat's schedule lives in the database, editable while beat runs
    "axes",  # login throttling and lockout (django-axes); its AccessAttempt rows live in the console's database
    "dr_console",  # project-wide commands (runconsole)
    "audit",
    "accounts",  # who is acting: personal tokens, session timeouts, re-authentication, login audit
    "inventory",  # environments, datastores, target locks: the bottom of the app layers
    "backups",
    "restores",
    "drills",
    "reprocess",
    "queues",
    "overview",  # the top layer: dashboard, datastore page, objectives, metrics, readiness
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "dr_console.http.BrowserTimezoneMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dr_console.http.ChannelMiddleware",  # audit events from a request say "web" (or "api" with a bearer token)
    "accounts.middleware.SessionTimeoutMiddleware",  # idle and absolute session timeouts, on the server
    "dr_console.http.HtmxLoginRequiredMiddleware",  # every page needs a login unless marked otherwise
    "audit.middleware.RefusedAttemptAuditMiddleware",  # a signed-in person's refused change is audited
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its lockout page
]

ROOT_URLCONF = "dr_console.urls"
WSGI_APPLICATION = "dr_console.wsgi.application"
ASGI_APPLICATION = "dr_console.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.reauth.reauth_context",  # forms ask for the password when re-auth is due
            ],
        },
    },
]

# The console's own database. SQLite by default so `make run` needs nothing installed;
# PostgreSQL in production and in the tests.
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL",
        default=f"sqlite:///{VAR_DIR / 'console.sqlite3'}",
    )
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env_int("DATABASE_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web process and the worker share the file: wait for locks instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("es", "Español")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# Artifact storage. The default is a local folder; any Django storage backend works by configuration
# alone, e.g. ARTIFACT_STORAGE_BACKEND=storages.backends.s3.S3Storage with
# ARTIFACT_STORAGE_OPTIONS='{"bucket_name": "dr-artifacts"}', so workers on several machines share artifacts.
ARTIFACT_STORAGE_BACKEND = env.str("ARTIFACT_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage")
try:
    ARTIFACT_STORAGE_OPTIONS = env.json("ARTIFACT_STORAGE_OPTIONS", default={})
except ValueError as _exc:
    raise ImproperlyConfigured(f"ARTIFACT_STORAGE_OPTIONS is not valid JSON: {_exc}") from None
if not isinstance(ARTIFACT_STORAGE_OPTIONS, dict):
    raise ImproperlyConfigured('ARTIFACT_STORAGE_OPTIONS must be a JSON object, e.g. {"bucket_name": "dr"}')
if ARTIFACT_STORAGE_BACKEND.endswith("FileSystemStorage"):
    ARTIFACT_STORAGE_OPTIONS.setdefault("location", env.str("ARTIFACT_DIR", default=str(VAR_DIR / "artifacts")))
    # Backups hold the product's data: readable by the console's user only.
    ARTIFACT_STORAGE_OPTIONS.setdefault("file_permissions_mode", 0o600)
    ARTIFACT_STORAGE_OPTIONS.setdefault("directory_permissions_mode", 0o700)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
    "artifacts": {"BACKEND": ARTIFACT_STORAGE_BACKEND, "OPTIONS": ARTIFACT_STORAGE_OPTIONS},
}
# Scratch space for restores from remote storage (pg_restore --jobs needs a seekable local file).
DR_SCRATCH_DIR = env.str("DR_SCRATCH_DIR", default=str(VAR_DIR / "scratch"))

# Backup and restore jobs.
BACKUP_DEFAULT_COMPRESSION = env_int("BACKUP_DEFAULT_COMPRESSION", default=1)  # chosen by bench/backup_overhead.py
BACKUP_VERIFY_AFTER_DUMP = env_flag("BACKUP_VERIFY_AFTER_DUMP", default=True)
BACKUP_TIME_LIMIT = env_int("BACKUP_TIME_LIMIT", default=6 * 3600)  # seconds
# How long after a backup succeeded its copy locations may lack a verified copy of it before the dashboard says so.
COPY_GRACE_SECONDS = env_int("COPY_GRACE_SECONDS", default=3600)
# How long a backup waits for a table another session holds locked (pg_dump --lock-wait-timeout) before it fails,
# naming the table, instead of hanging until BACKUP_TIME_LIMIT.
BACKUP_LOCK_WAIT_TIMEOUT = env_int("BACKUP_LOCK_WAIT_TIMEOUT", default=300)
RESTORE_TIME_LIMIT = env_int("RESTORE_TIME_LIMIT", default=6 * 3600)
RESTORE_JOBS = env_int("RESTORE_JOBS", default=2)
JOB_HEARTBEAT_SECONDS = env_int("JOB_HEARTBEAT_SECONDS", default=15)
# A scheduled fire time with no firing this long after it is shown as missed (beat down, or workers all busy).
SCHEDULE_MISSED_AFTER_SECONDS = env_int("SCHEDULE_MISSED_AFTER_SECONDS", default=600)
# `manage.py backup --wait` (and the other job commands) give up when no worker took the job this long.
CLI_WAIT_PICKUP_SECONDS = env_int("CLI_WAIT_PICKUP_SECONDS", default=60)
# Datastore health checks (backups/health.py): how often every datastore is checked, how long one connection
# attempt may take, and how many datastores are checked at once.
DATASTORE_HEALTH_CHECK_SECONDS = env_int("DATASTORE_HEALTH_CHECK_SECONDS", default=300)
DATASTORE_HEALTH_TIMEOUT_SECONDS = env_int("DATASTORE_HEALTH_TIMEOUT_SECONDS", default=5)
DATASTORE_HEALTH_CONCURRENCY = env_int("DATASTORE_HEALTH_CONCURRENCY", default=8)
# A running job whose heartbeat is older than this is presumed lost (its worker died).
JOB_STALE_AFTER_SECONDS = env_int("JOB_STALE_AFTER_SECONDS", default=300)
PG_BIN_DIR = env.str("PG_BIN_DIR", default="")  # where pg_dump/pg_restore live; empty means $PATH
# Restores into protected environments need approval; an approval not acted on within this time expires.
RESTORE_APPROVAL_TTL = env_int("RESTORE_APPROVAL_TTL", default=4 * 3600)  # seconds
# A download of protected data needs the same approval (waiting at most RESTORE_APPROVAL_TTL); once approved, its
# requester may download it once within this many seconds (backups/downloads.py).
DOWNLOAD_WINDOW = env_int("DOWNLOAD_WINDOW", default=3600)
# A download from an object store is a redirect to a presigned URL valid this long: a bearer link, so short.
DOWNLOAD_PRESIGNED_SECONDS = env_int("DOWNLOAD_PRESIGNED_SECONDS", default=300)
APP_CHECK_TIMEOUT = float(env_int("APP_CHECK_TIMEOUT", default=5))  # seconds per /healthz, /readyz request
APP_CHECK_CONNECT_RETRIES = env_int("APP_CHECK_CONNECT_RETRIES", default=3)

# The console's own readiness (/readyz, `manage.py checkworker`): how long to wait for the broker and for a
# worker's answer to a ping, in seconds.
READYZ_BROKER_TIMEOUT = env_int("READYZ_BROKER_TIMEOUT", default=2)
READYZ_WORKER_TIMEOUT = env_float("READYZ_WORKER_TIMEOUT", default=2.0)
# /readyz needs no login and its checks write to the storage and ping the workers: its answer is kept this many
# seconds, so a flood of probes costs one check a period in each web process (0: check on every request).
READYZ_CACHE_SECONDS = env_float("READYZ_CACHE_SECONDS", default=5.0)
# Django's cache is each process's own memory (LocMemCache, Django's default, made explicit): only /readyz uses it,
# and a shared cache would put the broker or the database on the path of the check of that same dependency.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "dr-console"}}
# /metrics: a Prometheus scraper sends `Authorization: Bearer <this>`. Unset: only signed-in users with the
# viewer role can read it (a person checking in a browser); scrapers are refused.
METRICS_BEARER_TOKEN = env_secret("METRICS_BEARER_TOKEN")
# Uploads (the reprocess CSV). A request's files may hold UPLOAD_MAX_BYTES in all: dr_console/uploads.py stops
# reading past it, so nothing larger reaches memory or the temporary folder. Files over
# FILE_UPLOAD_MAX_MEMORY_SIZE are spooled to FILE_UPLOAD_TEMP_DIR (default: the system's) while they arrive; the
# other fields of a request may hold DATA_UPLOAD_MAX_MEMORY_SIZE (Django's defaults, made explicit).
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", default=20 * 1024 * 1024)
FILE_UPLOAD_HANDLERS = [
    "dr_console.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Reprocess batches (re-sending documents whose queue jobs were lost).
REPROCESS_TIMEOUT = float(env_int("REPROCESS_TIMEOUT", default=10))  # seconds per reprocess call
REPROCESS_MAX_ATTEMPTS = env_int("REPROCESS_MAX_ATTEMPTS", default=6)  # per item and run, the first call included
REPROCESS_BACKOFF_SECONDS = float(env_int("REPROCESS_BACKOFF_MS", default=500)) / 1000  # first retry's base wait
REPROCESS_BACKOFF_MAX_SECONDS = float(env_int("REPROCESS_BACKOFF_MAX_SECONDS", default=30))
REPROCESS_QUERY_TIMEOUT = env_int("REPROCESS_QUERY_TIMEOUT", default=30)  # seconds for the batch-building query
REPROCESS_MAX_ITEMS = env_int("REPROCESS_MAX_ITEMS", default=200_000)
REPROCESS_TIME_LIMIT = env_int("REPROCESS_TIME_LIMIT", default=6 * 3600)

# Notifications: EMAIL_URL (e.g. smtp://user:password@mail.internal:587/?tls=True) or, unset, one file per message
# under EMAIL_FILE_PATH (not the console backend: it prints on stdout, where `manage.py ... --json` writes its JSON).
if env.str("EMAIL_URL", default=""):
    globals().update(env.email_url("EMAIL_URL"))  # EMAIL_BACKEND, EMAIL_HOST, EMAIL_PORT, ...
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default="") or str(VAR_DIR / "mail")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="dr-console@localhost")
# Who is told about failed backups, failed drills and objective breaches (besides the environment's webhook and
# the person who started the job): comma-separated addresses.
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[])

# Celery. The broker must never be the Redis the console protects (backups.services refuses such a datastore).
# CELERY_BROKER_URL=embedded selects kombu's filesystem transport under var/broker, for a laptop with no Redis.
# Database 11, not 0: 0 is where most applications (and redis-cli) put their keys, and a broker sharing it with
# the application it protects would lose its jobs with it (and datastore_check_not_broker refuses a Redis datastore
# that is the broker). The test suite keeps 13-15 for itself.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/11")
_longest_job = max(BACKUP_TIME_LIMIT, RESTORE_TIME_LIMIT)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    # Redis redelivers unacknowledged tasks after this; keep it above the longest job so a long dump is not
    # redelivered while it runs (and the job claim makes a redelivery a no-op anyway). CELERY_VISIBILITY_TIMEOUT
    # overrides it: only the fault tests, which want to see a redelivery, set a short one.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", default=_longest_job + 3600),
}
if CELERY_BROKER_URL == "embedded" or CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost/"  # the host is ignored; naming one silences kombu's warning
    # Celery reads the CELERY_BROKER_URL environment variable before Django's settings: keep them in step.
    os.environ["CELERY_BROKER_URL"] = CELERY_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True  # the UI and the CLI read the job rows, not a result backend
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False  # a lost job is reaped as failed, never re-run behind our back
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Two queues. "celery" (the default) carries the jobs, which may run for hours; "maintenance" carries the short
# periodic tasks (reapers, expiry, schedule firings, retention, objectives), with a worker of its own, so that two
# six-hour dumps never starve the reaper or the schedules. `make run`, `runconsole` and docker-compose.yml start both.
CELERY_TASK_DEFAULT_QUEUE = "celery"
MAINTENANCE_QUEUE = "maintenance"
_MAINTENANCE_TASKS = [
    "inventory.tasks.target_locks_release_stale_task",
    "backups.tasks.backup_artifacts_reap_task",
    "backups.tasks.backup_scheduled_task",
    "backups.tasks.retention_apply_task",
    "backups.tasks.datastore_health_check_task",
    "restores.tasks.restore_runs_reap_task",
    "drills.tasks.drill_runs_reap_stale_task",
    "drills.tasks.drill_run_scheduled_task",
    "overview.tasks.objectives_check_task",
    "reprocess.tasks.reprocess_batches_reap_task",
]
CELERY_TASK_ROUTES = {name: {"queue": MAINTENANCE_QUEUE} for name in _MAINTENANCE_TASKS}
# Each app owns its periodic tasks; this is the one list of them. Per-datastore schedules are PeriodicTask rows
# (dr_console/schedules.py); the entries below are synced into the same table when beat starts.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
_REAP_SECONDS = 60.0
CELERY_BEAT_SCHEDULE = {
    "reap-stale-backups": {"task": "backups.tasks.backup_artifacts_reap_task", "schedule": _REAP_SECONDS},
    "reap-stale-restores": {"task": "restores.tasks.restore_runs_reap_task", "schedule": _REAP_SECONDS},
    "reap-stale-drills": {"task": "drills.tasks.drill_runs_reap_stale_task", "schedule": _REAP_SECONDS},
    "reap-stale-reprocess": {"task": "reprocess.tasks.reprocess_batches_reap_task", "schedule": _REAP_SECONDS},
    # After the reapers above have ended the jobs whose worker died: their locks go once their processes have.
    "release-stale-locks": {"task": "inventory.tasks.target_locks_release_stale_task", "schedule": _REAP_SECONDS},
    # Every datastore's retention policy; seconds between runs (RETENTION_INTERVAL_SECONDS, default hourly).
    "apply-retention": {
        "task": "backups.tasks.retention_apply_task",
        "schedule": float(env_int("RETENTION_INTERVAL_SECONDS", default=3600)),
    },
    # Can the workers reach every datastore as configured (URL variable, server, credentials, pg_dump)?
    "check-datastore-health": {
        "task": "backups.tasks.datastore_health_check_task",
        "schedule": float(DATASTORE_HEALTH_CHECK_SECONDS),
    },
    # Breaches are told once when they open and once when they close, however often this runs.
    "check-objectives": {"task": "overview.tasks.objectives_check_task", "schedule": 60.0},
}
for _entry in CELERY_BEAT_SCHEDULE.values():
    _entry["options"] = {"queue": MAINTENANCE_QUEUE}
# How long publishing a task may retry before the caller gets a clear "broker unreachable" error.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}

# The audit log's off-box copy (audit/stream.py): every committed event, one JSON line, to syslog or to a file a log
# shipper reads. Empty: none. syslog://HOST:PORT (UDP), syslog+tcp://HOST:PORT, syslog:///dev/log (the local socket),
# with ?facility=NAME (default local0); file:///var/log/dr-console/audit.jsonl.
AUDIT_STREAM_URL = env.str("AUDIT_STREAM_URL", default="")


def _audit_stream(url: str) -> dict[str, object]:
    if not url:
        return {}
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if parts.scheme == "file" and parts.path and not parts.netloc:
        return {"kind": "file", "path": parts.path}
    if parts.scheme in ("syslog", "syslog+udp", "syslog+tcp"):
        facility = query.get("facility", "local0")
        if facility not in SysLogHandler.facility_names:
            raise ImproperlyConfigured(f"AUDIT_STREAM_URL: unknown syslog facility {facility!r}")
        try:
            port = parts.port or 514
        except ValueError:
            raise ImproperlyConfigured("AUDIT_STREAM_URL: the syslog port must be a number") from None
        if parts.hostname:
            protocol = "tcp" if parts.scheme == "syslog+tcp" else "udp"
            return {"kind": "syslog", "host": parts.hostname, "port": port, "protocol": protocol, "facility": facility}
        if parts.path and parts.scheme == "syslog":
            return {"kind": "syslog", "socket": parts.path, "facility": facility}
    raise ImproperlyConfigured(
        "AUDIT_STREAM_URL: use syslog://HOST:PORT, syslog+tcp://HOST:PORT, syslog:///dev/log or file:///PATH"
    )


AUDIT_STREAM = _audit_stream(AUDIT_STREAM_URL)

# Who is acting (accounts/, README "Security model"). Sessions end on the server after SESSION_IDLE_TIMEOUT seconds
# without activity (a page's own polling is not activity) and SESSION_ABSOLUTE_TIMEOUT seconds after the login.
SESSION_IDLE_TIMEOUT = env_int("SESSION_IDLE_TIMEOUT", default=30 * 60)
SESSION_ABSOLUTE_TIMEOUT = env_int("SESSION_ABSOLUTE_TIMEOUT", default=12 * 3600)
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_TIMEOUT  # the cookie does not outlive the session either
# Approving, an in-place restore of a protected target, pinning, unpinning and retention changes need the password
# typed within the last REAUTH_MAX_AGE seconds.
REAUTH_MAX_AGE = env_int("REAUTH_MAX_AGE", default=5 * 60)
# Personal tokens (`manage.py token create`, DR_CONSOLE_TOKEN) expire after this many days by default.
PERSONAL_TOKEN_DAYS = env_int("PERSONAL_TOKEN_DAYS", default=90)
# Login throttling and lockout (django-axes): AXES_FAILURE_LIMIT failed logins (or password confirmations) of one
# user name from one address lock that pair for AXES_COOLOFF_MINUTES; a success resets the count. Unlock at once
# with `manage.py axes_reset_username USERNAME` (or axes_reset_ip, or axes_reset for everyone).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env_float("AXES_COOLOFF_MINUTES", default=15.0) / 60  # hours, as django-axes reads a float
# Username and address together: someone elsewhere cannot lock an approver out during an incident by typing
# wrong passwords for their name.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/lockout.html"
AXES_CLIENT_IP_CALLABLE = "dr_console.http.client_ip"  # the address the audit log records (USE_X_FORWARDED_FOR)
AXES_VERBOSE = False  # its own log lines would repeat the audit events
AXES_DISABLE_ACCESS_LOG = True  # successful logins are audit events already (auth.logged_in)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview:dashboard"
LOGOUT_REDIRECT_URL = "login"

# Security: production runs with DJANGO_DEBUG off and these defaults; `check --deploy` is clean.
SESSION_COOKIE_SECURE = env_flag("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env_flag("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env_flag("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
USE_X_FORWARDED_FOR = env_flag("DJANGO_USE_X_FORWARDED_FOR", default=False)  # client IPs in the audit log
if env_flag("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # container health checks speak plain HTTP inside the container
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Error reports (the DEBUG page, error mail) mask every secret: URLs, tokens, and any variable configuration names.
DEFAULT_EXCEPTION_REPORTER = "dr_console.error_reports.MaskingExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "dr_console.error_reports.SecretsExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # A key name or a tool's output in a log line is escaped: it cannot forge a line or reach the terminal raw.
    "filters": {
        "untrusted_text": {"()": "dr_console.text.UntrustedTextFilter"},
        "refusal": {"()": "dr_console.log.RefusalFilter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["untrusted_text"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # each login and reset is an audit event already (accounts/signals.py)
        # Django's own "django" logger also prints to the console when DEBUG is on: with the root's handler that
        # was every line (and traceback) twice. One handler, ours.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "filters": ["refusal"], "propagate": False},
    },
}
