"""Numeric precision: what `--precision auto` picks on each device, and the autocast context for it.

CPUs differ from session to session: a Cascade Lake Xeon has no native bf16 (bf16 matmuls are emulated and run
~4.7x *slower* than fp32: 51 vs 237 GFLOP/s measured), an AMD EPYC has AVX512-BF16, a Sapphire Rapids Xeon has
AMX (bf16 ~2,000 GFLOP/s on 2 cores vs ~400 in fp32). `auto` picks bf16 only where it is native.
"""
from typing import Callable, Dict

import torch

__all__ = ['PRECISIONS', 'resolve_precision', 'autocast', 'cpu_bf16_flags']

PRECISIONS = ('auto', 'bf16', 'fp16', 'fp32')
_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def _probe(name: str) -> Callable[[], bool]:
    return getattr(torch.cpu, name, lambda: False)  # private probes: absent in some torch versions


def cpu_bf16_flags() -> Dict[str, bool]:
    """The CPU capabilities `auto` decides on (also printed by benchmarks/train_step.py)."""
    return {'amx_bf16': bool(_probe('_is_amx_tile_supported')()),
            'avx512_bf16': bool(_probe('_is_avx512_bf16_supported')())}


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on CUDA with bf16 (else 'fp16') and on CPUs with native bf16 (AMX / AVX512-BF16), else
    'fp32'. Any other value is returned as given, after checking it is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != 'auto':
        return precision
    if torch.device(device).type == 'cuda':
        # native bf16 only (Ampere on): the default also counts V100/T4's emulated bf16, slower than their fp16
        return 'bf16' if torch.cuda.is_bf16_supported(including_emulation=False) else 'fp16'
    return 'bf16' if any(cpu_bf16_flags().values()) else 'fp32'


def autocast(device: torch.device, precision: str):
    """torch.autocast for 'bf16' / 'fp16'; a disabled one (plain fp32) for 'fp32'."""
    dtype = _DTYPES.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)
