#!/usr/bin/env bash
# Device entry point of benchmarks/gpu_job.py (its docstring has the commands): gpu_env.sh installs the carried wheels
# (.whl/, e.g. the timm we test with) ahead of the machine's own packages, then runs the job; $OUT gets job.log.
#   run(command="bash benchmarks/gpu_job.sh", carry=[".data", ".whl"], timeout_s=600)
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"  # carried wheels, environment, $OUT
python3 benchmarks/gpu_job.py 2>&1 | tee "$OUT/job.log"
