"""Paths, printing, sizes, tables and the command line every benchmark shares."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
CELERY = str(VENV_BIN / "celery")
VAR_DIR = ROOT / "var"
OUT_DIR = ROOT / "bench" / "out"
MIB = 1024**2
GIB = 1024**3


def say(text: str = "") -> None:
    print(text, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    """The scripts' argument parser: the module docstring as the help text, its layout kept."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def use_app_code(code_dir: Path = ROOT) -> None:
    """Make the console's packages (backups, restores, ...) importable from `code_dir`, ahead of anything else."""
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))


@contextlib.contextmanager
def temporary_workdir(prefix: str, parent: Path = VAR_DIR) -> Iterator[Path]:
    """A fresh directory under var/ (artifacts, scratch files, logs), removed with all it holds at the end."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f} MB"


def mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def gb(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Aligned columns: the first (and a trailing "what") left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    last = len(header) - 1 if header[-1] == "what" else -1  # a trailing text column reads better left-aligned
    line = lambda r: "  ".join(
        str(c).ljust(w) if i in (0, last) else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    ).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def columns(items: Sequence[Any], spec: Sequence[tuple[str, Callable[[Any], Any]]]) -> str:
    """table() of one row per item, from (header, cell of an item) pairs."""
    return table([[cell(item) for _, cell in spec] for item in items], [header for header, _ in spec])
