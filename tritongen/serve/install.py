"""The tritonserver that the nvidia-pytriton wheel ships: its binary and libraries, a backends
folder with the Python backend's stub for this interpreter, and the environment it runs in."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tritongen.errors import ServerError
from tritongen.paths import cache_dir

# numpy's BLAS threads, one per core in every Python-backend process, spin between calls
# (OpenBLAS: sched_yield) on the cores the members compute on; each instance is meant to be
# one thread (docs/SERVING.md). Unset ones are set to 1; a value the user gave is kept.
ONE_THREAD = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
INSTALL_HINT = "install it with `pip install nvidia-pytriton==0.7.0` (Linux x86_64)"


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel keeps the server binary, its libraries and the Python backend."""

    binary: Path
    libraries: Path
    backends: Path
    stubs: Path


def find_tritonserver(package: Path | None = None) -> TritonInstall:
    """Locate the server inside the installed nvidia-pytriton wheel (or `package`)."""
    if package is None:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                f"tritonserver not found: the nvidia-pytriton package is missing; {INSTALL_HINT}"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
    install = TritonInstall(
        binary=package / "tritonserver" / "bin" / "tritonserver",
        libraries=package.parent / "nvidia_pytriton.libs",
        backends=package / "tritonserver" / "backends",
        stubs=package / "tritonserver" / "python_backend_stubs",
    )
    if not install.binary.is_file():
        raise ServerError(f"tritonserver not found at {install.binary}; {INSTALL_HINT}")
    return install


def prepare_backends(install: TritonInstall) -> Path:
    """A backends folder whose Python backend has the stub for the running Python beside it.

    The wheel keeps one stub per Python version apart from `libtriton_python.so`; we assemble
    the pair in our cache rather than write into site-packages.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(
            f"the Triton Python backend has no stub for Python {version}; use 3.8-3.13"
        )
    target = cache_dir() / "backends" / f"{_wheel_id(install)}-py{version}"
    if (target / "python" / stub.name).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    shutil.copytree(install.backends, staging / "backends")
    shutil.copy2(stub, staging / "backends" / "python" / stub.name)
    with contextlib.suppress(OSError):  # another process prepared it first
        os.rename(staging / "backends", target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def _wheel_id(install: TritonInstall) -> str:
    stat = install.binary.stat()
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def server_environment(install: TritonInstall) -> dict[str, str]:
    """The stub embeds the system's libpython and ignores PYTHONPATH: it finds this
    environment's packages only when this interpreter's `bin/` comes first on PATH; or those
    of the virtual environment TRITONGEN_STUB_VENV names (models that need other packages
    than tritongen's own process, such as another numpy). numpy's BLAS runs one thread
    (`ONE_THREAD`)."""
    env = dict(os.environ)
    venv = env.get("TRITONGEN_STUB_VENV")
    first = Path(venv) / "bin" if venv else Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(first), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(install.libraries), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env.update({name: "1" for name in ONE_THREAD if name not in env})
    return env
