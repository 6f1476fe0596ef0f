"""Attention maps (the paper's Fig. 3): `macrl viz attention` (also `python -m macrl_hub.viz`).

    macrl viz attention --model macrl_vit_tiny_p4_cifar.cifar10 --data cifar10 \\
        --n 8 --out maps.png
    macrl viz attention --model macrl_vit_tiny_p4_cifar.cifar10_lin --method chefer --images a.png b.jpg
    macrl viz attention --model runs/macrl/checkpoint.pth --compare runs/mae/checkpoint.pth runs/moco/checkpoint.pth
    macrl viz reconstruct --model runs/macrl/checkpoint.pth --data ... --n 8 --out recon.png
        (checkpoints with a decoder: macrl train checkpoints of objective macrl/mae, or an exported
        folder's pretrain.safetensors; rows: original | masked | reconstruction | reconstruction + visible)

Methods, each a map over the patch grid that is non-negative and sums to 1 per image:
  last     last-layer attention, averaged over heads and over the patch tokens as queries (the class token's row
           for a model that pools its class token, global_pool='token'): where the final features look.
  rollout  attention rollout (Abnar & Zuidema 2020): prod_l (A_l + I)/2 with rows renormalised.
  chefer   Chefer, Gur & Wolf, ICCV 2021 "Generic Attention-model Explainability" (the simple rule):
           R = I; R += mean_h[(grad(A) * A)^+] @ R per block; needs a classifier head (the predicted class
           is explained). Encoders without a head get rollout instead, labelled and said so.
Our encoders have no class token and average the patch tokens, so a token's relevance is the mean of
its column over all query rows.

Each map is min-max scaled for display; the number in a map's corner is its peak over uniform attention
(x1.0: every patch alike), so a near-uniform map (an untrained model) reads as such beside a focused one.
"""
import argparse
import contextlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .runtime import attention_kernel

__all__ = ['attention_maps', 'capture_attention', 'save_grid', 'peak_over_uniform', 'reconstruct', 'load_macrl',
           'METHODS', 'main']

METHODS = ('last', 'rollout', 'chefer')


class capture_attention:
    """Context manager: record every block's attention probabilities (B, heads, N, N) and, if asked,
    their gradients. Switches fused attention off for the duration (fused kernels expose no weights)."""

    def __init__(self, model: nn.Module, grads: bool = False):
        self.model, self.grads = model, grads
        self.attn: List[Tensor] = []
        self.attn_grad: Dict[int, Tensor] = {}

    def __enter__(self):
        self._stack = contextlib.ExitStack()  # explicit softmax attention, each module's own flag back on exit
        self._stack.enter_context(attention_kernel(self.model, torch.device('cpu'), 'fp32', mode='explicit'))
        for i, blk in enumerate(self.model.blocks):
            self._stack.callback(blk.attn.attn_drop.register_forward_hook(self._hook(i)).remove)
        return self

    def _hook(self, i: int):
        def fn(module, inputs, output):
            self.attn.append(output)
            if self.grads and output.requires_grad:
                output.register_hook(lambda g: self.attn_grad.__setitem__(i, g))
        return fn

    def __exit__(self, *exc):
        self._stack.close()
        return False


def _to_patch_map(R: Tensor, num_prefix: int, grid, pooled_by_token: bool = False) -> Tensor:
    """R: (B, N, N) token relevance -> (B, h, w) over patches, summing to 1: the class token's row where the features
    are that token (`pooled_by_token`), else the mean of the patch tokens' rows (what global_pool='avg' pools)."""
    if num_prefix and pooled_by_token:
        r = R[:, 0, num_prefix:]  # the class token's row
    else:
        r = R[:, num_prefix:, num_prefix:].mean(dim=1)  # features average the patch tokens
    r = r.clamp_min(0)
    r = r / r.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return r.reshape(-1, *grid)


