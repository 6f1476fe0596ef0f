"""A FIFO memory bank of negative keys (InstDisc, MoCo), saved in the state dict so resume keeps it."""
import torch
from torch import Tensor, nn

__all__ = ['MemoryBank']


class MemoryBank(nn.Module):
    """Ring buffer of L2-normalised keys.

    Any size works: enqueueing wraps around the end. Slots never written are not used as negatives
    (`negatives()` returns only filled slots), so the first steps do not contrast against noise.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if int(size) != size or size < 0:
            raise ValueError(f'memory bank size must be a non-negative integer, got {size!r}')
        self.size = int(size)
        self.register_buffer('bank', torch.zeros(self.size, dim))
        self.register_buffer('ptr', torch.zeros((), dtype=torch.long))
        self.register_buffer('filled', torch.zeros((), dtype=torch.long))

    def negatives(self) -> Tensor:
        """(N_filled, dim) keys written so far."""
        return self.bank[: int(self.filled)]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """keys: (N, dim), written after the last ones, wrapping around; N must fit in the bank."""
        if self.size == 0:
            return
        n = keys.shape[0]
        if n > self.size:
            raise ValueError(f'cannot enqueue {n} keys into a memory bank of size {self.size}; '
                             f'the bank must hold at least one step of keys (2 x global batch)')
        ptr = int(self.ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % self.size
        # out of place: the tensor the last forward read its negatives from stays as it was, which autograd needs
        # once torch.compile saves that tensor itself for backward (it drops the forward's copy); one bank copy
        self.bank = self.bank.index_copy(0, idx, keys.detach().to(self.bank.dtype))
        self.ptr.fill_((ptr + n) % self.size)
        self.filled.fill_(min(int(self.filled) + n, self.size))
