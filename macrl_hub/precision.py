"""Numeric precision: what `--precision auto` picks on each device, and the autocast context for it.

CPUs differ from session to session: a Cascade Lake Xeon has no native bf16 (bf16 matmuls are emulated and run
~4.7x *slower* than fp32: 51 vs 237 GFLOP/s measured), a Sapphire Rapids Xeon has AMX (bf16 ~2,000 GFLOP/s on 2
cores vs ~400 in fp32). AVX512-BF16 without AMX goes either way: on an AMD EPYC bf16 matmuls ran 1.5-3.5x fp32's
(the MACRL step 76 vs 38 img/s), on an Intel Xeon with the same flag at half fp32's rate (167 vs 335 GFLOP/s; the
step 42 vs 65 img/s). So `auto` picks bf16 with AMX, fp32 without native bf16, and between the two it times one
bf16 and one fp32 matmul (`cpu_bf16_speedup`, ~0.1 s, once per process and thread count) and picks bf16 only where
it is clearly faster.
"""
import functools
import time
from typing import Callable, Dict

import torch

__all__ = ['PRECISIONS', 'resolve_precision', 'autocast', 'cpu_bf16_flags', 'cpu_bf16_speedup', 'BF16_MARGIN']

#: with AVX512-BF16 but no AMX, `auto` picks bf16 where a bf16 matmul runs at least this much faster than fp32's
BF16_MARGIN = 1.2

PRECISIONS = ('auto', 'bf16', 'fp16', 'fp32')
_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def _probe(name: str) -> Callable[[], bool]:
    return getattr(torch.cpu, name, lambda: False)  # private probes: absent in some torch versions


def cpu_bf16_flags() -> Dict[str, bool]:
    """The CPU capabilities `auto` decides on (also printed by benchmarks/train_step.py)."""
    return {'amx_bf16': bool(_probe('_is_amx_tile_supported')()),
            'avx512_bf16': bool(_probe('_is_avx512_bf16_supported')())}


@functools.lru_cache(maxsize=None)
def _matmul_speedup(threads: int, n: int) -> float:
    rate = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)  # warm-up: kernel selection, first-touch
        best = float('inf')
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        rate[dtype] = 1.0 / best
    return rate[torch.bfloat16] / rate[torch.float32]


def cpu_bf16_speedup(n: int = 1024) -> float:
    """How many times faster a bf16 (n x n) matmul runs than an fp32 one on this CPU, at the current thread count
    (best of 3 each; measured once per process and thread count)."""
    return _matmul_speedup(torch.get_num_threads(), n)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on CUDA with bf16 (else 'fp16'); on CPU 'bf16' with AMX, and with AVX512-BF16 alone where
    `cpu_bf16_speedup()` >= BF16_MARGIN, else 'fp32'. Any other value is returned as given, after checking it is one
    of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != 'auto':
        return precision
    if torch.device(device).type == 'cuda':
        # native bf16 only (Ampere on): the default also counts V100/T4's emulated bf16, slower than their fp16
        return 'bf16' if torch.cuda.is_bf16_supported(including_emulation=False) else 'fp16'
    flags = cpu_bf16_flags()
    if flags['amx_bf16']:
        return 'bf16'
    return 'bf16' if flags['avx512_bf16'] and cpu_bf16_speedup() >= BF16_MARGIN else 'fp32'


def autocast(device: torch.device, precision: str):
    """torch.autocast for 'bf16' / 'fp16'; a disabled one (plain fp32) for 'fp32'."""
    dtype = _DTYPES.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)
