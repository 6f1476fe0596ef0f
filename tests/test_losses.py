import math

import pytest
import torch
import torch.nn.functional as F

from macrl_hub.losses import info_nce, reconstruction_loss


def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    neg = torch.tensor([[-1.0, 0.0]])
    t = 0.5
    # sample 0: pos q0.k0 = 0.6; negatives k1 (0.0) and bank (-1.0)
    l0 = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.0 / t) + math.exp(-1.0 / t)))
    # sample 1: pos q1.k1 = 1.0; negatives k0 (0.8) and bank (0.0)
    l1 = -math.log(math.exp(1.0 / t) / (math.exp(1.0 / t) + math.exp(0.8 / t) + math.exp(0.0 / t)))
    assert math.isclose(float(info_nce(q, k, neg, t)), (l0 + l1) / 2, rel_tol=1e-6)
    # without in-batch negatives: only the positive and the bank (Eq. 2 with a memory bank)
    l0b = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(-1.0 / t)))
    l1b = -math.log(math.exp(1.0 / t) / (math.exp(1.0 / t) + math.exp(0.0 / t)))
    assert math.isclose(float(info_nce(q, k, neg, t, in_batch_negatives=False)), (l0b + l1b) / 2, rel_tol=1e-6)


def test_info_nce_offset_matches_gathered_keys():
    q = F.normalize(torch.randn(3, 4), dim=1)
    k_all = F.normalize(torch.randn(6, 4), dim=1)  # keys of two ranks, this rank is rank 1
    a = info_nce(q, k_all, None, 0.2, True, k_offset=3)
    logits = q @ k_all.t() / 0.2
    assert torch.allclose(a, F.cross_entropy(logits, torch.arange(3) + 3))


def test_reconstruction_loss_selects_tokens():
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert float(reconstruction_loss(pred, target, mask, 'l1', 'masked')) == pytest.approx(2.0)
    assert float(reconstruction_loss(pred, target, mask, 'l1', 'visible')) == pytest.approx(3.0)
    assert float(reconstruction_loss(pred, target, mask, 'l1', 'all')) == pytest.approx(2.5)
    assert float(reconstruction_loss(pred, target, mask, 'l2', 'masked')) == pytest.approx(5.0)
    normed = reconstruction_loss(target, target, mask, 'l1', 'all', norm_pix=True)
    assert float(normed) > 0  # constant patches normalise to 0, pred does not
    # each patch by its own mean and (unbiased, as MAE) std: [0, 2, 4, 6] -> [-3, -1, 1, 3] / 2.582 in every patch
    t = torch.tensor([[[0.0, 2.0, 4.0, 6.0], [10.0, 12.0, 14.0, 16.0]]])
    want = torch.tensor([3.0, 1.0, 1.0, 3.0]).div((20 / 3) ** 0.5).mean()
    got = reconstruction_loss(torch.zeros_like(t), t, torch.ones(1, 2), 'l1', 'all', norm_pix=True)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(ValueError, match='allowed'):
        reconstruction_loss(pred, target, mask, 'huber')
    with pytest.raises(ValueError, match='allowed'):
        reconstruction_loss(pred, target, mask, 'l1', 'some')


@pytest.mark.parametrize('in_batch_negatives', [True, False])
def test_info_nce_logits_stay_fp32_under_autocast(in_batch_negatives):
    """Under bf16 autocast the matmuls would run in bf16 despite .float(); with a 4,096-key bank that moves the loss
    by ~1e-5..1e-4 relative. info_nce switches autocast off for its logits, so the loss is the fp32 one."""
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(8, 16, generator=g), dim=1)
    k = F.normalize(q + 0.3 * torch.randn(8, 16, generator=g), dim=1)
    bank = F.normalize(torch.randn(4096, 16, generator=g), dim=1)
    ref = info_nce(q, k, bank, 0.2, in_batch_negatives)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp = info_nce(q, k, bank, 0.2, in_batch_negatives)
    assert amp.dtype == torch.float32
    assert math.isclose(float(amp), float(ref), rel_tol=1e-6), (float(amp), float(ref))
