"""The one-call GPU job: pretrain macrl_vit_small_p4_cifar, then macrl_vit_tiny_p4_cifar, on a lent GPU inside one
device call (<= 10 min), evaluate kNN there, and leave under $OUT everything publishing needs (<= 8 files, 64 MiB).
RUNS=medium trains the paper's CIFAR encoder (macrl_vit_medium_p4_cifar) instead, with `--recipe paper`.

Here, once (the data and the timm wheel travel as ignored folders):
    mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.xz .data/ && echo /.data/ >> .git/info/exclude
    echo /.whl/ >> .git/info/exclude && pip download --no-deps --only-binary=:all: -d .whl timm==1.0.31
Rehearse on CPU against the device's software (minutes; any session, before a draw):
    bash benchmarks/gpu_rehearse.sh
Device tool, one call (model_cards/ is over the 64 MiB a call may carry: keep it out of what travels, then restore):
    git rm -r -q --cached model_cards && echo /model_cards/ >> .git/info/exclude
    run(command="bash benchmarks/gpu_job.sh", carry=[".data", ".whl"], timeout_s=600)
    git reset -q model_cards && grep -vx /model_cards/ .git/info/exclude > e.tmp; mv e.tmp .git/info/exclude
The paper's encoder (rehearse with `RUNS=medium bash benchmarks/gpu_rehearse.sh`):
    run(command="RUNS=medium bash benchmarks/gpu_job.sh", carry=[".data", ".whl"], timeout_s=600)
    run(command="python3 benchmarks/gpu_job.py spill")   # AT ONCE, only if the job printed "left in runs/gpu-spill"
Back here (joins the pieces, unpacks runs/gpu/<small|tiny|medium>/{checkpoint.pth,log.jsonl,knn.json,...}):
    python benchmarks/gpu_job.py unpack <files_at> runs/gpu [<the spill call's files_at>]
    macrl eval knn+linear --model runs/gpu/small/checkpoint.pth --data ../shared/data/cifar10-jpeg.tar.xz

What it does, each phase timed (job.json: versions, phases, bf16 matmul peak, FLOPs per image, img/s, MFU, kNN):
  1. versions of everything it imports; the GPU's bf16 matmul peak (8192^3); FLOPs of one MACRL step per image.
  2. each run is a `macrl train --fit-budget --final-knn` child process with its own wall-clock share: the schedule
     is sized to the budget inside that process (one compilation), kNN k=20/200 on the 10,000 test images at the
     end. If no training step is logged within COMPILE_TIMEOUT s (a compile that fails or stalls), the child is
     killed and the run restarts eagerly (--no-compile) with the time left; a child past its share is killed and
     its last checkpoint (every --ckpt-every-min) is packed.
  3. after each run: its online branch (encoder, projector, decoder; fp16) as a `macrl train` checkpoint, log.jsonl,
     config.json, knn.json and stdout, tarred and split into <= 16,000,000-byte pieces under $OUT. The momentum
     branch and the memory bank do not fit the 64 MiB that comes back (ViT-S/4 alone is 43 MB in fp16). Over the
     room left: the encoder alone; still over (ViT-M/4's encoder is 75.6 MB in fp16): its weights compressed
     losslessly (encode_fp16: ~0.86 of fp16 for trained weights); still over: the pieces that do not fit wait in
     runs/gpu-spill/ on the device for a `spill` call, which must come before the machine is given back (it goes
     back when idle ~30 s).
Settings (environment): JOB_S total seconds (530), SMALL_SHARE of the training time (0.7), and per run (defaults in
RUN_DEFAULTS; small and tiny / medium): RECIPE (fast / paper), BATCH (512 / 2048), BLR (3.75e-4, i.e. lr 7.5e-4 at
batch 512 / the paper's 1.5e-4), ALPHA (1 / 0.1), WARMUP_EPOCHS (8 / 3); MODEL_ARGS (JSON for every model,
rehearsal: '{"depth": 1}'),
EXTRA (more train flags), COMPILE (auto: on with CUDA), COMPILE_TIMEOUT (180), RUNS (small,tiny),
DATA (.data/cifar10-jpeg.tar.xz).
"""
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

