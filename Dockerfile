# One image for the web console, the Celery worker and Celery beat (the command differs; see docker-compose.yml).

FROM python:3.11-slim-bookworm AS wheels
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ARTIFACT_DIR=/data/artifacts \
    DR_SCRATCH_DIR=/data/scratch \
    EMAIL_FILE_PATH=/data/mail
# pg_dump/pg_restore must be at least as new as the servers they back up: bookworm ships 15.
# Newer servers: add the PGDG apt repository and install postgresql-client-NN, or set PG_BIN_DIR.
# age: operators open encrypted backups by hand with it (`age -d -i key.txt < FILE.dump | pg_restore ...`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client age \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 drconsole \
 && mkdir -p /data/artifacts /data/scratch /data/mail && chown -R drconsole /data
COPY --from=wheels /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=drconsole . .
RUN DJANGO_SECRET_KEY=build-only-not-secret python manage.py collectstatic --noinput --verbosity 0
USER drconsole
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["gunicorn", "dr_console.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60", "--access-logfile", "-"]
