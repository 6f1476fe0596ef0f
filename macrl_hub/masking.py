"""Per-sample random masking by shuffling, and patch <-> image reshapes (MAE's `models_mae.py`)."""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['random_masking', 'num_keep', 'patchify', 'unpatchify', 'gather_tokens', 'check_mask_ratio']


def check_mask_ratio(mask_ratio: float) -> float:
    if not (0.0 <= float(mask_ratio) < 1.0):
        raise ValueError(f'mask_ratio must be in [0, 1) (at least one visible token), got {mask_ratio!r}')
    return float(mask_ratio)


def num_keep(num_patches: int, mask_ratio: float) -> int:
    """Visible tokens per sample: `int(L * (1 - ratio))`, as MAE, but never fewer than one."""
    return max(1, int(num_patches * (1.0 - check_mask_ratio(mask_ratio))))


def random_masking(
        batch_size: int,
        num_patches: int,
        mask_ratio: float,
        device: torch.device = None,
        generator: Optional[torch.Generator] = None,
        noise: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Random per-sample shuffle; the first `num_keep` tokens of each shuffle stay visible.

    `noise` (B, L) may be given (e.g. drawn for a global batch and sliced per rank, so that several
    processes mask exactly as one would); otherwise it is drawn from `generator`.

    Returns:
        ids_keep: (B, L_keep) indices of visible patches, in shuffled order.
        ids_restore: (B, L) inverse permutation: `gather(shuffled, ids_restore)` is the original order.
        mask: (B, L) float, 1 = masked (removed), 0 = visible, in original patch order.
    """
    len_keep = num_keep(num_patches, mask_ratio)
    if noise is None:
        noise = torch.rand(batch_size, num_patches, device=device, generator=generator)  # (B, L)
    elif noise.shape != (batch_size, num_patches):
        raise ValueError(f'mask noise must have shape {(batch_size, num_patches)}, got {tuple(noise.shape)}')
    device = noise.device
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones(batch_size, num_patches, device=device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, ids_restore, mask


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """x: (B, L, D), ids: (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """imgs: (B, C, H, W) -> (B, L, p*p*C), patches in row-major order, pixels as (p, p, C)."""
    B, C, H, W = imgs.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f'image size {H}x{W} is not divisible by patch size {p}')
    h, w = H // p, W // p
    x = imgs.reshape(B, C, h, p, w, p)
    x = torch.einsum('nchpwq->nhwpqc', x)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(x: Tensor, patch_size: int, grid_size: Tuple[int, int], in_chans: int = 3) -> Tensor:
    """x: (B, L, p*p*C) -> (B, C, H, W); inverse of `patchify`."""
    B = x.shape[0]
    p = patch_size
    h, w = grid_size
    x = x.reshape(B, h, w, p, p, in_chans)
    x = torch.einsum('nhwpqc->nchpwq', x)
    return x.reshape(B, in_chans, h * p, w * p)
