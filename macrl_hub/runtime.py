"""CPU runtime settings: keep freed memory in the heap, and pick the attention kernel per device and precision.

glibc serves every allocation above ~32 MB (a ViT-Ti/4 MLP activation at batch 256 is 100 MB) with a
fresh `mmap` and returns it with `munmap` when freed, so each step touches brand-new pages and pays
the kernel's page faults: on a 2-core Xeon a `clone` of 100 MB costs 41 ms against 11 ms for a copy
into memory already mapped. Turning mmap off and never trimming the heap makes freed blocks reusable;
measured on the full MACRL step (ViT-Ti/4, batch 256, fp32, 2 threads): 25 -> 36 img/s.

The same effect from the shell, for any program: `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`.
Cost: the process keeps its peak memory until it exits (it does not shrink after a big allocation).

Attention: timm's blocks call `F.scaled_dot_product_attention` (`fused_attn=True`) unless TIMM_FUSED_ATTN=0.
On CPU in bf16 the fused kernel is the slow one for our short sequences (17-65 tokens): its backward
(`_scaled_dot_product_flash_attention_for_cpu_backward`) was 30% of a ViT-Ti/4 MACRL step on a Sapphire Rapids
(AMX) Xeon. timm's explicit softmax attention measured, same step (batch 256, 2 threads, bf16): AMX 99 -> 141
img/s, AMD EPYC (AVX512-BF16) 56.6 -> 71.3 img/s; in fp32 both kernels ran at the same speed (EPYC 39.1 vs 38.2),
and on CUDA the fused (flash) kernel is the fast one. Sequence length does not change the choice: one attention
layer forward + backward, bf16, AVX512-BF16, 17 to 1,025 tokens (`python benchmarks/attention_kernels.py`): explicit
took 0.46-0.66x the fused kernel's time at ViT-Ti width, 0.53-0.74x at ViT-S width; in fp32 1.02-1.03x at 65-1,025
tokens. `choose_attention(..., 'auto')` therefore switches to the explicit path exactly on CPU with bf16, at every
length, unless the user has set TIMM_FUSED_ATTN themselves.
"""
import contextlib
import ctypes
import ctypes.util
import os
import sys
from typing import Iterator, Optional

import torch

__all__ = ['keep_freed_memory', 'choose_attention', 'attention_kernel', 'compile_blocks', 'eager', 'resolve_compile',
           'COMPILE_MIN_STEPS', 'resolve_momentum_dtype', 'resolve_momentum_chunk', 'views_per_chunk',
           'MOMENTUM_CHUNK_ELEMENTS', 'ATTENTION_MODES']

ATTENTION_MODES = ('auto', 'fused', 'explicit')

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Tell glibc malloc never to mmap/munmap or trim (idempotent). False where it does not apply."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    _done = ok
    return ok