T0 = time.time()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # macrl_hub from this checkout (the device has no install of it)
PIECE = 16_000_000  # bytes per file under $OUT (limit 16 MiB)
OUT_LIMIT = 64 * 2 ** 20  # bytes that come back in all
MAX_FILES = 8  # files that come back
MODELS = {'small': 'macrl_vit_small_p4_cifar', 'tiny': 'macrl_vit_tiny_p4_cifar', 'medium': 'macrl_vit_medium_p4_cifar'}
#: run -> its defaults for the env settings: medium (the paper's CIFAR encoder) trains with `--recipe paper`
#: (recipes.py) at the recipe's batch, lr and alpha, warmup shortened to the minutes there are; env values still win
_FAST = dict(BATCH='512', BLR='3.75e-4', ALPHA='1', WARMUP_EPOCHS='8', RECIPE='fast')  # the published small/tiny
RUN_DEFAULTS = {'small': _FAST, 'tiny': _FAST,
                'medium': dict(BATCH='2048', BLR='1.5e-4', ALPHA='0.1', WARMUP_EPOCHS='3', RECIPE='paper')}
WEIGHTS_Z = 'encoder.fp16z'  # the encoder's fp16 weights, byte planes compressed (pack's last resort before spilling)
ONLINE = ('encoder.', 'projector.', 'decoder.')  # what comes back of the MACRL state

phases: List[Dict[str, Any]] = []
job: Dict[str, Any] = {'phases': phases, 'runs': {}}


def now() -> float:
    return time.time() - T0


def phase(name: str, t_begin: float, **info) -> None:
    rec = dict(phase=name, start_s=round(t_begin, 1), wall_s=round(now() - t_begin, 1), **info)
    phases.append(rec)
    print(f'[{now():6.1f}s] {name}: {rec["wall_s"]} s ' + (json.dumps(info) if info else ''), flush=True)


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def versions() -> Dict[str, Any]:
    import platform
    import torch
    v: Dict[str, Any] = {'python': platform.python_version(), 'torch': torch.__version__,
                         'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}
    for mod in ('torchvision', 'timm', 'safetensors', 'huggingface_hub', 'numpy', 'PIL', 'triton'):
        try:
            m = __import__(mod)
            v[mod] = getattr(m, '__version__', '?')
            if mod == 'timm':
                v['timm_path'] = str(Path(m.__file__).parent)
        except Exception as e:  # report, never fail the job over a version string
            v[mod] = f'unavailable ({type(e).__name__})'
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v['gpu'] = p.name
        v['gpu_memory_gib'] = round(p.total_memory / 2 ** 30, 1)
        v['sms'] = p.multi_processor_count
    v['cpus'] = os.cpu_count()
    return v


def matmul_peak() -> Optional[float]:
    """bf16 TFLOP/s of an 8192^3 product on the GPU (mean of 10 after 3 warm-ups); None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return None
    n = 8192
    a = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    b = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * 10 / (time.time() - t) / 1e12


def step_flops(model: str, model_args: str) -> float:
    """FLOPs of one MACRL training step (both views: masked encoder fwd+bwd, decoder, momentum fwd) per image."""
    from macrl_hub.config import TrainConfig
    from macrl_hub import train
    return train.step_flops(TrainConfig(model=model, model_args=model_args, alpha=1.0, bank_size=1024))


def launch(name: str, run_dir: Path, budget_s: float, compile_: bool, log_path: Path) -> subprocess.Popen:
    d = RUN_DEFAULTS[name]
    args = [sys.executable, '-m', 'macrl_hub.train', '--recipe', env('RECIPE', d['RECIPE']), '--model', MODELS[name],
            '--model-args', env('MODEL_ARGS', ''), '--data', env('DATA', '.data/cifar10-jpeg.tar.xz'),
            '--batch-size', env('BATCH', d['BATCH']), '--epochs', '1000',
            '--warmup-epochs', env('WARMUP_EPOCHS', d['WARMUP_EPOCHS']), '--blr', env('BLR', d['BLR']),
            '--alpha', env('ALPHA', d['ALPHA']), '--time-budget', f'{max(1, int(budget_s))}s', '--fit-budget',
            '--final-knn', '--knn-every', env('KNN_EVERY', '10'), '--ckpt-every-min', '1.5',
            '--ckpt-every-epochs', '0', '--log-every', '10', '--no-progress', '--out', str(run_dir),
            '--compile' if compile_ else '--no-compile'] + shlex.split(env('EXTRA', ''))
    print(f'[{now():6.1f}s] {name}: ' + ' '.join(shlex.quote(a) for a in args[1:]), flush=True)
    f = open(log_path, 'ab')
    return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def trained_rows(run_dir: Path) -> int:
    p = run_dir / 'log.jsonl'
    return p.read_text().count('"img_per_s"') if p.is_file() else 0


def stop(proc: subprocess.Popen, graceful: bool = True) -> None:
    """SIGTERM (`macrl train` finishes its step and checkpoints it), SIGKILL 10 s later; at once when not
    `graceful` (a child stalled before its first step has nothing to save: no 10 s to spend waiting)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10))[0 if graceful else 1:]:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


