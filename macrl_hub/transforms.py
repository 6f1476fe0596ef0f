"""Batch-wise augmentation on uint8 image tensors (CPU or GPU), and timm transforms for fine-tuning.

Per-image PIL augmentation costs more than a ViT-Ti step on 2 cores, so the pretraining and
linear-probe views are made on whole batches: one `affine_grid` + `grid_sample` does every
sample's RandomResizedCrop + flip, colour ops are per-sample broadcasts.

Pretraining views (paper, Sec. 4, "following BYOL"): crop, flip, colour jitter, greyscale,
Gaussian blur in both views; solarization in view 1 only ("stronger"). Defaults are solo-learn's
CIFAR BYOL recipe: blur probability 0 at 32 px (a 3-px blur erases a CIFAR image); BYOL's
(1.0, 0.1) for larger images.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['ViewConfig', 'PairAugment', 'random_resized_crop', 'normalize', 'color_jitter', 'grayscale',
           'gaussian_blur', 'solarize', 'finetune_transform', 'eval_batch']


@dataclass
class ViewConfig:
    crop_scale: Tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0


def _uniform(n: int, lo: float, hi: float, g: Optional[torch.Generator], device) -> Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _coin(n: int, p: float, g: Optional[torch.Generator], device) -> Tensor:
    return torch.rand(n, generator=g, device=device) < p


def random_resized_crop(
        x: Tensor,
        out_size: int,
        scale: Tuple[float, float] = (0.08, 1.0),
        ratio: Tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        generator: Optional[torch.Generator] = None,
) -> Tensor:
    """x: (B, C, H, W) float in [0, 1] -> (B, C, S, S), every sample its own crop and flip (bilinear).

    Area fraction ~ U(scale), log aspect ~ U(log ratio), crop clipped to the image, position uniform.
    """
    B, _, H, W = x.shape
    dev = x.device
    area = _uniform(B, *scale, generator, dev)
    logr = _uniform(B, math.log(ratio[0]), math.log(ratio[1]), generator, dev)
    ar = torch.exp(logr)
    w = torch.sqrt(area * ar).clamp(max=1.0)  # fraction of the width
    h = torch.sqrt(area / ar).clamp(max=1.0)
    cx = (torch.rand(B, generator=generator, device=dev) * 2 - 1) * (1 - w)  # centre in [-1+w, 1-w]
    cy = (torch.rand(B, generator=generator, device=dev) * 2 - 1) * (1 - h)
    flip = torch.where(_coin(B, flip_p, generator, dev), -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [B, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='reflection', align_corners=False)


def _gray(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma (ITU-R 601, as torchvision)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def grayscale(x: Tensor, p: float, generator: Optional[torch.Generator] = None) -> Tensor:
    sel = _coin(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(sel, _gray(x).expand_as(x), x)


def _hue_rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate hue by `angle` (B,) radians in YIQ space (a linear stand-in for HSV hue shift)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    t_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    t_rgb = torch.linalg.inv(t_yiq)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = t_rgb @ rot @ t_yiq  # (B, 3, 3)
    return torch.einsum('bij,bjhw->bihw', m, x)


def color_jitter(x: Tensor, cfg: ViewConfig, generator: Optional[torch.Generator] = None) -> Tensor:
    """Brightness, contrast, saturation, hue, each with a per-sample factor, applied with prob jitter_p."""
    B, dev = x.shape[0], x.device
    apply = _coin(B, cfg.jitter_p, generator, dev).view(-1, 1, 1, 1)
    y = x
    if cfg.brightness:
        y = y * _uniform(B, 1 - cfg.brightness, 1 + cfg.brightness, generator, dev).view(-1, 1, 1, 1)
    if cfg.contrast:
        c = _uniform(B, 1 - cfg.contrast, 1 + cfg.contrast, generator, dev).view(-1, 1, 1, 1)
        y = (y - _gray(y).mean(dim=(2, 3), keepdim=True)) * c + _gray(y).mean(dim=(2, 3), keepdim=True)
    if cfg.saturation:
        s = _uniform(B, 1 - cfg.saturation, 1 + cfg.saturation, generator, dev).view(-1, 1, 1, 1)
        g = _gray(y)
        y = (y - g) * s + g
    if cfg.hue:
        y = _hue_rotate(y, _uniform(B, -cfg.hue, cfg.hue, generator, dev) * 2 * math.pi)
    y = y.clamp(0, 1)
    return torch.where(apply, y, x)


def gaussian_blur(x: Tensor, p: float, sigma: Tuple[float, float] = (0.1, 2.0),
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Per-sample Gaussian blur, kernel ~10% of the image side (BYOL), applied with probability p."""
    if p <= 0:
        return x
    B, C, H, W = x.shape
    k = max(3, int(0.1 * H) // 2 * 2 + 1)
    s = _uniform(B, *sigma, generator, x.device).view(-1, 1)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(r.view(1, -1) ** 2) / (2 * s ** 2))
    kern = kern / kern.sum(dim=1, keepdim=True)  # (B, k)
    kern = kern.repeat_interleave(C, dim=0)  # (B*C, k)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode='reflect'), kern.view(B * C, 1, 1, k), groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode='reflect'), kern.view(B * C, 1, k, 1), groups=B * C)
    y = y.view(B, C, H, W)
    return torch.where(_coin(B, p, generator, x.device).view(-1, 1, 1, 1), y, x)


