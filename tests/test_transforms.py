import torch

from macrl_hub.transforms import PairAugment, ViewConfig, augment_view, eval_batch, random_resized_crop, solarize


def test_full_crop_without_flip_is_identity():
    x = torch.rand(4, 3, 32, 32)
    y = random_resized_crop(x, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    assert torch.allclose(y, x, atol=1e-5)
    y = random_resized_crop(x, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.allclose(y, x.flip(-1), atol=1e-5)


def test_views_shapes_ranges_and_asymmetry():
    x = (torch.rand(64, 3, 32, 32) * 255).to(torch.uint8)
    aug = PairAugment(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert aug.view1.solarize_p > 0 and aug.view2.solarize_p == 0  # view 1 is the stronger one
    v1, v2 = aug(x, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == (64, 3, 32, 32)
    assert v1.min() >= -1 - 1e-5 and v1.max() <= 1 + 1e-5
    assert not torch.allclose(v1, v2)
    a, _ = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, v1)  # deterministic given the generator


def test_solarize_and_grayscale():
    x = torch.tensor([0.2, 0.7]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert torch.allclose(solarize(x, 1.0), torch.tensor([0.2, 0.3]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    cfg = ViewConfig(crop_scale=(1, 1), flip_p=0, jitter_p=0, gray_p=1.0)
    y = augment_view(torch.rand(2, 3, 8, 8), 8, cfg)
    assert torch.allclose(y[:, 0], y[:, 1], atol=1e-5) and torch.allclose(y[:, 1], y[:, 2], atol=1e-5)


def test_eval_batch_normalises_and_resizes():
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    y = eval_batch(x, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert y.shape == (2, 3, 32, 32) and torch.allclose(y, torch.full_like(y, 2.0), atol=1e-3)
