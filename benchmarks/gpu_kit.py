"""Prepare what the GPU check needs on a GPU machine that has no network: one command, here.

    .venv/bin/python benchmarks/gpu_kit.py [--out .gpu-kit]

The GPU machine's image has Python 3.12, torch built for CUDA, numpy, scipy, onnx, onnxruntime
(CPU), grpcio, protobuf, jinja2, pyyaml, typer, rich, psutil and nvidia-ml-py. What tritongen
needs beyond them is written into OUT (git-ignored), small enough to travel with the working
tree in one call (64 MiB in all):

- `pytriton.tar.xz`: tritonserver, its libraries and Python backend from the nvidia-pytriton
  wheel, with the Python-backend stub for 3.12 only and without the wheel's own Python 3.13
  library (about 25 MB instead of 55);
- `tritonclient.tar.xz`: the tritonclient package and perf_analyzer (the wheel ships that
  binary twice, as perf_client too);
- `wheels/`: pydantic and the HTTP client's dependencies, built for CPython 3.12;
- `server-wheels/`: numpy 1.x for the Python-backend stub, whose pybind11 reads numpy 1's
  array descriptors (with the image's numpy 2 every tensor a model returns arrives empty).

`benchmarks/gpu_setup.sh` installs the kit there; benchmarks/README.md gives the sequence.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTRITON = "nvidia-pytriton==0.7.0"
TRITONCLIENT = "tritonclient==2.51.0"
WHEELS = [
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "python-rapidjson==1.25",
    "geventhttpclient==2.6.1",
    "gevent==26.9.0",
    "greenlet==3.5.6",
    "zope.event==6.2",
    "zope.interface==8.7",
    "brotli==1.2.1",
]
PLATFORMS = [
    "manylinux_2_35_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
]
SERVER_WHEELS = ["numpy==1.26.4"]
STUB = "3.12"  # the GPU machine's Python


def download(requirement: str, folder: Path) -> Path:
    """One wheel for CPython 3.12 on x86-64 Linux, without its dependencies."""
    before = set(folder.glob("*.whl"))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", STUB, "--implementation", "cp", *platforms, "-d", str(folder),
         requirement],
        check=True,
    )  # fmt: skip
    found = set(folder.glob("*.whl")) - before
    name = requirement.split("==")[0].replace("-", "_").replace(".", "_").lower()
    return next(iter(found)) if found else next(folder.glob(f"{name}*.whl"))


def pack(out: Path, members: dict[str, Path]) -> int:
    """`out` as an xz tar of `members` (archive name -> path); its size."""
    with tarfile.open(out, "w:xz", preset=9) as archive:
        for name, path in members.items():
            archive.add(path, arcname=name)
    return out.stat().st_size


def pytriton_archive(wheel: Path, out: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(wheel).extractall(tmp)
        root = Path(tmp)
        for library in (root / "nvidia_pytriton.libs").glob("libpython3*"):
            library.unlink()  # the 3.13 stub's interpreter; the 3.12 stub uses the system's
        stubs = root / "pytriton" / "tritonserver" / "python_backend_stubs"
        for stub in stubs.iterdir():
            if stub.name != STUB:
                shutil.rmtree(stub)
        package = root / "pytriton"
        kept = {"pytriton/__init__.py": package / "__init__.py"}
        kept["pytriton/tritonserver"] = package / "tritonserver"
        kept["nvidia_pytriton.libs"] = root / "nvidia_pytriton.libs"
        return pack(out, kept)


def tritonclient_archive(wheel: Path, out: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(wheel).extractall(tmp)
        data = next(Path(tmp).glob("tritonclient-*.data"))
        return pack(
            out,
            {
                "tritonclient": data / "purelib" / "tritonclient",
                "bin/perf_analyzer": data / "data" / "bin" / "perf_analyzer",
            },
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-kit")
    args = parser.parse_args()
    wheels = args.out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for requirement in WHEELS:
        download(requirement, wheels)
    server_wheels = args.out / "server-wheels"
    server_wheels.mkdir(exist_ok=True)
    for requirement in SERVER_WHEELS:
        download(requirement, server_wheels)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {
            "pytriton.tar.xz": pytriton_archive(
                download(PYTRITON, Path(tmp)), args.out / "pytriton.tar.xz"
            ),
            "tritonclient.tar.xz": tritonclient_archive(
                download(TRITONCLIENT, Path(tmp)), args.out / "tritonclient.tar.xz"
            ),
        }
    sizes["wheels/"] = sum(p.stat().st_size for p in wheels.glob("*.whl"))
    sizes["server-wheels/"] = sum(p.stat().st_size for p in server_wheels.glob("*.whl"))
    for name, size in sizes.items():
        print(f"{name}: {size / 2**20:.1f} MiB")
    total = sum(sizes.values()) / 2**20
    print(f'{args.out}: {total:.1f} MiB; it travels as `carry: ["{args.out.name}"]`')
    return 0


if __name__ == "__main__":
    sys.exit(main())
