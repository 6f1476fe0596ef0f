"""Exponential moving average of the momentum branch, and its cosine schedule (BYOL / MoCo v3)."""
import math

import torch
from torch import nn

__all__ = ['update_momentum', 'cosine_momentum']


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online, for every parameter; buffers are copied."""
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f'online and momentum modules differ: {len(o_params)} vs {len(t_params)} parameters')
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - m)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)


def cosine_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """Momentum rising from `base` to `final` along a half cosine over training (BYOL, Eq. 11)."""
    if total_steps <= 0:
        return base
    progress = min(max(step / total_steps, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
