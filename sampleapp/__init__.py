"""A small stand-in for the product DR Console protects: an HTTP API over a `documents` table in its own
PostgreSQL database, and an RQ worker that processes documents. It is not part of the console (no Django).

Run it with `make sampleapp`, or `python -m sampleapp --help`. Configuration: SAMPLEAPP_DATABASE_URL,
SAMPLEAPP_REDIS_URL, SAMPLEAPP_TOKEN (see sampleapp/config.py).
"""
