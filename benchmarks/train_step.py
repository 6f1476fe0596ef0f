"""Throughput of the MACRL training step: img/s, GFLOPs/img and share of this machine's matmul peak.

    python benchmarks/train_step.py                                  # tiny, macrl/mae/moco, batch 256
    python benchmarks/train_step.py --models macrl_vit_tiny_p4_cifar macrl_vit_small_p4_cifar --precision bf16
    python benchmarks/train_step.py --profile                        # where the time goes
    python benchmarks/train_step.py --stock-malloc                   # without macrl_hub.runtime's heap setting
    python benchmarks/train_step.py --objectives macrl --attention fused    # the kernel `auto` does not pick on CPU bf16

The peak is measured in the same run (a large square matmul in the step's precision). The data
pipeline (batch-wise augmentation of uint8 CIFAR batches) is timed on its own.
"""
import argparse
import json
import time

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import macrl_hub  # noqa: F401
from macrl_hub import MACRL
from macrl_hub.card import hardware
from macrl_hub.models import CIFAR10_MEAN, CIFAR10_STD
from macrl_hub.runtime import choose_attention, keep_freed_memory
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
          attention: str = 'auto'):
    """The trainer's step: its attention choice and its (fused) AdamW."""
    torch.manual_seed(0)
    model = MACRL(timm.create_model(arch), objective=objective).to(device)
    attention = choose_attention(model, device, precision, attention)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    x1, x2 = torch.randn(2, batch, 3, 32, 32, device=device).unbind(0)

    def step():
        with autocast(device, precision):
            out = model(x1, x2)
        out['loss'].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_momentum(0.99)

    fc = FlopCounterMode(display=False)
    with fc:
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
    return dict(arch=arch, objective=objective, batch=batch, precision=precision, attention=attention,
                img_per_s=batch / dt,
                gflop_per_img=gflop, achieved_gflops=gflop * batch / dt)


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
    a = p.parse_args()
    malloc = 'stock' if a.stock_malloc else ('keep_freed' if keep_freed_memory() else 'stock (not glibc)')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    precision = resolve_precision(a.precision, device)
    peak = matmul_peak(precision, device)
    print(json.dumps(dict(device=str(device), hardware=hardware(), **cpu_bf16_flags(), threads=torch.get_num_threads(),
                          precision=precision, malloc=malloc,
                          matmul_peak_gflops=round(peak, 1))))
    print(json.dumps(dict(data_pipeline_img_per_s=round(bench_data(a.batch_size), 1))))
    for arch in a.models:
        for obj in a.objectives:
            r = bench(arch, obj, a.batch_size, precision, device, a.steps, a.profile and obj == 'macrl', a.attention)
            r['share_of_peak'] = round(r['achieved_gflops'] / peak, 3)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))


if __name__ == '__main__':
    main()