def run(name: str, work: Path, share_s: float, final_s: float) -> Path:
    """One `macrl train` child within `share_s` wall seconds, eager fallback if compilation stalls or fails."""
    t_run = now()
    end = t_run + share_s
    mode = env('COMPILE', 'auto')
    compile_ = mode == 'on' or (mode == 'auto' and job['versions']['cuda_available'])
    timeout = float(env('COMPILE_TIMEOUT', '180'))
    run_dir = work / name
    log_path = work / f'{name}.log'
    proc = launch(name, run_dir, share_s - final_s, compile_, log_path)
    info: Dict[str, Any] = {'compile': compile_, 'fallback': None}
    while proc.poll() is None:
        time.sleep(1)
        if compile_ and trained_rows(run_dir) == 0 and now() - t_run > timeout:
            info['fallback'] = f'no training step logged {timeout:.0f} s after launch: compiling stalled; eager'
        elif now() > end + 15:
            info['killed'] = f'past its share ({share_s:.0f} s + 15): killed, last checkpoint kept'
            stop(proc)
            break
        else:
            continue
        print(f'[{now():6.1f}s] {name}: {info["fallback"]}', flush=True)
        stop(proc, graceful=False)
        run_dir = work / f'{name}-eager'
        proc = launch(name, run_dir, end - now() - final_s, False, log_path)
        compile_ = False
    info['returncode'] = proc.poll()
    if info['returncode'] and trained_rows(run_dir) == 0 and compile_:  # crashed while compiling: eager
        info['fallback'] = f'exit {info["returncode"]} before a training step with --compile; eager'
        print(f'[{now():6.1f}s] {name}: {info["fallback"]}', flush=True)
        run_dir = work / f'{name}-eager'
        proc = launch(name, run_dir, end - now() - final_s, False, log_path)
        proc.wait(max(1, end + 15 - now()))
        stop(proc)
        info['returncode'] = proc.poll()
    info.update(summarize(run_dir))
    job['runs'][name] = info
    phase(f'run {name}', t_run, **{k: v for k, v in info.items() if k in ('returncode', 'fallback', 'img_per_s',
                                                                           'knn', 'epochs')})
    tail = log_path.read_text(errors='replace').splitlines()[-12:] if log_path.is_file() else []
    print('\n'.join('    ' + line[-300:] for line in tail), flush=True)
    return run_dir