def solarize(x: Tensor, p: float, threshold: float = 0.5, generator: Optional[torch.Generator] = None) -> Tensor:
    if p <= 0:
        return x
    sel = _coin(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(sel & (x >= threshold), 1.0 - x, x)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = x.new_tensor(mean).view(1, -1, 1, 1)
    s = x.new_tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def to_float(x: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def augment_view(x: Tensor, size: int, cfg: ViewConfig, generator: Optional[torch.Generator] = None) -> Tensor:
    """float [0, 1] (B, C, H, W) -> one augmented view (B, C, size, size), still in [0, 1]."""
    y = random_resized_crop(x, size, cfg.crop_scale, flip_p=cfg.flip_p, generator=generator)
    if cfg.jitter_p > 0:
        y = color_jitter(y, cfg, generator)
    if cfg.gray_p > 0:
        y = grayscale(y, cfg.gray_p, generator)
    y = gaussian_blur(y, cfg.blur_p, generator=generator)
    return solarize(y, cfg.solarize_p, generator=generator)


class PairAugment:
    """uint8 batch -> (view 1, view 2), normalised; view 1 is the stronger one (solarization)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], crop_scale=(0.2, 1.0),
                 blur_p: Optional[Tuple[float, float]] = None, solarize_p: float = 0.2):
        if blur_p is None:
            blur_p = (0.0, 0.0) if size <= 32 else (1.0, 0.1)
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.view1 = ViewConfig(crop_scale=tuple(crop_scale), blur_p=blur_p[0], solarize_p=solarize_p)
        self.view2 = ViewConfig(crop_scale=tuple(crop_scale), blur_p=blur_p[1], solarize_p=0.0)

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        x = to_float(x)
        v1 = augment_view(x, self.size, self.view1, generator)
        v2 = augment_view(x, self.size, self.view2, generator)
        return normalize(v1, self.mean, self.std), normalize(v2, self.mean, self.std)


def eval_batch(x: Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (B, C, H, W) -> normalised float (B, C, size, size); resized only if needed."""
    y = to_float(x)
    if y.shape[-1] != size or y.shape[-2] != size:
        y = F.interpolate(y, size=(size, size), mode='bicubic', align_corners=False, antialias=True).clamp(0, 1)
    return normalize(y, mean, std)


def finetune_transform(size: int, mean: Sequence[float], std: Sequence[float]):
    """The paper's fine-tuning aug: RandomResizedCrop + AutoAugment + CutOut (timm's random erasing)."""
    from timm.data import create_transform
    return create_transform(size, is_training=True, auto_augment='original', re_prob=0.25, re_mode='const',
                            scale=(0.08, 1.0), mean=mean, std=std, interpolation='bicubic')
