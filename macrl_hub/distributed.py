"""The few torch.distributed helpers MACRL needs; all are no-ops in a single process."""
import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ['is_dist', 'rank', 'world_size', 'all_gather_nograd']


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


@torch.no_grad()
def all_gather_nograd(x: Tensor) -> Tensor:
    """(B, ...) per rank -> (world * B, ...), ordered by rank, on every rank."""
    if not is_dist() or world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
