"""What the commands print: the consoles for stdout and stderr, plain lines and warnings."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def say(*lines: str) -> None:
    """Lines as they are: no rich markup, no highlighting."""
    for line in lines:
        console.print(line, markup=False, highlight=False)


def warn(*lines: str) -> None:
    for line in lines:
        err_console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
