"""The slow tier's rule, enforced: every test here carries the marker of what it starts
(`server`: a tritonserver; `subprocess`: another child process) or `slow`, so that
`pytest -m "not server"` and the like select what they say. A test that starts nothing
belongs in tests/unit."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TIER_MARKERS = {"server", "subprocess", "slow"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if HERE in item.path.resolve().parents
        and not TIER_MARKERS & {mark.name for mark in item.iter_markers()}
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests/integration holds only tests marked server, subprocess or slow; "
            f"mark these or move them to tests/unit: {', '.join(unmarked)}"
        )
