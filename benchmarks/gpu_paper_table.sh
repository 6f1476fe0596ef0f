#!/usr/bin/env bash
# The paper's comparison (benchmarks/paper_table.py) in one device call: random / macrl / mae / moco at equal
# training FLOPs on all of CIFAR-10, 2 seeds, then ablations, each row evaluated (kNN k=20/200, linear probe) on
# the 10,000 test images. Rows go in order (seed 0's four, seed 1's four, ablations) and the table, its JSON and
# both curve PNGs are rewritten in $OUT after every row, so a call cut short still brings back every finished row.
#   rehearse on CPU first:  bash benchmarks/gpu_paper_table_rehearse.sh
#   before:    git rm -r -q --cached model_cards && echo /model_cards/ >> .git/info/exclude   (over 64 MiB to carry)
#   the call:  run(command="bash benchmarks/gpu_paper_table.sh", carry=[".data", ".whl"], timeout_s=600)
#   after:     git reset -q model_cards && grep -vx /model_cards/ .git/info/exclude > e.tmp; mv e.tmp .git/info/exclude
#   then:      mkdir -p benchmarks/results/gpu && cp <files_at>/paper_table.* <files_at>/paper_curves*.png benchmarks/results/gpu/  (and README)
# Sizing (H200, ViT-Ti/4, measured in earlier calls: eager step 16,292 img/s at batch 1024, ~11.4k img/s in
# `macrl train`): 8 MACRL-epochs of FLOPs per row is ~40 s of training; 6 training rows + 2 random + 3 ablations,
# with data decode and evaluation, fit in JOB_S=540 s.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"  # carried wheels, environment, $OUT
DATA=${DATA:-.data/cifar10-jpeg.tar.xz}
start=$(date +%s)
# shellcheck disable=SC2086  # ABLATIONS and EXTRA are word lists
timeout --signal=TERM "${JOB_S:-540}" python3 benchmarks/paper_table.py --data "$DATA" \
    --epochs "${EPOCHS:-8}" --batch-size "${BATCH:-1024}" --blr "${BLR:-3.75e-4}" --warmup-epochs "${WARMUP:-1}" \
    --seeds 0 1 --knn-every "${KNN_EVERY:-1}" --ablations ${ABLATIONS:-alpha=1 rec_on=visible bank_size=65536} \
    --runs-dir /tmp/paper-table-runs --out "$OUT" ${EXTRA:-} 2>&1 | grep -v 'features:' | tee "$OUT/job.log"
echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s" | tee -a "$OUT/job.log"
