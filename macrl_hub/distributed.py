"""The few torch.distributed helpers MACRL needs; all are no-ops in a single process."""
import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ['is_dist', 'rank', 'world_size', 'all_gather_nograd', 'from_rank0', 'check_same_on_all_ranks']


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


def from_rank0(value: int, device: torch.device) -> int:
    """Rank 0's `value` on every rank: a decision taken from a rank's own clock (e.g. --fit-budget's schedule length)
    must be one decision, or the ranks run different schedules and the one that stops first hangs the others."""
    if not is_dist():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def check_same_on_all_ranks(flag: bool, device: torch.device, message: str) -> None:
    """ValueError(message + the ranks that differ), on every rank, unless `flag` is the same on all of them."""
    if not is_dist():
        return
    t = torch.zeros(world_size(), device=device)
    t[rank()] = float(flag)
    dist.all_reduce(t)
    if len(set(t.tolist())) > 1:
        raise ValueError(f'{message} (true on ranks {[r for r, v in enumerate(t.tolist()) if v]}, false on '
                         f'{[r for r, v in enumerate(t.tolist()) if not v]})')
