import torch

import math

from macrl_hub.transforms import (PairAugment, ViewConfig, augment_view, eval_batch, gaussian_blur,
                                 random_resized_crop, solarize)


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
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0
    assert torch.allclose(augment_view(red, 8, cfg), torch.full((1, 3, 8, 8), 0.299), atol=1e-5)  # ITU-R 601 luma


def test_eval_batch_normalises_and_resizes():
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    y = eval_batch(x, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert y.shape == (2, 3, 32, 32) and torch.allclose(y, torch.full_like(y, 2.0), atol=1e-3)
    # per channel, in channel order; resizing keeps the image's orientation (a left-right ramp stays one)
    x = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 255, 0, torch.arange(16, dtype=torch.uint8).mul(17).view(1, 16)
    y = eval_batch(x, 32, (0.1, 0.2, 0.3), (0.5, 0.25, 0.2))
    assert torch.allclose(y[:, 0], torch.full_like(y[:, 0], 1.8), atol=1e-3)
    assert torch.allclose(y[:, 1], torch.full_like(y[:, 1], -0.8), atol=1e-3)
    ramp = y[0, 2] * 0.2 + 0.3  # back to [0, 1]
    assert (ramp[:, 1:] >= ramp[:, :-1] - 1e-4).all() and ramp[0, 0] < 0.05 and ramp[0, -1] > 0.95
    assert torch.allclose(ramp, ramp[:1].expand_as(ramp), atol=1e-4)  # every row the same ramp


def test_gaussian_blur_spreads_a_point_by_the_gaussian_kernel():
    """A single bright pixel blurred with sigma 1: a 3x3 kernel at 32 px (10% of the side, odd), outer(k, k) with
    k = exp(-r^2 / 2) / sum for r in -1, 0, 1; the image mass is kept."""
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, 16, 16] = 1.0
    y = gaussian_blur(x, 1.0, sigma=(1.0, 1.0))
    k = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)])
    k = k / k.sum()
    expected = torch.zeros_like(x)
    expected[:, :, 15:18, 15:18] = torch.outer(k, k)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    assert torch.equal(gaussian_blur(x, 0.0), x)  # p = 0: untouched


def test_blur_in_a_view_smooths_it():
    """augment_view with blur_p=1 against the same view (same generator, so the same crop) without blur: sigma ~
    U(0.1, 2) per image, so on noise the blurred batch has clearly less pixel-to-pixel variation."""
    x = torch.rand(32, 3, 32, 32)
    cfg = dict(crop_scale=(1.0, 1.0), flip_p=0, jitter_p=0, gray_p=0)
    sharp = augment_view(x, 32, ViewConfig(**cfg), torch.Generator().manual_seed(0))
    blurred = augment_view(x, 32, ViewConfig(blur_p=1.0, **cfg), torch.Generator().manual_seed(0))

    def tv(v):
        return (v[..., 1:, :] - v[..., :-1, :]).abs().mean() + (v[..., :, 1:] - v[..., :, :-1]).abs().mean()

    assert float(tv(blurred)) < 0.7 * float(tv(sharp)), (float(tv(blurred)), float(tv(sharp)))


def test_view_1_is_the_strong_view_and_colour_jitter_moves_colours():
    """blur_p is (view 1, view 2): BYOL's 1.0 on the strong view, 0.1 on the weak one, solarization on view 1 only;
    colour jitter changes each image by its own factors (and leaves it alone at zero strength)."""
    from macrl_hub.transforms import PairAugment, ViewConfig, color_jitter
    aug = PairAugment(64, (0.5,) * 3, (0.25,) * 3, blur_p=(1.0, 0.1))
    assert (aug.view1.blur_p, aug.view2.blur_p) == (1.0, 0.1)
    assert aug.view1.solarize_p > 0 and aug.view2.solarize_p == 0
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g) * 0.5 + 0.25
    y = color_jitter(x, ViewConfig(jitter_p=1.0), torch.Generator().manual_seed(1))
    change = (y - x).abs().mean((1, 2, 3))  # (B,)
    assert (change > 1e-3).all() and change.std() > 1e-3  # every image moved, each by its own amount
    still = ViewConfig(jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    assert torch.allclose(color_jitter(x, still, torch.Generator().manual_seed(1)), x, atol=1e-6)
