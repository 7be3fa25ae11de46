# DR Console. `make run` starts the console and a worker; `make test` runs the whole suite.
# Both install what is missing first (the virtualenv, pip packages, the PostgreSQL client tools; for the tests,
# Chromium).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | md5sum | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test screenshots install system-deps test-deps check bench clean sampleapp

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

# What running needs from Debian: pg_dump/pg_restore (postgresql-client). The translations are compiled (.mo
# files are committed), so gettext is not needed to run.
system-deps:
	@if ! command -v pg_dump >/dev/null || ! command -v pg_restore >/dev/null; then \
		echo "installing system packages (apt-get install postgresql-client)"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null; \
	fi

# What only the tests need, so `make run` does not install it: Chromium from Debian for the browser tests
# (Playwright drives it; `playwright install` cannot download a browser here), the redis-server binary for the
# test that stops a private Redis under the sample application, the PostgreSQL server's initdb (the tests'
# password-checking private cluster), gettext (the test that checks the Spanish catalogue is complete) and age
# (the encryption tests open the console's backups with the real age and age-keygen, as an operator would).
test-deps:
	@if [ ! -x /usr/bin/chromium ] || ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v msgfmt >/dev/null || ! command -v age >/dev/null || ! command -v age-keygen >/dev/null; then \
		echo "installing test packages (apt-get install chromium redis-server postgresql gettext age)"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core redis-server postgresql gettext age >/dev/null; \
	fi

install: $(STAMP) system-deps

run: install
	DJANGO_DEBUG=True $(BIN)/python manage.py runconsole

test: install test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports --no-logo
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python manage.py makemigrations --check --dry-run >/dev/null 2>&1 || { echo "models changed without a migration: run manage.py makemigrations"; exit 1; }
	$(BIN)/python -m pytest

# The sample protected application (sampleapp/): its API on 127.0.0.1:8001 and an RQ worker. Local defaults below;
# anything set in the environment wins. `make sampleapp SEED=100` first creates 100 PENDING documents.
SAMPLEAPP_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/sampleapp
SAMPLEAPP_REDIS_URL ?= redis://127.0.0.1:6379/1
SAMPLEAPP_TOKEN ?= sampleapp-dev-token
sampleapp: install
	@SAMPLEAPP_DATABASE_URL='$(SAMPLEAPP_DATABASE_URL)' SAMPLEAPP_REDIS_URL='$(SAMPLEAPP_REDIS_URL)' \
	SAMPLEAPP_TOKEN='$(SAMPLEAPP_TOKEN)' $(BIN)/python -m sampleapp api --port 8001 --with-worker --create-database \
		--print-token $(if $(SEED),--seed $(SEED))

# The browser tests alone, saving a PNG of every page (English, and Spanish under es/) for the README and runbook.
screenshots: install test-deps
	DR_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/browser

check: install
	DJANGO_DEBUG=False DJANGO_SECRET_KEY=$$(head -c 48 /dev/urandom | base64) $(BIN)/python manage.py check --deploy --fail-level WARNING

bench: install
	$(BIN)/python bench/backup_overhead.py

clean:
	rm -rf $(VENV) staticfiles
