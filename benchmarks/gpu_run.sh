#!/usr/bin/env bash
# The GPU check in one command on the GPU machine (the device tool's `run`, with
# `carry: [".gpu-kit"]`): install the kit, say what the machine has, run the check into $OUT.
#     bash benchmarks/gpu_run.sh [gpu_check.py's options]
set -u
source benchmarks/gpu_setup.sh || exit 2
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$TRITONGEN_STUB_VENV/bin/python3" -c "import numpy, torch; print(numpy.__version__, torch.__version__)"
python3 -c "import sys, sysconfig; print(sys.version.split()[0], sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('LDLIBRARY'))"
ldconfig -p | grep -m2 'libpython3.12' || echo "no libpython3.12 in ldconfig"
python3 benchmarks/gpu_check.py --out "${OUT:-benchmarks}" "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_check.log"
exit "${PIPESTATUS[0]}"
