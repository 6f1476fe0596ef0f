#!/usr/bin/env bash
# Rehearse the one-call GPU job (benchmarks/gpu_job.sh) on this CPU, with the device's software: torch 2.11.0,
# torchvision 0.26.0, safetensors 0.8.0, huggingface_hub 1.33.0 in a venv, plus the carried .whl/ (timm), a 1-block
# model on 4,096 images, both runs, compilation on with a short COMPILE_TIMEOUT (so the eager fallback runs too).
# Then checks what $OUT holds against the transfer limits, unpacks it, loads the packed checkpoints, and checks
# that the full-size models' packs fit.   bash benchmarks/gpu_rehearse.sh      (~10 min; venv once: ~5 min)
# The paper's encoder instead (`--recipe paper`, its pack compressed, see gpu_job.py):  RUNS=medium bash benchmarks/gpu_rehearse.sh
set -euo pipefail
VENV=${VENV:-/work/venv211}
[ -x "$VENV/bin/python3" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q torch==2.11.0 \
    torchvision==0.26.0 safetensors==0.8.0 huggingface_hub==1.33.0 numpy pillow tqdm; }
[ -f .data/cifar10-jpeg.tar.xz ] && ls .whl/timm-*.whl > /dev/null || { echo "set up .data/ and .whl/ first (benchmarks/gpu_job.py)"; exit 1; }
TMP=$(mktemp -d /tmp/gpu-rehearse.XXXX)
export RUNS=${RUNS:-small,tiny}
export PATH=$VENV/bin:$PATH OUT=$TMP/out WORK=$TMP/work
start=$(date +%s)
JOB_S=${JOB_S:-300} MODEL_ARGS='{"depth": 1}' BATCH=128 KNN_EVERY=1 COMPILE=${COMPILE:-on} COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-40} \
    EXTRA='--num-train 4096 --knn-train 1000 --knn-test 500 --bank-size 1024' FINAL_S=${FINAL_S:-40} \
    timeout 600 bash benchmarks/gpu_job.sh > "$TMP/stdout" 2>&1 || { tail -40 "$TMP/stdout"; exit 1; }
echo "job: $(( $(date +%s) - start )) s (device call limit 600 s)"
tail -5 "$TMP/stdout"
python3 - "$OUT" <<'PY'
import os, re, sys
from pathlib import Path
files = [p for p in Path(sys.argv[1]).rglob('*') if p.is_file()]
sizes = {p.name: p.stat().st_size for p in files}
print('OUT:', sizes)
assert len(files) <= 8, f'{len(files)} files: only 8 come back'
assert all(s <= 16 * 2**20 for s in sizes.values()), 'a file over 16 MiB does not come back'
assert sum(sizes.values()) <= 64 * 2**20, 'over 64 MiB in all'
assert all(re.fullmatch(r'[A-Za-z0-9._-]+', n) for n in sizes), 'odd file names do not come back'
for need in ['job.json', 'job.log'] + [f'{n}.tar.part-00' for n in os.environ['RUNS'].split(',')]:
    assert need in sizes, f'{need} missing from $OUT'
PY
export PYTHONPATH=/tmp/site  # the carried timm, as the job installed it
python3 benchmarks/gpu_job.py unpack "$OUT" "$TMP/back"
python3 - "$TMP/back" <<'PY'
import json, os, sys
import torch
from pathlib import Path
sys.path.insert(0, '.')
sys.path.insert(0, 'benchmarks')
from macrl_hub.evaluate import load_encoder
back = Path(sys.argv[1])
job = json.loads((back / 'job.json').read_text())
print('phases:', [(p['phase'], p['wall_s']) for p in job['phases']])
names = os.environ['RUNS'].split(',')
for name in names:
    enc = load_encoder(str(back / name / 'checkpoint.pth'))
    r = job['runs'][name]
    print(name, type(enc).__name__, 'fallback:', r.get('fallback'), 'knn:', r.get('knn'), 'img/s:', r.get('img_per_s'))
    from gpu_job import decode_fp16, encode_fp16  # the compressed pack's codec under the device's torch
    sd = {k: v.half() for k, v in enc.state_dict().items()}
    assert all(torch.equal(a.view(torch.int16), sd[k].view(torch.int16)) for k, a in decode_fp16(encode_fp16(sd)).items())
    assert r.get('knn'), f'{name}: no final kNN'
# the full-size packs: online branch in fp16 must fit next to each other in 64 MiB
import torch
from macrl_hub.config import TrainConfig
from macrl_hub.train import build_macrl
sys.path.insert(0, 'benchmarks')
from gpu_job import MODELS
total = 0
for name in names:
    sd = build_macrl(TrainConfig(model=MODELS[name], bank_size=2048)).state_dict()
    n = sum(v.numel() * 2 for k, v in sd.items() if k.startswith(('encoder.', 'projector.', 'decoder.')))
    enc = sum(v.numel() * 2 for k, v in sd.items() if k.startswith('encoder.'))
    print(f'{MODELS[name]}: online branch fp16 {n / 2**20:.1f} MiB, encoder {enc / 2**20:.1f} MiB')
    total += n if n < 63 * 2**20 else 0.87 * enc  # over: encoder only, compressed (tests/test_gpu_job.py: <= 0.87)
assert total < 63 * 2**20, f'full-size packs {total / 2**20:.1f} MiB: a run would go lean or spill'
PY
echo "rehearsal OK ($TMP)"
