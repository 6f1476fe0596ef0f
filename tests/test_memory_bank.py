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
