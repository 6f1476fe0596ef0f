"""Throughput of the MACRL training step: img/s, GFLOPs/img and share of this machine's matmul peak.

    python benchmarks/train_step.py                                  # tiny, macrl/mae/moco + plain baseline, batch 256
    python benchmarks/train_step.py --models macrl_vit_tiny_p4_cifar macrl_vit_small_p4_cifar --objectives macrl
    python benchmarks/train_step.py --objectives macrl --compile     # torch.compile'd blocks, compile time reported
    python benchmarks/train_step.py --profile                        # where the time goes
    python benchmarks/train_step.py --stock-malloc                   # without macrl_hub.runtime's heap setting
    python benchmarks/train_step.py --objectives macrl --attention fused    # the kernel `auto` does not pick on CPU bf16
    python benchmarks/train_step.py --objectives macrl --trainer     # + `macrl train`'s steady-state rate, same run
    python benchmarks/train_step.py --objectives macrl --no-momentum-bf16   # key branch under autocast, fp32 weights
    python benchmarks/train_step.py --objectives macrl --momentum-chunk 0   # key branch on the whole batch at once

The peak is measured in the same run (a large square matmul in the step's precision). The data
pipeline (batch-wise augmentation of uint8 CIFAR batches) is timed on its own.

`plain` (first model, objective macrl, unless --no-plain): the same MACRL wrapper as a plain timm user would run it,
in the same process -- timm's default attention (fused SDPA), `torch.optim.AdamW` with its default (foreach)
implementation, eager -- so `speedup_vs_plain` is measured on this machine, in this run.

The last line, `bars`, checks issue 15's targets for this CPU kind: with AMX, the tiny MACRL step >= 200 img/s and
>= 2x plain, ViT-S/4 >= 80 img/s (when measured); in fp32 without AMX (no native bf16, or AVX512-BF16 where
`--precision auto` measured fp32 faster), the fp32 step >= 60% of the fp32 matmul peak; AVX512-BF16 in bf16 has no bar
of its own (reported, not judged). `--compile` rows count their compile time
(`compile_s`, the first two steps) against the same step eager, measured just before: `speedup_vs_eager` and
`break_even_steps`, after how many steps compiling has paid for itself.

`--trainer` also runs `macrl train` itself (first model, same batch and precision) on a folder of random PNGs
written for the purpose: its steady-state img/s (the median logged interval after the first; data loading,
batch augmentation, EMA update, memory bank and logging included, no kNN monitor, no checkpoint) against the bare
step measured above (`trainer_vs_step`; issue 15's bar: within 10%, i.e. >= 0.9).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import macrl_hub  # noqa: F401
from macrl_hub import MACRL
from macrl_hub.card import hardware
from macrl_hub.models import CIFAR10_MEAN, CIFAR10_STD
from macrl_hub.runtime import choose_attention, compile_blocks, eager, keep_freed_memory, resolve_momentum_chunk, \
    resolve_momentum_dtype
from macrl_hub.precision import autocast, cpu_bf16_flags, resolve_precision
from macrl_hub.transforms import PairAugment


def matmul_peak(precision: str, device: torch.device, n: int = 2048, reps: int = 10) -> float:
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def bench(arch: str, objective: str, batch: int, precision: str, device, steps: int, profile: bool,
          attention: str = 'auto', plain: bool = False, compile: bool = False, momentum_bf16: Optional[bool] = None,
          momentum_chunk: Optional[int] = None):
    """The trainer's step: its attention choice, its key-branch dtype and its fused AdamW (plain=True: timm's
    defaults, foreach AdamW, the key branch under autocast on fp32 weights)."""
    torch.manual_seed(0)
    model = MACRL(timm.create_model(arch), objective=objective).to(device)
    attention = choose_attention(model, device, precision, 'fused' if plain else attention)
    if model.momentum_encoder is not None and not plain:
        model.momentum_dtype = resolve_momentum_dtype(momentum_bf16, device, precision)
        model.momentum_chunk = (resolve_momentum_chunk(model, device, precision) if momentum_chunk is None
                                else momentum_chunk or None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if plain else torch.optim.AdamW(params, lr=1e-4, fused=True)
    x1, x2 = torch.randn(2, batch, 3, 32, 32, device=device).unbind(0)
    compile_s = None
    if compile:
        compile_blocks(model)

    def step():
        with autocast(device, precision):
            out = model(x1, x2)
        out['loss'].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_momentum(0.99)

    if compile:  # the first steps compile (forward, backward); count them apart, as a short run would pay them
        t = time.perf_counter()
        step()
        step()
        compile_s = time.perf_counter() - t
    fc = FlopCounterMode(display=False)
    with fc, eager():  # FLOPs counted on the eager graph (compiled modules would hide their ops from the counter)
        step()
    gflop = fc.get_total_flops() / batch / 1e9
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof, record_function
        with prof(activities=[ProfilerActivity.CPU]) as p:
            with record_function('macrl_step'):
                step()
        print(p.key_averages().table(sort_by='self_cpu_time_total', row_limit=12))
    return dict(arch=arch, objective=objective + (' (plain)' if plain else ''), batch=batch, precision=precision,
                attention=attention, optimizer='AdamW foreach' if plain else 'AdamW fused', compiled=compile,
                momentum_branch=str(model.momentum_dtype or 'autocast').replace('torch.', ''),
                momentum_chunk=getattr(model, 'momentum_chunk', None),
                compile_s=compile_s, img_per_s=batch / dt,
                gflop_per_img=gflop, achieved_gflops=gflop * batch / dt)


def bench_trainer(arch: str, batch: int, precision: str, steps: int, momentum_bf16: Optional[bool] = None,
                  attention: str = 'auto', keep_freed_memory: bool = True) -> dict:
    """`macrl train` for 2 * max(4, steps) steps on 4 batches of random 32x32 PNGs; img/s of its logged intervals.
    `attention` and `keep_freed_memory` as the bare step's rows were run (--attention, --stock-malloc)."""
    import numpy as np
    from PIL import Image
    from macrl_hub.config import TrainConfig
    from macrl_hub.train import read_log, train
    steps = 2 * max(4, steps)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for c in range(2):
            d = Path(tmp) / 'data' / 'train' / f'class{c}'
            d.mkdir(parents=True)
            for i in range(2 * batch):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f'{i}.png')
        cfg = TrainConfig(model=arch, data=str(Path(tmp) / 'data'), batch_size=batch, precision=precision,
                          max_steps=steps, log_every=2, knn_every=0, ckpt_every_epochs=0, ckpt_every_min=1e9,
                          progress=False, out=str(Path(tmp) / 'run'), momentum_bf16=momentum_bf16,
                          attention=attention, keep_freed_memory=keep_freed_memory)
        train(cfg)
        rates = [r['img_per_s'] for r in read_log(Path(tmp) / 'run' / 'log.jsonl') if 'img_per_s' in r][1:]
    return dict(arch=arch, objective='macrl (macrl train)', batch=batch, precision=precision, steps=steps,
                logged_img_per_s=[round(v, 1) for v in rates], img_per_s=sorted(rates)[len(rates) // 2])


def bench_data(batch: int, n: int = 20) -> float:
    x = (torch.rand(batch, 3, 32, 32) * 255).to(torch.uint8)
    aug = PairAugment(32, CIFAR10_MEAN, CIFAR10_STD)
    aug(x)
    t = time.perf_counter()
    for i in range(n):
        aug(x, torch.Generator().manual_seed(i))
    return batch * n / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=['macrl_vit_tiny_p4_cifar'])
    p.add_argument('--objectives', nargs='+', default=['macrl', 'mae', 'moco'])
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--precision', default='auto')
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--profile', action='store_true')
    p.add_argument('--attention', default='auto', help='auto | fused | explicit (see macrl_hub/runtime.py)')
    p.add_argument('--stock-malloc', action='store_true', help="don't keep freed memory (the trainer does on CPU)")
    p.add_argument('--compile', action='store_true', help="torch.compile the blocks as `macrl train --compile` does")
    p.add_argument('--no-plain', action='store_true', help='skip the plain-timm baseline row')
    p.add_argument('--trainer', action='store_true', help="also `macrl train`'s steady-state rate (first model)")
    p.add_argument('--momentum-bf16', action=argparse.BooleanOptionalAction, default=None,
                   help="key branch on a bf16 cast of its weights (default: the trainer's auto choice)")
    p.add_argument('--momentum-chunk', type=int, default=None,
                   help="views per chunk of the key branch; 0: whole batch (default: the trainer's auto choice)")
    a = p.parse_args()
    malloc = 'stock' if a.stock_malloc else ('keep_freed' if keep_freed_memory() else 'stock (not glibc)')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    precision = resolve_precision(a.precision, device)
    peak = matmul_peak(precision, device)
    flags = cpu_bf16_flags()
    print(json.dumps(dict(device=str(device), hardware=hardware(), **flags, threads=torch.get_num_threads(),
                          precision=precision, malloc=malloc,
                          matmul_peak_gflops=round(peak, 1))))
    print(json.dumps(dict(data_pipeline_img_per_s=round(bench_data(a.batch_size), 1))))
    compiled = (False, True) if a.compile else (False,)  # with --compile: eager first, to weigh the compile time
    runs = [(arch, obj, False, c) for arch in a.models for obj in a.objectives for c in compiled]
    if not a.no_plain:
        runs.insert(0, (a.models[0], 'macrl', True, False))
    rows = []
    for arch, obj, plain, comp in runs:
        r = bench(arch, obj, a.batch_size, precision, device, a.steps, a.profile and obj == 'macrl' and not plain,
                  a.attention, plain=plain, compile=comp, momentum_bf16=a.momentum_bf16,
                  momentum_chunk=a.momentum_chunk)
        r['share_of_peak'] = round(r['achieved_gflops'] / peak, 3)
        base = rows[0] if rows and rows[0]['objective'] == 'macrl (plain)' and rows[0]['arch'] == arch else None
        if base is not None and obj == 'macrl':
            r['speedup_vs_plain'] = r['img_per_s'] / base['img_per_s']
        eager = [e for e in rows if (e['arch'], e['objective'], e['compiled']) == (arch, obj, False)]
        if comp and eager:
            saved = 1 / eager[-1]['img_per_s'] - 1 / r['img_per_s']  # s saved per image against the eager step
            r['speedup_vs_eager'] = r['img_per_s'] / eager[-1]['img_per_s']
            r['break_even_steps'] = r['compile_s'] / (saved * a.batch_size) if saved > 0 else None
        rows.append(r)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    if a.trainer:
        r = bench_trainer(a.models[0], a.batch_size, precision, a.steps, a.momentum_bf16, a.attention,
                          not a.stock_malloc)
        step_row = next((e for e in rows if (e['arch'], e['objective'], e['compiled']) == (a.models[0], 'macrl', False)),
                        None)
        if step_row is not None:
            r['trainer_vs_step'] = r['img_per_s'] / step_row['img_per_s']
        rows.append(r)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    print(json.dumps(dict(bars=bars(rows, flags, precision, device, a.batch_size))))


def bars(rows, flags, precision: str, device, batch: int) -> dict:
    """Issue 15's targets for this CPU kind, each with the measured value and whether it is met."""
    if device.type != 'cpu':
        return dict(kind='gpu', note='no CPU bars on a GPU')
    ours = {}
    trainer = next((r for r in rows if 'trainer_vs_step' in r), None)
    for r in rows:  # the faster of eager / compiled per model
        if r['objective'] == 'macrl' and r['img_per_s'] > ours.get(r['arch'], {}).get('img_per_s', 0):
            ours[r['arch']] = r
    tiny, small = ours.get('macrl_vit_tiny_p4_cifar'), ours.get('macrl_vit_small_p4_cifar')
    out = dict(kind='amx' if flags['amx_bf16'] else 'avx512_bf16' if flags['avx512_bf16'] else 'no native bf16',
               batch=batch, precision=precision)
    if flags['amx_bf16']:
        if tiny:
            out['tiny_img_per_s>=200'] = [round(tiny['img_per_s'], 1), tiny['img_per_s'] >= 200]
            if 'speedup_vs_plain' in tiny:
                out['tiny_speedup_vs_plain>=2'] = [round(tiny['speedup_vs_plain'], 2), tiny['speedup_vs_plain'] >= 2]
        if small:
            out['small_img_per_s>=80'] = [round(small['img_per_s'], 1), small['img_per_s'] >= 80]
    elif precision == 'fp32' and tiny:  # no native bf16, or AVX512-BF16 where `auto` measured fp32 faster
        out['tiny_share_of_fp32_peak>=0.6'] = [tiny['share_of_peak'], tiny['share_of_peak'] >= 0.6]
    elif not tiny:
        out['note'] = 'the bars judge the macrl_vit_tiny_p4_cifar row, which was not measured (--models)'
    elif flags['avx512_bf16']:
        out['note'] = 'AVX512-BF16 without AMX, in bf16: no bar of its own; see img_per_s and speedup_vs_plain'
    else:
        out['note'] = 'bf16 without native support (emulated): no bar; --precision auto runs fp32 here'
    if trainer:  # every CPU kind: the trainer keeps the step's rate
        out['trainer_vs_step>=0.9'] = [round(trainer['trainer_vs_step'], 3), trainer['trainer_vs_step'] >= 0.9]
    return out


if __name__ == '__main__':
    main()
