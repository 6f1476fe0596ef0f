import pytest
import torch

from macrl_hub.masking import gather_tokens, num_keep, patchify, random_masking, unpatchify


@pytest.mark.parametrize('ratio', [0.0, 0.5, 0.75, 0.8, 0.99])
def test_ratio_and_restore(ratio):
    B, L = 6, 64
    ids_keep, ids_restore, mask = random_masking(B, L, ratio)
    keep = num_keep(L, ratio)
    assert ids_keep.shape == (B, keep)
    assert keep == max(1, int(L * (1 - ratio)))
    assert torch.all(mask.sum(1) == L - keep)  # ratio honoured in every sample
    # the visible indices are exactly the unmasked positions
    for b in range(B):
        assert set(ids_keep[b].tolist()) == set(torch.nonzero(mask[b] == 0).flatten().tolist())
    # ids_restore inverts the shuffle: keep + anything for the rest, restored, puts tokens back in place
    x = torch.arange(L).float().view(1, L, 1).expand(B, L, 1)
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    shuffled = gather_tokens(x, ids_shuffle)
    assert torch.equal(gather_tokens(shuffled, ids_restore), x)
    assert torch.equal(ids_shuffle[:, :keep], ids_keep)


def test_masks_differ_per_sample_and_follow_generator():
    a = random_masking(8, 64, 0.75, generator=torch.Generator().manual_seed(1))[0]
    b = random_masking(8, 64, 0.75, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b)
    assert len({tuple(sorted(r.tolist())) for r in a}) == 8


@pytest.mark.parametrize('bad', [-0.1, 1.0, 1.5])
def test_bad_ratio(bad):
    with pytest.raises(ValueError, match='mask_ratio'):
        random_masking(2, 16, bad)


def test_patchify_roundtrip():
    x = torch.randn(3, 3, 32, 32)
    p = patchify(x, 4)
    assert p.shape == (3, 64, 48)
    assert torch.equal(p[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))  # row-major, (p, p, C)
    assert torch.equal(unpatchify(p, 4, (8, 8)), x)
    with pytest.raises(ValueError, match='divisible'):
        patchify(torch.randn(1, 3, 30, 30), 4)
