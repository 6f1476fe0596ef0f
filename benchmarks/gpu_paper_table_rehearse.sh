#!/usr/bin/env bash
# Rehearse benchmarks/gpu_paper_table.sh on this CPU with the device's software (torch 2.11.0, torchvision 0.26.0,
# safetensors 0.8.0, huggingface_hub 1.33.0 in a venv, plus the carried .whl/ timm): a 1-block model on 2,048 images,
# 2 seeds + 1 ablation, a JOB_S that cuts the last rows off (so the cut-short path runs too). Then checks what $OUT
# holds against what a device call brings back.   bash benchmarks/gpu_paper_table_rehearse.sh   (~6 min on 2 cores)
set -euo pipefail
VENV=${VENV:-/work/venv211}
[ -x "$VENV/bin/python3" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q torch==2.11.0 \
    torchvision==0.26.0 safetensors==0.8.0 huggingface_hub==1.33.0 numpy pillow tqdm; }
[ -f .data/cifar10-jpeg.tar.xz ] && ls .whl/timm-*.whl > /dev/null || { echo "set up .data/ and .whl/ first (benchmarks/gpu_job.py)"; exit 1; }
TMP=$(mktemp -d /tmp/gpu-pt-rehearse.XXXX)
export PATH=$VENV/bin:$PATH OUT=$TMP/out
JOB_S=${JOB_S:-240} EPOCHS=1 BATCH=128 ABLATIONS='alpha=1' \
    EXTRA='--model-args {"depth":1} --num-train 2048 --eval-train 1000 --eval-test 1000 --probe-epochs 5' \
    timeout 600 bash benchmarks/gpu_paper_table.sh > "$TMP/stdout" 2>&1 || { tail -40 "$TMP/stdout"; exit 1; }
tail -25 "$TMP/stdout"
python3 - "$OUT" <<'PY'
import json, re, sys
from pathlib import Path
files = [p for p in Path(sys.argv[1]).rglob('*') if p.is_file()]
sizes = {p.name: p.stat().st_size for p in files}
print('OUT:', sizes)
assert len(files) <= 8 and all(s <= 16 * 2**20 for s in sizes.values()) and sum(sizes.values()) <= 64 * 2**20
assert all(re.fullmatch(r'[A-Za-z0-9._-]+', n) for n in sizes), 'odd file names do not come back'
for need in ('paper_table.md', 'paper_table.json', 'paper_curves.png', 'job.log'):
    assert need in sizes, f'{need} missing from $OUT'
rows = json.loads((Path(sys.argv[1]) / 'paper_table.json').read_text())['rows']
done = {k: len(v) for k, v in rows.items()}
print('rows back:', done)
assert done.get('random') and done.get('macrl'), 'not even the first rows came back'
PY
echo "rehearsal OK ($TMP)"
