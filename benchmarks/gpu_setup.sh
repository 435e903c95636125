#!/usr/bin/env bash
# Install the GPU kit (made here by benchmarks/gpu_kit.py, carried as .gpu-kit) on the GPU
# machine, which has no network: tritonserver, perf_analyzer, tritonclient, pydantic and
# tritongen itself go into $SITE, beside the image's own Python packages (torch among them).
# Idempotent: a machine that has it already skips the work. Source it:
#     source benchmarks/gpu_setup.sh
KIT=${KIT:-.gpu-kit}
SITE=${SITE:-/tmp/tritongen-site}
if [ ! -f "$SITE/.installed" ]; then
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
  touch "$SITE/.installed"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
export LD_LIBRARY_PATH="$SITE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
