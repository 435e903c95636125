"""Child processes that end with the process that started them.

A `tritongen` command killed outright (SIGKILL, an OOM kill, a test's timeout) runs no
`finally` block: its tritonserver and its profiling workers would carry on, holding ports,
memory and every core they were told to keep busy, and the next measurement on that machine
would read them as load. Linux ends such a child for us when asked to (PR_SET_PDEATHSIG);
elsewhere children are stopped only by their parent's clean exit, as before.

The signal is tied to the *thread* that started the child: each caller here starts its
children from a thread that waits on them until they end (the CLI's main thread, or the
server's supervisor thread for a restarted tritonserver).
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_spawning_parent() -> None:
    """Called first in a `multiprocessing` child's entry point: have the kernel kill it
    (SIGKILL) when the parent that spawned it ends, and end now if that parent has already
    gone (the child was adopted before the call)."""
    parent, prctl = multiprocessing.parent_process(), _prctl()
    if prctl is not None and parent is not None and parent.pid is not None:
        _ask_for_signal(prctl, parent.pid, signal.SIGKILL)


def ends_with_this_process(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen` that makes the child end with this process, or
    None where the platform cannot. prctl is looked up here, in the parent: between fork and
    exec the child only calls it."""
    prctl = _prctl()
    if prctl is None:
        return None
    return functools.partial(_ask_for_signal, prctl, os.getpid(), sig)


def _ask_for_signal(prctl: Any, parent_pid: int, sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


@functools.cache
def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl
