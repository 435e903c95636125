"""Where a repository is written: refusing a folder tritongen did not write, keeping every
path inside it, and swapping the finished build into place in one rename.

Everything is written into a temporary folder beside the destination and only then takes the
destination's place: a failed build leaves the previous repository as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tritongen.errors import RenderError
from tritongen.spec.ensemble import NAME_RULE

MARKER = ".tritongen"
KEPT_FILES = ("README.md",)  # carried over from the destination (the folder's own README)


def check_destination(destination: Path, force: bool) -> None:
    """Refuse to replace what tritongen did not write. An empty folder, or a repository that
    tritongen wrote (its marker), is replaced; `force` is needed when files were added to
    such a repository since, and a non-empty folder without the marker is refused whatever
    `force` says (`build -o ~ --force` must not remove a home folder)."""
    if not destination.exists():
        return
    if not destination.is_dir():
        raise RenderError(f"{destination}: exists and is not a folder; choose another -o")
    present = sorted(p.name for p in destination.iterdir() if p.name not in KEPT_FILES)
    if not present:
        return
    marker = read_marker(destination)
    if marker is None:
        raise RenderError(
            f"{destination}: is not empty and was not written by tritongen "
            f"(holds {', '.join(present[:3])}); choose another -o (--force replaces only "
            "a folder that tritongen wrote)"
        )
    written = marker.get("entries")
    added = [n for n in present if n != MARKER and n not in written] if written else []
    if added and not force:
        raise RenderError(
            f"{destination}: holds {', '.join(added[:3])}, which tritongen did not write; "
            "move it away, or pass --force to replace the whole folder"
        )


def read_marker(repository: Path) -> dict[str, Any] | None:
    """The `.tritongen` marker of a repository that tritongen wrote; None for any other."""
    try:
        marker = json.loads((repository / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(root: Path, marker: dict[str, Any]) -> None:
    """The marker, listing what `root` holds: what --force may replace later."""
    marker = {**marker, "entries": sorted(p.name for p in root.iterdir())}
    (root / MARKER).write_text(json.dumps(marker) + "\n")


def inside(root: Path, *parts: str) -> Path:
    """`root/parts...`, refused unless it resolves to a folder strictly inside `root`: names
    from a plan.json or a spec must never make the build write elsewhere."""
    path = root.joinpath(*parts).resolve()
    if root.resolve() not in path.parents:
        raise RenderError(
            f"{'/'.join(parts)!r} would be written outside the repository folder; {NAME_RULE}"
        )
    return path


@contextmanager
def staged(destination: Path) -> Iterator[Path]:
    """A temporary folder beside `destination` to build into; once the block ends without an
    error it takes `destination`'s place (with the kept files), else it is removed."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield staging
        _carry_kept_files(destination, staging)
        _swap(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def restrict_permissions(root: Path) -> None:
    """Folders 0755, files 0644, whatever the umask: nobody else may rewrite served code."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _carry_kept_files(destination: Path, staging: Path) -> None:
    for name in KEPT_FILES:
        if (destination / name).is_file():
            shutil.copy2(destination / name, staging / name)


def _swap(staging: Path, destination: Path) -> None:
    """Put `staging` at `destination`; the old tree is removed only once the new one is in."""
    if not destination.exists():
        os.rename(staging, destination)
        return
    retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    os.rename(destination, retired)
    try:
        os.rename(staging, destination)
    except OSError:
        os.rename(retired, destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)