def attention_maps(model: nn.Module, x: Tensor, method: str = 'rollout', target: Optional[Tensor] = None) -> Tensor:
    """x: (B, C, H, W) normalised images -> (B, h, w) relevance maps on the patch grid (each sums to 1)."""
    if method not in METHODS:
        raise ValueError(f'unknown attention method {method!r}; allowed: {METHODS}')
    if method == 'chefer' and not getattr(model, 'num_classes', 0):
        method = 'rollout'  # no head to explain
    grid = tuple(model.patch_embed.grid_size)
    P = model.num_prefix_tokens
    by_token = getattr(model, 'global_pool', 'token') == 'token'
    was_training = model.training
    model.eval()
    with capture_attention(model, grads=method == 'chefer') as cap:
        if method == 'chefer':
            x = x.detach().requires_grad_(False)
            with torch.enable_grad():
                logits = model(x)
                cls = logits.argmax(1) if target is None else target
                model.zero_grad(set_to_none=True)
                logits.gather(1, cls.view(-1, 1)).sum().backward()
        else:
            with torch.no_grad():
                model.forward_features(x)
    model.train(was_training)
    A = [a.detach().float() for a in cap.attn]  # each (B, heads, N, N)
    B, _, N, _ = A[0].shape
    eye = torch.eye(N).expand(B, N, N)
    if method == 'last':
        return _to_patch_map(A[-1].mean(1), P, grid, by_token)
    if method == 'rollout':
        R = eye.clone()
        for a in A:
            a = 0.5 * a.mean(1) + 0.5 * eye
            R = (a / a.sum(-1, keepdim=True)) @ R
        return _to_patch_map(R, P, grid, by_token)
    R = eye.clone()
    for i, a in enumerate(A):
        g = cap.attn_grad[i].float()
        cam = (g * a).clamp_min(0).mean(1)  # (B, N, N)
        R = R + cam @ R
    return _to_patch_map(R, P, grid, by_token)


def _colormap(v: Tensor) -> Tensor:
    """v: (H, W) in [0, 1] -> (H, W, 3) uint8, a blue-cyan-yellow-red ramp."""
    stops = torch.tensor([[0, 0, 128], [0, 128, 255], [0, 255, 255], [255, 255, 0], [255, 64, 0]], dtype=torch.float)
    pos = v.clamp(0, 1) * (len(stops) - 1)
    i = pos.floor().long().clamp(max=len(stops) - 2)
    f = (pos - i).unsqueeze(-1)
    return (stops[i] * (1 - f) + stops[i + 1] * f).to(torch.uint8)


def peak_over_uniform(m: Tensor) -> float:
    """A map's largest share over the share of uniform attention (1.0: every patch alike; h*w: one patch only)."""
    return float(m.max() * m.numel() / m.sum().clamp_min(1e-12))