def choose_attention(model: torch.nn.Module, device: torch.device, precision: str, mode: str = 'auto') -> str:
    """Set `fused_attn` on every timm attention module in `model`; returns the kernel chosen ('fused'/'explicit').

    'auto': explicit softmax attention on CPU in bf16 (faster there, see the module docstring), timm's own choice
    elsewhere or when TIMM_FUSED_ATTN is set in the environment. Both kernels compute the same function."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f'unknown attention mode {mode!r}; allowed: {ATTENTION_MODES}')
    attns = [m for m in model.modules() if hasattr(m, 'fused_attn')]
    if mode == 'auto':
        if device.type == 'cpu' and precision == 'bf16' and 'TIMM_FUSED_ATTN' not in os.environ:
            mode = 'explicit'
        else:  # timm's own default for this process, as the modules were built
            return 'fused' if attns and all(m.fused_attn for m in attns) else 'explicit'
    for m in attns:
        m.fused_attn = mode == 'fused'
    return mode


@contextlib.contextmanager
def attention_kernel(model: torch.nn.Module, device: torch.device, precision: str,
                     mode: str = 'auto') -> Iterator[str]:
    """`choose_attention` for the duration of a block, then each module's own flag back (for a user's model)."""
    attns = [m for m in model.modules() if hasattr(m, 'fused_attn')]
    saved = [m.fused_attn for m in attns]
    try:
        yield choose_attention(model, device, precision, mode)
    finally:
        for m, f in zip(attns, saved):
            m.fused_attn = f


#: `--compile` not given compiles a CUDA run of at least this many steps. Measured on one H200 (2026-11-28, ViT-S/4,
#: batch 512, benchmarks/results/gpu_h200_*): compiling cost ~20 s before the first step (32 s to the first step
#: against ~10 s of data and model) and the compiled step ran ~1.4x the eager one (11,900 vs 8,250 img/s), so it
#: pays for itself after ~1,000 steps.
COMPILE_MIN_STEPS = 1000


def resolve_compile(compile: Optional[bool], device: torch.device, steps: int) -> bool:
    """`--compile` / `--no-compile` as given; not given (None): CUDA and a run of >= COMPILE_MIN_STEPS steps.
    Never by default on CPU: on AVX512-BF16 (AMD EPYC) the compiled blocks ran within noise of eager (82.6 vs 76.9,
    then 81.7 vs 82.6 img/s; `python benchmarks/train_step.py --objectives macrl --compile`) after 11-72 s of
    compiling; on AMX it is unmeasured."""
    if compile is not None:
        return bool(compile)
    return device.type == 'cuda' and steps >= COMPILE_MIN_STEPS


def resolve_momentum_dtype(momentum_bf16: Optional[bool], device: torch.device,
                           precision: str) -> Optional[torch.dtype]:
    """`--momentum-bf16` / `--no-momentum-bf16` as given; not given (None): bf16 on CPU when the run's precision is
    bf16. `MACRL.momentum_dtype` then runs the key branch all-bf16 on a per-step cast of the fp32 EMA weights.
    Measured on AVX512-BF16 (AMD EPYC, 2 threads, ViT-Ti/4, 512 unmasked views): the key forward 1.68 -> 1.57 s
    (autocast's fp32 residual stream casts every matmul input: 289 -> 140 `aten::copy_`), keys within 1.7e-3 of
    autocast's (unit vectors, cosine >= 0.99994). Sapphire Rapids (AMX, issue 15's throwaway script): 0.81 -> 0.68 s.
    Off by default on CUDA (unmeasured there; compiled graphs fuse the casts)."""
    if momentum_bf16 is not None:
        return torch.bfloat16 if momentum_bf16 else None
    return torch.bfloat16 if torch.device(device).type == 'cpu' and precision == 'bf16' else None


#: Elements of the momentum branch's residual stream (views x tokens x width) per chunk on CPU in fp32: 48 ViT-Ti/4
#: views (64 tokens x 192), 2.4 MB, the fastest of 16-512 views measured (below).
MOMENTUM_CHUNK_ELEMENTS = 48 * 64 * 192


def resolve_momentum_chunk(model: torch.nn.Module, device: torch.device, precision: str) -> Optional[int]:
    """Views per chunk of the momentum branch (`MACRL.momentum_chunk`), or None for the whole batch at once.

    The key branch keeps no activations, so run in chunks its memory-bound ops (the addmm bias copy, GELU, LayerNorm,
    residual adds: ~35% of its time at batch 512) work in cache instead of on 100 MB tensors. Measured on an Intel
    Xeon (AVX512-BF16, no AMX; 2 threads, 512 unmasked views, fp32; `python benchmarks/train_step.py --objectives
    macrl --momentum-chunk N`): ViT-Ti/4 1.92 s whole, 1.69-1.80 s in chunks of 48-64 views; ViT-S/4 5.99 s whole,
    5.85-5.88 s in chunks of 16-24 (2%). Not in bf16 (ViT-Ti/4: 2.78 s whole, 2.82-2.97 s chunked) nor on CUDA,
    where a whole batch is what keeps the GPU busy."""
    if getattr(model, 'momentum_encoder', None) is None:
        return None
    return views_per_chunk(model.momentum_encoder, device, precision)


def views_per_chunk(encoder: torch.nn.Module, device: torch.device, precision: str) -> Optional[int]:
    """Images per forward-only chunk of a ViT on CPU in fp32 (see resolve_momentum_chunk; `extract_features` uses
    it as its batch: ViT-Ti/4 4,096 images 15.1 -> 13.8 s, ViT-S/4 47.1 -> 45.4 s, same Xeon); None elsewhere, or
    for an encoder that is not a ViT."""
    pe = getattr(encoder, 'patch_embed', None)
    if torch.device(device).type != 'cpu' or precision != 'fp32' or getattr(pe, 'num_patches', None) is None \
            or not hasattr(encoder, 'embed_dim'):
        return None
    tokens = pe.num_patches + getattr(encoder, 'num_prefix_tokens', 0)
    return max(1, MOMENTUM_CHUNK_ELEMENTS // (tokens * encoder.embed_dim))


def compile_blocks(model: torch.nn.Module) -> None:
    """torch.compile, in place, the parts of a MACRL wrapper that carry the FLOPs: the encoder's blocks, the decoder
    and the momentum encoder's blocks (state-dict keys stay unprefixed; masking, gathers and the bank stay eager).
    A graph that fails to compile runs eagerly, with a warning."""
    import torch._dynamo as dynamo
    dynamo.config.suppress_errors = True
    for m in (model.encoder.blocks, getattr(model, 'decoder', None),
              getattr(getattr(model, 'momentum_encoder', None), 'blocks', None)):
        if m is not None:
            m.compile()


@contextlib.contextmanager
def eager():
    """Run torch.compile'd modules eagerly inside: feature extraction for kNN at other batch shapes and without
    autograd would otherwise compile new graphs (tens of seconds each) for a few forward passes."""
    set_stance = getattr(getattr(torch, 'compiler', None), 'set_stance', None)  # torch >= 2.6
    if set_stance is None:
        yield
        return
    with set_stance('force_eager'):
        yield
