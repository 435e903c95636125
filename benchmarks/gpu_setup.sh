#!/usr/bin/env bash
# Install the GPU kit (made here by benchmarks/gpu_kit.py, carried as .gpu-kit) on the GPU
# machine, which has no network: tritonserver, perf_analyzer, tritonclient, pydantic and
# tritongen itself go into $SITE; a venv $VENV sees them and the image's own packages (torch
# among them) but numpy 1.x before the image's numpy 2: the Python-backend stub, which runs
# with the packages of the venv first on PATH, reads numpy 1's array layout.
# Idempotent: a machine that has it already skips the work. Source it:
#     source benchmarks/gpu_setup.sh
KIT=${KIT:-.gpu-kit}
SITE=${SITE:-/tmp/tritongen-site}
VENV=${VENV:-/tmp/tritongen-venv}
if [ ! -f "$VENV/.kit-installed" ]; then
  mkdir -p "$SITE/lib" || return 2
  tar -xJf "$KIT/pytriton.tar.xz" -C "$SITE" && tar -xJf "$KIT/tritonclient.tar.xz" -C "$SITE" \
    || { echo "gpu_setup: cannot unpack $KIT (run benchmarks/gpu_kit.py first)" >&2; return 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$KIT"/wheels/*.whl \
    || { echo "gpu_setup: pip could not install $KIT/wheels" >&2; return 2; }
  # tritongen as its wheel lays it out: the templates inside the package.
  rm -rf "$SITE/tritongen" && cp -r tritongen "$SITE/" && cp -r templates "$SITE/tritongen/templates"
  # perf_analyzer's libraries, as the names it asks for: the copies inside pytriton's wheel.
  ln -sf "$SITE"/nvidia_pytriton.libs/libb64-*.so.0d "$SITE/lib/libb64.so.0d"
  ln -sf "$SITE"/nvidia_pytriton.libs/libcudart-*.so.12* "$SITE/lib/libcudart.so.12"
  image=$(python3 -c "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))")
  python3 -m venv --without-pip "$VENV" || return 2
  packages=$("$VENV/bin/python3" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$packages" \
    "$KIT"/server-wheels/*.whl || { echo "gpu_setup: cannot install numpy 1.x" >&2; return 2; }
  printf '%s\n%s\n' "$SITE" "$image" > "$packages/tritongen-kit.pth"
  touch "$VENV/.kit-installed"
fi
# zip files keep no modes: the binaries unpacked from wheels must be made executable.
chmod +x "$SITE"/bin/* "$SITE"/pytriton/tritonserver/bin/* \
  "$SITE"/pytriton/tritonserver/python_backend_stubs/*/* 2>/dev/null
export TRITONGEN_STUB_VENV="$VENV"  # the stub's packages; tritongen's own are the image's
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
export LD_LIBRARY_PATH="$SITE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
