"""Where tritongen keeps what it caches between runs (profiles, serving costs, the Python
backend assembled for the running interpreter)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/tritongen`, else `~/.cache/tritongen`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tritongen"