def save_grid(images: Tensor, panels: Dict[str, Tensor], path: Path, scale: int = 4) -> Path:
    """images: (B, 3, H, W) uint8; panels: name -> (B, h, w) maps (a name's lines, '\n'-separated, are drawn one
    under the other). One row per image: the image, then an overlay per panel (map upsampled to the image, min-max
    scaled for display, blended 50/50), its peak over uniform attention written in its corner (x1.0: uniform)."""
    from PIL import Image, ImageDraw
    import torch.nn.functional as F
    B, _, H, W = images.shape
    S = (H * scale, W * scale)
    cols = 1 + len(panels)
    labels = [name.split('\n') for name in ['image'] + list(panels)]
    header = 2 + 12 * max(len(lines) for lines in labels)
    canvas = Image.new('RGB', (cols * S[1], header + B * S[0]), 'white')
    draw = ImageDraw.Draw(canvas)
    for j, lines in enumerate(labels):
        for k, line in enumerate(lines):
            draw.text((j * S[1] + 3, 1 + 12 * k), line[:S[1] // 6], fill='black')
    big = F.interpolate(images.float(), size=S, mode='nearest')  # (B, 3, SH, SW)
    for b in range(B):
        img = big[b].permute(1, 2, 0)
        canvas.paste(Image.fromarray(img.to(torch.uint8).numpy()), (0, header + b * S[0]))
        for j, m in enumerate(panels.values(), start=1):
            mm = F.interpolate(m[b][None, None].float(), size=S, mode='bilinear', align_corners=False)[0, 0]
            mm = (mm - mm.min()) / (mm.max() - mm.min()).clamp_min(1e-12)  # display: min-max per map
            over = 0.5 * img + 0.5 * _colormap(mm).float()
            canvas.paste(Image.fromarray(over.to(torch.uint8).numpy()), (j * S[1], header + b * S[0]))
            draw.text((j * S[1] + 3, header + b * S[0] + 2), f'x{peak_over_uniform(m[b]):.1f}', fill='white',
                      stroke_width=1, stroke_fill='black')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def load_macrl(spec: str):
    """The whole MACRL model (encoder, decoder, ...) from a `macrl train` checkpoint, or from an exported folder's
    `pretrain.safetensors` (`macrl export --full`; the folder itself too), rebuilt with the folder's config.json."""
    import json
    import timm
    from . import models  # noqa: F401
    from .macrl import MACRL
    from .models import checkpoint_data_config, set_data_config
    path = Path(spec)
    if path.is_dir() and (path / 'pretrain.safetensors').is_file():
        path = path / 'pretrain.safetensors'
    if path.is_file() and path.name == 'pretrain.safetensors' and (path.parent / 'config.json').is_file():
        from safetensors import safe_open
        from .weights import load_safetensors
        with safe_open(str(path), 'pt') as f:
            macrl_kwargs = json.loads((f.metadata() or {}).get('macrl', '{}'))
        cfg = json.loads((path.parent / 'config.json').read_text())
        arch, model_args = cfg.get('macrl_architecture') or cfg['architecture'], cfg.get('model_args', {})
        sd = {k: v.float() if v.is_floating_point() else v for k, v in load_safetensors(path).items()}  # fp16 copy
        norm = {k: cfg['pretrained_cfg'][k] for k in ('mean', 'std') if k in cfg.get('pretrained_cfg', {})}
    elif path.is_file() and path.suffix in ('.pth', '.pt'):
        from .weights import load_checkpoint
        ck = load_checkpoint(path)
        if not isinstance(ck, dict) or 'macrl' not in ck or 'arch' not in ck:
            raise ValueError(f'{path} is not a `macrl train` checkpoint')
        arch, model_args, macrl_kwargs, sd = ck['arch'], ck.get('model_args') or {}, ck['macrl'], ck['model']
        norm = checkpoint_data_config(ck)
    else:
        raise ValueError(f'reconstruction needs a `macrl train` checkpoint or an exported folder with '
                         f'pretrain.safetensors (`macrl export --full`), both with a decoder; got {spec!r}')
    encoder = timm.create_model(arch, **model_args)
    set_data_config(encoder, **norm)  # reconstructions are shown un-normalised with what training used
    model = MACRL(encoder, **macrl_kwargs)
    if model.decoder is None:
        raise ValueError(f'{path} was trained with objective={macrl_kwargs.get("objective")!r}: it has no decoder')
    model.load_state_dict(sd)
    return model.eval()


@torch.no_grad()
def reconstruct(model, x: Tensor, generator: Optional[torch.Generator] = None):
    """x: (B, C, H, W) normalised -> (masked, reconstruction, reconstruction with visible patches pasted),
    all (B, C, H, W) normalised; un-normalises per-patch predictions when the model used norm_pix_loss."""
    from .masking import patchify, random_masking, unpatchify
    ids_keep, ids_restore, mask = random_masking(x.shape[0], model.num_patches, model.mask_ratio or 0.75,
                                                 x.device, generator)
    pred = model.forward_decoder(model.forward_encoder(x, ids_keep), ids_restore)  # (B, L, p*p*C)
    target = patchify(x, model.patch_size)
    if model.norm_pix_loss:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    m = mask.unsqueeze(-1)
    un = lambda t: unpatchify(t, model.patch_size, model.grid_size, model.in_chans)  # noqa: E731
    return un(target * (1 - m)), un(pred), un(target * (1 - m) + pred * m)


def _load_images(files: Sequence[str], size: int) -> Tensor:
    from .data import decode_images
    blobs = [Path(f).read_bytes() for f in files]
    imgs, _ = decode_images(blobs, list(files), size=size, on_error='raise')
    return imgs


def short_names(specs: Sequence[str]) -> List[str]:
    """Column labels for compared models: what tells their specs apart, token-wise (runs/macrl/checkpoint.pth vs
    runs/mae/checkpoint.pth -> macrl, mae; macrl_vit_tiny_p4_cifar.cifar10 vs ..._small_... -> tiny, small);
    numbered where that leaves them equal."""
    import re
    toks = [re.split(r'[./_-]+', s.strip('./')) for s in specs]
    if len(toks) > 1:
        while all(len(t) > 1 for t in toks) and len({t[0] for t in toks}) == 1:
            toks = [t[1:] for t in toks]
        while all(len(t) > 1 for t in toks) and len({t[-1] for t in toks}) == 1:
            toks = [t[:-1] for t in toks]
    names = ['_'.join(t) for t in toks]
    return names if len(set(names)) == len(names) else [f'{i}.{n}' for i, n in enumerate(names, 1)]


def _denorm(x: Tensor, mean, std) -> Tensor:
    m, s = x.new_tensor(mean).view(1, -1, 1, 1), x.new_tensor(std).view(1, -1, 1, 1)
    return ((x * s + m).clamp(0, 1) * 255).round().to(torch.uint8)


def main(argv: Optional[list] = None) -> Path:
    from .data import DataError, default_data, load_dataset
    from .evaluate import load_encoder
    from .features import data_config
    from .transforms import eval_batch
    p = argparse.ArgumentParser(prog='macrl viz', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=['attention', 'reconstruct'])
    p.add_argument('--model', required=True, help='timm name[.tag] | checkpoint.pth | model folder')
    p.add_argument('--compare', nargs='*', default=[], help='more models, shown side by side')
    p.add_argument('--images', nargs='*', default=[], help='image files (else --data)')
    p.add_argument('--data', default=None)
    p.add_argument('--split', default='test')
    p.add_argument('--n', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--method', nargs='+', default=None, choices=METHODS,
                   help='default: last + rollout (+ chefer for models with a head)')
    p.add_argument('--out', default=None, help='PNG path (default: attention.png / reconstruct.png)')
    a = p.parse_args(argv)
    out_path = Path(a.out or f'{a.what}.png')
    if a.n < 1:
        p.error(f'--n {a.n}: draw at least 1 image')
    from PIL import Image
    if out_path.is_dir() or out_path.suffix.lower() not in Image.registered_extensions():
        example = out_path / 'maps.png' if out_path.is_dir() else out_path.with_suffix('.png')
        p.error(f'--out {a.out}: give an image file path, e.g. {example} (a PNG, JPEG, ... by its extension)')
    if a.what == 'reconstruct':
        macrl = load_macrl(a.model)
        models = [(a.model, macrl.encoder)]
    else:
        models = [(s, load_encoder(s)) for s in [a.model] + a.compare]
    size = max(data_config(m)[0] for _, m in models)  # decoded once, at the largest input; each model resamples
    if a.images:
        images = _load_images(a.images, size)
    else:
        data = a.data or default_data()
        if data is None:
            p.error('give --images or --data (or set MACRL_DATA)')
        try:
            images = load_dataset(data, a.split, size=size).subset(a.n, seed=a.seed).images
        except DataError as e:  # maps need no held-out images: any split will do
            if f'split {a.split!r} not found' not in str(e):
                raise
            raise DataError(f'{e}. `macrl viz` draws any images: --split train uses the training ones') from None
    if a.what == 'reconstruct':
        _, mean, std = data_config(macrl.encoder)
        x = eval_batch(images, size, mean, std)
        rows = [images] + [_denorm(t, mean, std) for t in reconstruct(macrl, x, torch.Generator().manual_seed(a.seed))]
        grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (3, 4H, B*W)
        grid = torch.nn.functional.interpolate(grid[None].float(), scale_factor=4, mode='nearest')[0]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid.permute(1, 2, 0).to(torch.uint8).numpy()).save(out_path)
        print(f'macrl viz: wrote {out_path} (rows: original, masked, reconstruction, reconstruction + visible)')
        return out_path
    panels: Dict[str, Tensor] = {}
    for name, (_, model) in zip(short_names([s for s, _ in models]), models):
        own, mean, std = data_config(model)
        x = eval_batch(images, own, mean, std)  # each model at its own input size (the maps are drawn at one)
        methods = a.method or (['last', 'rollout'] + (['chefer'] if model.num_classes else []))
        for m in methods:
            label = m
            if m == 'chefer' and not model.num_classes:
                label = 'rollout (no head)'
                print(f'macrl viz: {name if len(models) > 1 else a.model} has no classifier head for chefer to '
                      f'explain: its chefer column is attention rollout', flush=True)
            panels[label if len(models) == 1 else f'{label}\n{name}'] = attention_maps(model, x, m)
    out = save_grid(images, panels, out_path)
    print(f'macrl viz: wrote {out} ({len(images)} images x {len(panels)} maps)')
    return out


if __name__ == '__main__':
    main()
