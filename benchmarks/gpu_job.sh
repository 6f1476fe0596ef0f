#!/usr/bin/env bash
# Device entry point of benchmarks/gpu_job.py (its docstring has the commands): installs the carried wheels
# (.whl/, e.g. the timm we test with) ahead of the machine's own packages, then runs the job; $OUT gets job.log.
#   run(command="bash benchmarks/gpu_job.sh", carry=[".data", ".whl"], timeout_s=600)
set -uo pipefail
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing .whl/ failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OUT=${OUT:-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
python3 benchmarks/gpu_job.py 2>&1 | tee "$OUT/job.log"
