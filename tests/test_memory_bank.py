import pytest
import torch

from macrl_hub.memory_bank import MemoryBank


def test_enqueue_and_wraparound():
    bank = MemoryBank(5, 2)
    assert bank.negatives().shape == (0, 2)  # nothing written: no fake negatives
    k = torch.arange(8).float().view(4, 2)
    bank.enqueue(k[:3])
    assert bank.negatives().shape == (3, 2) and int(bank.ptr) == 3
    bank.enqueue(k[3:4] + 100)
    bank.enqueue(k[:3] + 200)  # 4 + 3 = 7 > 5: wraps around
    assert int(bank.ptr) == 2 and int(bank.filled) == 5
    expected = torch.stack([k[1] + 200, k[2] + 200, k[2], k[3] + 100, k[0] + 200])
    assert torch.equal(bank.negatives(), expected)


def test_state_dict_keeps_bank():
    a = MemoryBank(4, 3)
    a.enqueue(torch.randn(3, 3))
    b = MemoryBank(4, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.negatives(), b.negatives()) and int(b.ptr) == 3


def test_bad_sizes():
    with pytest.raises(ValueError, match='memory bank size'):
        MemoryBank(-1, 4)
    with pytest.raises(ValueError, match='memory bank size'):
        MemoryBank(2.5, 4)
    with pytest.raises(ValueError, match='at least one step'):
        MemoryBank(4, 2).enqueue(torch.randn(5, 2))


def test_enqueue_leaves_the_keys_a_forward_read_for_backward_intact():
    """torch.compile (inductor) saves the bank tensor itself for backward, not the forward's copy of it; an in-place
    enqueue then failed the next backward ("modified by an inplace operation"; measured on a compiled MACRL's second
    step). The same holds here without a compiler: a loss that reads the negatives straight from the bank."""
    bank = MemoryBank(6, 2)
    bank.enqueue(torch.randn(4, 2))
    q = torch.randn(3, 2, requires_grad=True)
    before = bank.negatives().clone()
    loss = (q @ bank.negatives().T).exp().sum()  # exp saves its output, mm saves the bank slice
    bank.enqueue(torch.randn(4, 2))
    loss.backward()  # with the forward's negatives: d/dq sum exp(q n^T) = exp(q n^T) n
    assert torch.allclose(q.grad, (q @ before.T).exp() @ before)
