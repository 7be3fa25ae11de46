"""Real age keys for the tests, made by the real age-keygen (make test-deps installs the age package)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def age_keypair(key_file: Path) -> tuple[str, str]:
    """Write a new age key to `key_file`; return its public recipient (age1...) and the file's text (the identity)."""
    subprocess.run(["age-keygen", "-o", str(key_file)], check=True, capture_output=True)
    text = key_file.read_text()
    recipient = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("# public key: "))
    return recipient, text