def summarize(run_dir: Path) -> Dict[str, Any]:
    from macrl_hub.train import read_log
    rows = read_log(run_dir / 'log.jsonl') if (run_dir / 'log.jsonl').is_file() else []
    train = [r for r in rows if 'img_per_s' in r]
    fit = next((r for r in rows if r.get('event') == 'fit_budget'), None)
    end = next((r for r in rows if r.get('event') == 'end'), None)
    steady = [r['img_per_s'] for r in train if fit and r['step'] > fit['step']] or [r['img_per_s'] for r in train[1:]]
    s: Dict[str, Any] = {'run_dir': run_dir.name, 'logged_rows': len(train)}
    if steady:
        s['img_per_s'] = round(sorted(steady)[len(steady) // 2], 1)  # median of the logged intervals
    if fit:
        s['fit'] = fit
    if end:
        s.update(epochs=round(end['epochs'], 2), steps=end['step'], train_time_s=round(end['train_time'], 1),
                 first_step_s=end.get('first_step_s'), reason=end['reason'], final_loss=end.get('loss'))
    online = [{k: v for k, v in r.items() if k.startswith('knn') or k == 'epoch'} for r in rows if 'knn_top1_k200' in r]
    if online:
        s['online_knn'] = online
    if (run_dir / 'knn.json').is_file():
        k = json.loads((run_dir / 'knn.json').read_text())
        s['knn'] = {key: k[key] for key in k if key.startswith('knn_top1')}
    return s


def encode_fp16(sd: Dict[str, Any]) -> bytes:
    """fp16 tensors -> one lossless blob: a JSON header, then the high bytes of every value (sign, exponent, 2
    mantissa bits: they compress) and the low bytes (they hardly do), each zlib'd. Trained ViT weights: ~0.86 of
    their fp16 size (the published ViT-S/4: 0.859), which brings the medium encoder (75.6 MB) under 64 MiB."""
    import numpy as np
    import torch
    names = [k for k, v in sd.items() if v.dtype == torch.float16]
    if len(names) != len(sd):
        raise ValueError(f'encode_fp16 takes fp16 tensors only, not {sorted({str(v.dtype) for v in sd.values()})}')
    flat = np.concatenate([sd[k].contiguous().view(-1).view(torch.int16).numpy().view(np.uint8)
                           for k in names]) if names else np.zeros(0, np.uint8)
    hi, lo = zlib.compress(flat[1::2].tobytes(), 9), zlib.compress(flat[0::2].tobytes(), 9)  # little-endian
    head = json.dumps(dict(names=names, shapes=[list(sd[k].shape) for k in names], hi=len(hi), lo=len(lo))).encode()
    return b'FP16Z1' + len(head).to_bytes(8, 'little') + head + hi + lo


def decode_fp16(blob: bytes) -> Dict[str, Any]:
    """encode_fp16's inverse, bit for bit."""
    import numpy as np
    import torch
    if blob[:6] != b'FP16Z1':
        raise ValueError('not an encode_fp16 blob')
    n = int.from_bytes(blob[6:14], 'little')
    head = json.loads(blob[14:14 + n])
    a = 14 + n  # the high bytes' stream starts here, the low bytes' after it
    hi = np.frombuffer(zlib.decompress(blob[a:a + head['hi']]), np.uint8)
    lo = np.frombuffer(zlib.decompress(blob[a + head['hi']:a + head['hi'] + head['lo']]), np.uint8)
    flat = np.empty(2 * len(hi), np.uint8)
    flat[1::2], flat[0::2] = hi, lo
    vals = torch.from_numpy(flat.view(np.int16).copy()).view(torch.float16)
    out, i = {}, 0
    for k, shape in zip(head['names'], head['shapes']):
        numel = math.prod(shape)
        out[k] = vals[i:i + numel].view(shape).clone()
        i += numel
    return out


def spill_dir() -> Path:
    """Where pack leaves the pieces that do not fit under $OUT on the device (ignored, kept while the machine is
    warm): `python3 benchmarks/gpu_job.py spill` in the next call moves them to $OUT."""
    return Path(env('SPILL', 'runs/gpu-spill'))


def pack(name: str, run_dir: Path, work: Path, out: Path, room: int, level: int = 0) -> int:
    """Tar the run's online branch (fp16) and logs, split under $OUT; returns the bytes written there.
    When the tar does not fit in `room`: level 1 keeps the encoder only, level 2 also compresses its weights
    (encode_fp16); what still does not fit is written in pieces to spill_dir() for a second call."""
    import torch
    t = now()
    stage = work / f'pack-{name}'
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    ck_path = run_dir / 'checkpoint.pth'
    if ck_path.is_file():
        ck = torch.load(ck_path, map_location='cpu', weights_only=True)
        keep = ('encoder.',) if level else ONLINE
        ck['model'] = {k: v.half() if v.is_floating_point() else v
                       for k, v in ck['model'].items() if k.startswith(keep)}
        for k in ('optimizer', 'scaler'):
            ck.pop(k, None)
        ck['packed'] = f'online branch only ({", ".join(keep)}), fp16, by benchmarks/gpu_job.py'
        if level >= 2:
            floats = {k: v for k, v in ck['model'].items() if v.dtype == torch.float16}
            (stage / WEIGHTS_Z).write_bytes(encode_fp16(floats))
            ck['model'] = {k: v for k, v in ck['model'].items() if k not in floats}
            ck['packed'] += f'; its fp16 tensors in {WEIGHTS_Z} (unpack puts them back)'
        torch.save(ck, stage / 'checkpoint.pth')
    for f in ('log.jsonl', 'config.json', 'knn.json'):
        if (run_dir / f).is_file():
            shutil.copy(run_dir / f, stage / f)
    if (work / f'{name}.log').is_file():
        shutil.copy(work / f'{name}.log', stage / 'train.log')
    tar_path = work / f'{name}.tar'
    with tarfile.open(tar_path, 'w') as tar:
        tar.add(stage, arcname=name)
    size = tar_path.stat().st_size
    if size > room and level < 2:
        print(f'[{now():6.1f}s] pack {name}: {size} bytes > {room} left; ' +
              ('encoder only' if level == 0 else 'encoder weights compressed'), flush=True)
        return pack(name, run_dir, work, out, room, level + 1)
    data = tar_path.read_bytes()
    here, i, n = 0, 0, 0
    while i < len(data):
        fits = min(PIECE, room - here) if len(list(out.iterdir())) < MAX_FILES else 0
        dest = out if fits > 0 else spill_dir()
        dest.mkdir(parents=True, exist_ok=True)
        piece = data[i:i + (fits if fits > 0 else PIECE)]
        (dest / f'{name}.tar.part-{n:02d}').write_bytes(piece)
        here += len(piece) if dest == out else 0
        i, n = i + len(piece), n + 1
    spilled = size - here
    if spilled:
        print(f'[{now():6.1f}s] pack {name}: {spilled} bytes over what comes back, left in {spill_dir()}: run '
              f'`python3 benchmarks/gpu_job.py spill` as the next call, before the machine goes back', flush=True)
    phase(f'pack {name}', t, bytes=size, pieces=n, level=level, spilled=spilled)
    return here


def spill(out: Path) -> None:
    """Second call: move the pieces pack left in spill_dir() under $OUT (8 files, 64 MiB at most per call)."""
    out.mkdir(parents=True, exist_ok=True)
    parts = sorted(spill_dir().glob('*.tar.part-*'))
    if not parts:
        raise SystemExit(f'nothing in {spill_dir()}: the machine was given back (or nothing spilled)')
    room, moved = OUT_LIMIT, []
    for p in parts[:MAX_FILES]:
        if p.stat().st_size > room:
            break
        room -= p.stat().st_size
        shutil.move(str(p), out / p.name)
        moved.append(p.name)
    left = sorted(q.name for q in spill_dir().glob('*.tar.part-*'))
    print(f'moved to $OUT: {moved}; still spilled: {left or "none"}' + (' (call spill again)' if left else ''))


def write_job(out: Path) -> None:
    job['total_s'] = round(now(), 1)
    (out / 'job.json').write_text(json.dumps(job, indent=1))


def main() -> None:
    out = Path(os.environ.get('OUT', 'out'))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(env('WORK', f'runs/gpu-job-{time.strftime("%Y%m%d-%H%M%S")}'))  # new each time: never resumes
    work.mkdir(parents=True, exist_ok=True)
    deadline = float(env('JOB_S', '530'))
    names = [n for n in env('RUNS', 'small,tiny').split(',') if n]
    t = now()
    job['versions'] = versions()
    print(json.dumps(job['versions']), flush=True)
    phase('imports+versions', t)
    t = now()
    try:
        job['bf16_peak_tflops'] = matmul_peak()
    except Exception as e:
        job['bf16_peak_tflops'] = f'failed: {type(e).__name__}: {e}'
    phase('matmul peak', t, tflops=job['bf16_peak_tflops'])
    t = now()
    flops = {}
    for n in names:
        try:
            flops[n] = step_flops(MODELS[n], env('MODEL_ARGS', ''))
        except Exception as e:
            flops[n] = f'failed: {type(e).__name__}: {e}'
    job['step_flops_per_image'] = flops
    phase('flop count', t, gflops_per_image={k: (round(v / 1e9, 2) if isinstance(v, float) else v)
                                             for k, v in flops.items()})
    write_job(out)
    pack_reserve, final_s = 25.0, float(env('FINAL_S', '30'))
    shares = {'small': float(env('SMALL_SHARE', '0.7'))}
    room = OUT_LIMIT - 64 * 1024  # job.json
    for i, n in enumerate(names):
        left = deadline - now() - pack_reserve * (len(names) - i)
        share = left * (shares.get(n, 1.0) if i < len(names) - 1 else 1.0)
        run_dir = None
        try:
            run_dir = run(n, work, share, final_s)
        except Exception as e:
            job['runs'].setdefault(n, {})['error'] = f'{type(e).__name__}: {e}'
            print(f'[{now():6.1f}s] {n}: {job["runs"][n]["error"]}', flush=True)
        try:
            run_dir = run_dir or next(iter(sorted(work.glob(f'{n}*/'))), None)
            if run_dir is not None:
                room -= pack(n, run_dir, work, out, room)
        except Exception as e:
            job['runs'].setdefault(n, {})['pack_error'] = f'{type(e).__name__}: {e}'
        peak = job.get('bf16_peak_tflops')
        r = job['runs'].get(n, {})
        if isinstance(peak, float) and isinstance(flops.get(n), float) and r.get('img_per_s'):
            r['model_tflops'] = round(flops[n] * r['img_per_s'] / 1e12, 1)
            r['mfu'] = round(flops[n] * r['img_per_s'] / 1e12 / peak, 3)
        write_job(out)
    print(json.dumps(job, indent=1), flush=True)
    print('OUT:', sorted((p.name, p.stat().st_size) for p in out.iterdir()), flush=True)


def unpack(files_at: str, dest: str, *more: str) -> None:
    """Join each run's pieces (from the job's call and any spill calls' files_at), untar, and restore a compressed
    encoder (encode_fp16) into checkpoint.pth."""
    import torch
    srcs, dst = [Path(files_at), *map(Path, more)], Path(dest)
    dst.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        parts = {p.name: p for src in srcs for p in src.rglob(f'{name}.tar.part-*')}
        if not parts:
            continue
        idx = sorted(int(n.rsplit('-', 1)[1]) for n in parts)
        want = _pack_phase(srcs, name).get('pieces') or len(idx)  # job.json knows how many pack wrote
        if idx != list(range(want)):
            raise SystemExit(f'{name}: pieces {idx} of {want}; the others were spilled: bring them back with '
                             f'`python3 benchmarks/gpu_job.py spill` and pass that call\'s files_at too')
        tar_path = dst / f'{name}.tar'
        with open(tar_path, 'wb') as f:
            for i in idx:
                f.write(parts[f'{name}.tar.part-{i:02d}'].read_bytes())
        with tarfile.open(tar_path) as tar:
            tar.extractall(dst, filter='data')
        tar_path.unlink()
        z = dst / name / WEIGHTS_Z
        if z.is_file():
            ck = torch.load(dst / name / 'checkpoint.pth', map_location='cpu', weights_only=True)
            ck['model'].update(decode_fp16(z.read_bytes()))
            torch.save(ck, dst / name / 'checkpoint.pth')
            z.unlink()
        print(f'{dst / name}: {sorted(p.name for p in (dst / name).iterdir())}')
    for src in srcs:
        for p in src.rglob('job.json'):
            shutil.copy(p, dst / 'job.json')


def _pack_phase(srcs: List[Path], name: str) -> Dict[str, Any]:
    for src in srcs:
        for p in src.rglob('job.json'):
            for ph in json.loads(p.read_text()).get('phases', []):
                if ph.get('phase') == f'pack {name}':
                    return ph
    return {}


if __name__ == '__main__':
    if sys.argv[1:2] == ['unpack']:
        unpack(*sys.argv[2:])
    elif sys.argv[1:2] == ['spill']:
        spill(Path(os.environ.get('OUT', 'out')))
    else:
        main()
