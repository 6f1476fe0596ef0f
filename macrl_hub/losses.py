"""MACRL's two objectives as plain functions of tensors: InfoNCE and masked-image reconstruction."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['info_nce', 'reconstruction_loss', 'REC_LOSSES', 'REC_ON']

REC_LOSSES = ('l1', 'l2')
REC_ON = ('masked', 'visible', 'all')


def info_nce(
        q: Tensor,
        k: Tensor,
        negatives: Optional[Tensor] = None,
        temperature: float = 0.2,
        in_batch_negatives: bool = True,
        k_offset: int = 0,
) -> Tensor:
    """Eq. 2: -log exp(q.k+/t) / sum_i exp(q.k_i/t), averaged over the batch.

    Args:
        q: (B, D) L2-normalised queries.
        k: (Bk, D) L2-normalised keys; the positive of q[i] is k[k_offset + i]. With DDP, k holds the
            keys of all ranks and k_offset = rank * B.
        negatives: (N, D) memory bank keys, or None.
        in_batch_negatives: also contrast against the other keys of the batch (MoCo v3). If False, only
            the positive and the bank are used (MoCo v1/v2, and the paper's Eq. 2).
    """
    B = q.shape[0]
    pos_idx = torch.arange(B, device=q.device) + k_offset
    # fp32 logits even under autocast, which would recast the matmuls to bf16/fp16 despite .float():
    # with thousands of bank keys at t=0.2, half-precision logits shift the loss by ~1e-3 relative.
    with torch.autocast(device_type=q.device.type, enabled=False):
        q = q.float()
        k = k.float()
        if in_batch_negatives:
            logits = [q @ k.t()]  # (B, Bk), positive on the shifted diagonal
            labels = pos_idx
        else:
            logits = [(q * k[pos_idx]).sum(dim=1, keepdim=True)]  # (B, 1)
            labels = torch.zeros(B, dtype=torch.long, device=q.device)
        if negatives is not None and negatives.numel():
            logits.append(q @ negatives.float().t())  # (B, N)
        logits = torch.cat(logits, dim=1) / temperature  # (B, Bk + N) or (B, 1 + N)
        return F.cross_entropy(logits, labels)


def reconstruction_loss(
        pred: Tensor,
        target: Tensor,
        mask: Tensor,
        loss: str = 'l1',
        on: str = 'masked',
        norm_pix: bool = False,
) -> Tensor:
    """Eq. 1, per-patch mean distance averaged over the chosen patches.

    Args:
        pred: (B, L, p*p*C) decoder output.
        target: (B, L, p*p*C) patchified input image.
        mask: (B, L), 1 = masked, 0 = visible.
        loss: 'l1' (paper) or 'l2' (MAE).
        on: which patches count: 'masked' (MAE), 'visible' (the paper's text) or 'all'.
        norm_pix: normalise each target patch by its mean/std (MAE's norm_pix_loss).
    """
    if loss not in REC_LOSSES:
        raise ValueError(f'unknown reconstruction loss {loss!r}; allowed: {REC_LOSSES}')
    if on not in REC_ON:
        raise ValueError(f'unknown reconstruction target {on!r}; allowed: {REC_ON}')
    pred = pred.float()
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    diff = pred - target
    per_patch = diff.abs().mean(dim=-1) if loss == 'l1' else diff.pow(2).mean(dim=-1)  # (B, L)
    if on == 'all':
        return per_patch.mean()
    weight = mask.float() if on == 'masked' else 1.0 - mask.float()
    return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)
