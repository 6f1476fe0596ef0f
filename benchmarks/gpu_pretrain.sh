#!/usr/bin/env bash
# Pretrain an encoder on the lent GPU machine within a few minutes, evaluate kNN there, and bring back
# the fp16 encoder checkpoint in <=15 MiB pieces plus the eval JSON and the log (all under $OUT).
#
# Here (once):   mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.xz .data/ && echo /.data/ >> .git/info/exclude
# Device tool:   run(command="bash benchmarks/gpu_pretrain.sh 7", carry=[".data"], timeout_s=600)
# Back here:     cat <files_at>/ckpt.part-* > runs/gpu/checkpoint.pth   (then `macrl eval` / `macrl export`)
# CPU smoke test of this script:
#   OUT=/tmp/gpu_out MODEL_ARGS='{"depth": 1}' CALIB_STEPS=2 bash benchmarks/gpu_pretrain.sh 0.3
set -euo pipefail
MINUTES=${1:-7}
MODEL=${MODEL:-macrl_vit_small_p4_cifar}
MODEL_ARGS=${MODEL_ARGS:-}
DATA=${MACRL_DATA:-.data/cifar10-jpeg.tar.xz}
BATCH=${BATCH:-512}
CALIB_STEPS=${CALIB_STEPS:-30}
OUT=${OUT:-out}
RUN=${RUN:-runs/gpu-$(date +%Y%m%d-%H%M%S)}  # a new folder each time: never resumes or overwrites a run
ALPHA=${ALPHA:-1}  # short runs learn better with alpha 1 than the paper's 0.1 (README, paper table ablation)
mkdir -p "$OUT" "$RUN"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
COMPILE=$(python3 -c "import torch; print('--compile' if torch.cuda.is_available() else '--no-compile')")
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/env.txt"

# 1) calibrate: img/s of the real step (compiled), so the cosine schedule fits the time budget
python3 -m macrl_hub.train --model "$MODEL" --model-args "$MODEL_ARGS" --data "$DATA" --batch-size "$BATCH" \
    --epochs 1000 --max-steps "$CALIB_STEPS" $COMPILE --out "$RUN-calib" --no-progress --log-every 5 \
    > "$OUT/calib.log" 2>&1 || { tail -30 "$OUT/calib.log"; exit 1; }
EPOCHS=$(python3 - "$RUN-calib/log.jsonl" "$MINUTES" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"img_per_s"' in l]
rate = max(r['img_per_s'] for r in recs[1:] or recs)  # skip the compile step
n_train = 50000
print(max(1, int(float(sys.argv[2]) * 60 * rate * 0.9 / n_train)))
PY
)
echo "calibrated: $EPOCHS epochs in $MINUTES min" | tee -a "$OUT/env.txt"

# 2) train with the schedule sized to the budget (the budget also stops it, checkpoint kept)
python3 -m macrl_hub.train --model "$MODEL" --model-args "$MODEL_ARGS" --data "$DATA" --batch-size "$BATCH" \
    --epochs "$EPOCHS" --warmup-epochs "$(python3 -c "print(max(0.5, $EPOCHS / 20))")" --blr 1.5e-4 --alpha "$ALPHA" \
    --time-budget "${MINUTES}m" $COMPILE --out "$RUN" --ckpt-every-min 2 --no-progress --log-every 20 \
    --knn-every "$(( EPOCHS > 4 ? EPOCHS / 4 : 1 ))" 2>&1 | tee "$OUT/train.log" | tail -5
cp "$RUN/log.jsonl" "$OUT/log.jsonl"

# 3) evaluate there: kNN on the full CIFAR-10 test set with the full train bank
python3 -m macrl_hub.evaluate knn --model "$RUN/checkpoint.pth" --data "$DATA" --json-out "$OUT/knn.json" \
    2> "$OUT/eval.err" | tail -1

# 4) the encoder alone (fp16) as a small `macrl train`-format checkpoint, split to fit the transfer limits
python3 - "$RUN/checkpoint.pth" "$RUN/encoder.pth" <<'PY'
import sys, torch
ck = torch.load(sys.argv[1], map_location='cpu', weights_only=True)
ck['model'] = {k: v.half() if v.is_floating_point() else v for k, v in ck['model'].items() if k.startswith('encoder.')}
for k in ('optimizer', 'scaler'):
    ck.pop(k, None)
torch.save(ck, sys.argv[2])
PY
split -b 15M -d "$RUN/encoder.pth" "$OUT/ckpt.part-"
ls -la "$OUT"
