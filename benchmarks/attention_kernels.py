"""timm's two attention kernels against sequence length: fused `scaled_dot_product_attention` vs explicit softmax.

    python benchmarks/attention_kernels.py                            # ViT-Ti and ViT-S widths, 17-1025 tokens, bf16
    python benchmarks/attention_kernels.py --precision fp32 --lengths 65 197

One timm `Attention` module, forward + backward under autocast, ~32k tokens per call (batch = 32768 // length),
best of 3 per kernel, the two kernels interleaved so that a busy machine slows both alike. Prints one JSON line per
(width, length) with `explicit_over_fused` (< 1: explicit is faster). `--attention auto` (macrl_hub/runtime.py)
picks explicit on CPU in bf16 for every length; this script is how that was checked against longer sequences
than CIFAR's 17-65 tokens (224 px / patch 16: 197; 64 px / patch 4: 257).
"""
import argparse
import json
import time

import torch
from timm.models.vision_transformer import Attention

from macrl_hub.card import hardware
from macrl_hub.precision import autocast, cpu_bf16_flags, resolve_precision
from macrl_hub.runtime import keep_freed_memory


def time_kernels(dim: int, heads: int, length: int, precision: str, device: torch.device, reps: int = 3) -> dict:
    """Seconds per forward + backward of one attention layer on (32768 // length, length, dim) tokens, per kernel."""
    batch = max(1, 32768 // length)
    attn = Attention(dim, heads, qkv_bias=True).to(device)
    x = torch.randn(batch, length, dim, device=device, requires_grad=True)
    best = {True: float('inf'), False: float('inf')}

    def step():
        with autocast(device, precision):
            y = attn(x)
        y.float().sum().backward()
        if device.type == 'cuda':
            torch.cuda.synchronize()

    for _ in range(reps):
        for fused in (True, False):
            attn.fused_attn = fused
            step()  # warm-up for this kernel
            t = time.perf_counter()
            step()
            step()
            best[fused] = min(best[fused], (time.perf_counter() - t) / 2)
    return dict(dim=dim, heads=heads, length=length, batch=batch, precision=precision,
                fused_ms=round(best[True] * 1e3, 1), explicit_ms=round(best[False] * 1e3, 1),
                explicit_over_fused=round(best[False] / best[True], 2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--widths', nargs='+', default=['192:3', '384:6'], help='dim:heads (ViT-Ti, ViT-S)')
    p.add_argument('--lengths', type=int, nargs='+', default=[17, 65, 197, 257, 577, 1025])
    p.add_argument('--precision', default='auto')
    a = p.parse_args()
    keep_freed_memory()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    precision = resolve_precision(a.precision, device)
    print(json.dumps(dict(device=str(device), hardware=hardware(), **cpu_bf16_flags(),
                          threads=torch.get_num_threads(), precision=precision)))
    for width in a.widths:
        dim, heads = (int(v) for v in width.split(':'))
        for length in a.lengths:
            print(json.dumps(time_kernels(dim, heads, length, precision, device)), flush=True)


if __name__ == '__main__':
    main()
