"""What the benchmark scripts in bench/ share, so that each script holds only what it measures.

- harness.core: paths (ROOT, PYTHON, CELERY), printing, sizes, tables, the command line, a scratch work directory;
- harness.pg: the PostgreSQL server (databases made and dropped, the client tools and their environment);
- harness.console: the console run as processes (`manage.py`, a real Celery worker, a snapshot of the code);
- harness.inprocess: the console in this process (Django set up on its own database, a logged-in test client);
- harness.measure: timing, interleaved rounds, CPU and memory of processes, waiting for a quiet machine;
- harness.clients: spare Redis databases and the reprocess HTTP calls both reprocess benchmarks make.

The scripts run as `python bench/NAME.py`, so bench/ is on sys.path and `import harness` finds this package.
"""
