"""Evaluation: `macrl eval knn|linear|knn+linear|finetune|classify` (also `python -m macrl_hub.evaluate`).

    macrl eval knn --model macrl_vit_tiny_p4_cifar.cifar10 --data cifar10     # or path/to/cifar10-jpeg.tar.xz
    macrl eval linear --model runs/tiny/checkpoint.pth --data cifar10 --epochs 100
    macrl eval knn+linear --model runs/tiny/checkpoint.pth --data ...        # both, features extracted once
    macrl eval finetune --model model_cards/macrl_vit_tiny_p4_cifar.cifar10 --data ... --epochs 100 \\
        --out runs/ft   # finetune.pth after every epoch (--resume continues it) + the fine-tuned classifier
    macrl eval classify --model macrl_vit_tiny_p4_cifar.cifar10_lin --data ...  # a classifier tag as it is
    macrl eval knn --model macrl_vit_tiny_p4_cifar --random-init --data ...   # the chance-level reference

--model is a timm name (with a tag: published weights; `--model-args` as in timm.create_model), timm's
`hf-hub:<repo>` or `local-dir:<folder>`, a training checkpoint (`.pth` from `macrl train`), or a model folder
(`model.safetensors` + `config.json`, as under model_cards/; or that folder's model.safetensors).
Each command ends by printing one JSON line with the metric(s), the config and the wall time
(also written to --json-out if given).
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageDataset, class_difference, default_data, load_dataset
from .features import data_config, extract_features
from .knn import knn_accuracy
from .precision import autocast, resolve_precision
from .probe import fold_head, train_linear_probe
from .runtime import keep_freed_memory
from .transforms import eval_batch
from .weights import load_checkpoint

__all__ = ['PROTOCOLS', 'build_parser', 'load_encoder', 'model_source', 'save_model_folder', 'eval_knn', 'eval_linear',
           'eval_knn_linear', 'eval_finetune', 'eval_classify', 'eval_record', 'write_eval_record', 'main']


TIMM_PREFIXES = ('hf-hub:', 'local-dir:')


def _model_path(spec: str) -> Path:
    """The file or folder a --model spec names: a model folder's own model.safetensors stands for the folder; a
    training run's folder is refused, naming its checkpoint; a bare .safetensors file is refused (it does not say
    which architecture it holds)."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == '.safetensors':
        if path.name == 'model.safetensors' and (path.parent / 'config.json').is_file():
            return path.parent
        raise ValueError(f'{path}: a bare safetensors file does not say which architecture it holds; pass a model '
                         f'folder (model.safetensors + config.json, as `macrl export` writes one) or a checkpoint')
    if path.is_dir() and (path / 'checkpoint.pth').is_file() and not (path / 'model.safetensors').is_file():
        raise ValueError(f'{path} is a `macrl train` run folder, not a model folder: pass its checkpoint, '
                         f'--model {path / "checkpoint.pth"} (or `macrl export` it to a model folder first)')
    return path


def load_encoder(spec: str, pretrained: bool = True, num_classes: Optional[int] = None,
                 model_args: Optional[Dict[str, Any]] = None) -> nn.Module:
    """A timm encoder from a model name[.tag], timm's hf-hub:/local-dir: ids, a `macrl train` checkpoint or a model
    folder; `pretrained=False`: the same architecture with a random init (the chance-level reference), whichever the
    spec. `model_args`: timm.create_model keywords, for a name or hub id only (a checkpoint or folder has its own)."""
    import timm
    from . import models  # noqa: F401  (registers macrl_vit_*)
    from .models import checkpoint_data_config, checkpoint_filter_fn, set_data_config
    kw = {} if num_classes is None else {'num_classes': num_classes}
    if spec.startswith(TIMM_PREFIXES):
        return _create(spec, pretrained, {**(model_args or {}), **kw})
    path = _model_path(spec)
    if model_args and path.exists():
        raise ValueError(f'--model-args applies to a timm name; {spec} builds its architecture from its own '
                         f'record: drop --model-args')
    if path.is_dir():
        if not (path / 'config.json').is_file():
            raise ValueError(f'model folder {path} has no config.json (expected model.safetensors + config.json)')
        return timm.create_model(f'local-dir:{path.resolve()}', pretrained=pretrained, **kw)
    if path.is_file() and path.suffix in ('.pth', '.pt', '.ckpt'):
        ck = load_checkpoint(path)
        if not isinstance(ck, dict) or 'arch' not in ck or 'model' not in ck:
            raise ValueError(f'{path} is not a `macrl train` checkpoint (no "arch"/"model" keys)')
        model = timm.create_model(ck['arch'], pretrained=False, **dict(ck.get('model_args') or {}, **kw))
        set_data_config(model, **checkpoint_data_config(ck))  # the run's own --mean/--std and input size
        if not pretrained:  # --random-init: the checkpoint's architecture, not its weights
            return model
        sd = checkpoint_filter_fn(ck['model'], model)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith('head.')]
        if missing or unexpected:
            raise ValueError(f'{path} does not match {ck["arch"]}: missing {missing[:5]}, unexpected {unexpected[:5]}')
        return model
    if path.suffix in ('.pth', '.pt', '.safetensors', '.ckpt') or '/' in spec:
        raise ValueError(f'model {spec!r} not found: no such file or folder')
    return _create(spec, pretrained, {**(model_args or {}), **kw})


def _create(spec: str, pretrained: bool, kw: Dict[str, Any]) -> nn.Module:
    import timm
    try:
        return timm.create_model(spec, pretrained=pretrained, **kw)
    except RuntimeError as e:
        if 'Unknown model' in str(e):
            raise ValueError(f'unknown model {spec!r}; MACRL models: {timm.list_models("macrl_*")}') from None
        raise


def model_source(spec: str, model_args: Optional[Dict[str, Any]] = None) -> Tuple[str, Dict[str, Any]]:
    """(architecture, model_args) behind a `load_encoder` spec, to write a config.json that rebuilds the model."""
    if spec.startswith('local-dir:'):
        spec = spec[len('local-dir:'):]
    path = _model_path(spec) if not spec.startswith('hf-hub:') else None
    if path is None:
        from timm.models._hub import load_model_config_from_hf
        _, arch, hub_args = load_model_config_from_hf(spec[len('hf-hub:'):])
        return arch, {**dict(hub_args or {}), **(model_args or {})}
    if path.is_dir():  # (model_args: a local-dir: id's own, which load_encoder passed to timm on top of the folder's)
        cfg = json.loads((path / 'config.json').read_text())
        return cfg.get('macrl_architecture', cfg['architecture']), {**dict(cfg.get('model_args') or {}),
                                                                    **(model_args or {})}
    if path.is_file():
        ck = load_checkpoint(path)
        return ck['arch'], dict(ck.get('model_args') or {})
    return spec.split('.', 1)[0], dict(model_args or {})


def save_model_folder(model: nn.Module, spec: str, folder: str, tag: str,
                      label_names: Optional[list] = None, model_args: Optional[Dict[str, Any]] = None) -> Path:
    """`model` (e.g. fine-tuned from `spec`) as a timm model folder: model.safetensors + config.json, loadable with
    `timm.create_model('local-dir:<folder>', pretrained=True)` or `macrl eval classify --model <folder>`."""
    from .export import write_model_files
    arch, model_args = model_source(spec, model_args)
    write_model_files(model, Path(folder), arch, model_args, tag,
                      label_names=list(label_names) if label_names else None)
    return Path(folder)


def _load_splits(data: str, size: int, n_train: int, n_test: int, seed: int):
    train = load_dataset(data, 'train', size=size).subset(n_train, seed=seed)
    test = load_dataset(data, 'test', size=size).subset(n_test, seed=seed)
    return _same_classes(train, test, data)


def _same_classes(train, test, data: str):
    if len(train.classes) < 2:
        raise ValueError(f'{data} has one class ({train.classes[0] if train.classes else "none"}): any classifier '
                         'scores 100% on it, so kNN, linear probe and fine-tune need at least 2 classes')
    if train.classes != test.classes:
        raise ValueError(f'train and test splits of {data} have different classes: '
                         f'{class_difference(train.classes, test.classes)}')
    return train, test


def _features(model, train, test, precision: str, device) -> Tuple[torch.Tensor, torch.Tensor]:
    ftr = extract_features(model, train.images, device=device, precision=precision, desc='train features')
    fte = extract_features(model, test.images, device=device, precision=precision, desc='test features')
    return ftr.cpu(), fte.cpu()


def _splits(model: nn.Module, data: str, n_train: int, n_test: int, seed: int, splits=None):
    """(train, test) for `model`'s input size: loaded here, or `splits` already loaded (class check kept)."""
    if splits:
        return _same_classes(*splits, data)
    return _load_splits(data, data_config(model)[0], n_train, n_test, seed)


def eval_knn(model: nn.Module, data: str, ks=(20, 200), t: float = 0.07, n_train: int = 0, n_test: int = 0,
             precision: str = 'auto', device=None, seed: int = 0, splits=None) -> Dict[str, Any]:
    """`splits`: (train, test) ImageTensors already loaded (then data/n_train/n_test/seed are not used)."""
    train, test = _splits(model, data, n_train, n_test, seed, splits)
    ftr, fte = _features(model, train, test, precision, device)
    return _knn(ftr, fte, train, test, ks, t)


def eval_linear(model: nn.Module, data: str, epochs: int = 100, batch_size: int = 256, lr: float = 0.1,
                optimizer: str = 'sgd', n_train: int = 0, n_test: int = 0, precision: str = 'auto', device=None,
                seed: int = 0, save_head: Optional[str] = None, weight_decay: float = 0.0,
                augment: bool = False, warmup_epochs: float = 0.0) -> Dict[str, Any]:
    """Linear probe on the frozen encoder. augment=False: on cached features of the unaugmented images (fast);
    augment=True: each step on features of a fresh RandomResizedCrop (scale 0.08-1) + flip of its images (the
    paper's probe; one encoder forward per image per epoch). lr: linear warmup for `warmup_epochs`, then cosine."""
    train, test = _splits(model, data, n_train, n_test, seed)
    ftr, fte = _features(model, train, test, precision, device)
    aug = _augmented_features(model, train, precision, device, seed) if augment else None
    return _linear(ftr, fte, train, test, epochs, batch_size, lr, optimizer, seed, save_head, weight_decay, aug,
                   warmup_epochs, fingerprints(model) if save_head else None)


def _augmented_features(model: nn.Module, train, precision: str, device, seed: int):
    """idx -> (B, D) features of a random resized crop (0.08-1, flip p=0.5) of train images idx, frozen model."""
    from .transforms import normalize, random_resized_crop, to_float
    device = device or next(model.parameters()).device
    precision = resolve_precision(precision, device)
    size, mean, std = data_config(model)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    model.eval()

    @torch.no_grad()
    def feats(idx: torch.Tensor) -> torch.Tensor:
        x = random_resized_crop(to_float(train.images[idx].to(device)), size, (0.08, 1.0), flip_p=0.5,
                                generator=gen)
        with autocast(device, precision):
            f = model.forward_head(model.forward_features(normalize(x, mean, std)), pre_logits=True)
        return f.float().cpu()  # (B, D)
    return feats


def eval_knn_linear(model: nn.Module, data: str, ks=(20, 200), t: float = 0.07, epochs: int = 100,
                    batch_size: int = 256, lr: float = 0.1, optimizer: str = 'sgd', n_train: int = 0, n_test: int = 0,
                    precision: str = 'auto', device=None, seed: int = 0, save_head: Optional[str] = None,
                    splits=None, weight_decay: float = 0.0, augment: bool = False,
                    warmup_epochs: float = 0.0) -> Dict[str, Any]:
    """kNN and the linear probe from one feature extraction (the same numbers as the two separate protocols)."""
    train, test = _splits(model, data, n_train, n_test, seed, splits)
    ftr, fte = _features(model, train, test, precision, device)
    aug = _augmented_features(model, train, precision, device, seed) if augment else None
    return {**_knn(ftr, fte, train, test, ks, t),
            **_linear(ftr, fte, train, test, epochs, batch_size, lr, optimizer, seed, save_head, weight_decay, aug,
                      warmup_epochs, fingerprints(model) if save_head else None)}


def _knn(ftr, fte, train, test, ks, t) -> Dict[str, Any]:
    acc = knn_accuracy(ftr, train.labels, fte, test.labels, len(train.classes), ks=ks, t=t)
    capped = {k: len(train) for k in ks if k > len(train)}  # knn_predict votes over the whole bank then
    if capped:
        print(f'macrl eval: the kNN bank holds {len(train)} images, so k={", ".join(map(str, capped))} uses all '
              f'{len(train)} (recorded as knn_k_capped)', file=sys.stderr)
    return {**{f'knn_top1_k{k}': v for k, v in acc.items()}, 'n_train': len(train), 'n_test': len(test),
            'temperature': t, **({'knn_k_capped': {str(k): n for k, n in capped.items()}} if capped else {})}


def _linear(ftr, fte, train, test, epochs, batch_size, lr, optimizer, seed, save_head, weight_decay=0.0,
            aug=None, warmup_epochs: float = 0.0, encoder: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """`encoder`: the frozen encoder's `fingerprints`, kept in the saved head's metadata (`macrl export --head` refuses
    a head probed on other weights than the checkpoint it exports)."""
    probe, stats = train_linear_probe(aug or ftr, train.labels, len(train.classes), epochs, batch_size, lr,
                                      weight_decay=weight_decay, optimizer=optimizer, seed=seed,
                                      test=(fte, test.labels), warmup_epochs=warmup_epochs)
    if aug is not None:  # train accuracy on the unaugmented images, as without augmentation
        from .probe import accuracy
        stats['train_top1'] = accuracy(probe(ftr), train.labels)
    if save_head:
        from .weights import save_safetensors
        head = fold_head(probe)
        save_safetensors({'head.weight': head['weight'], 'head.bias': head['bias']}, save_head,
                         metadata={'label_names': json.dumps(train.classes), **(encoder or {})})
    return {'linear_top1': stats['test_top1'], 'linear_train_top1': stats['train_top1'], 'n_train': len(train),
            'n_test': len(test), 'probe_epochs': epochs, 'probe_lr': lr, 'probe_optimizer': optimizer,
            'probe_weight_decay': weight_decay, 'probe_augment': aug is not None,
            **({'probe_warmup_epochs': warmup_epochs} if warmup_epochs else {}), 'label_names': train.classes}


def eval_finetune(model: nn.Module, data: str, epochs: int = 100, batch_size: int = 128, lr: float = 1.5e-3,
                  weight_decay: float = 0.05, layer_decay: float = 0.75, smoothing: float = 0.1,
                  warmup_epochs: int = 5, n_train: int = 0, n_test: int = 0, precision: str = 'auto', device=None,
                  seed: int = 0, workers: int = 0, out: Optional[str] = None, resume: bool = False) -> Dict[str, Any]:
    """Full fine-tuning: the paper's aug (RandomResizedCrop, AutoAugment, CutOut), AdamW with timm's
    layer-wise lr decay, label smoothing, warmup + cosine. lr is the absolute peak lr (paper: 1.5e-3).
    `model` is fine-tuned in place (its head replaced by one for the data's classes).

    With `out`, the whole state (model, optimizer, step, RNGs) is written atomically to `out/finetune.pth` after
    every epoch; `resume=True` continues from it (same settings required) and ends exactly where an uninterrupted
    run would. An existing checkpoint is never overwritten without `resume`."""
    from timm.optim import create_optimizer_v2
    from .train import lr_at
    from .transforms import finetune_transform
    device = device or torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    precision = resolve_precision(precision, device)
    settings = dict(init_sha256=weights_sha256(model), data=str(data), epochs=epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, layer_decay=layer_decay, smoothing=smoothing,
                    warmup_epochs=warmup_epochs, n_train=n_train, n_test=n_test, seed=seed)
    ck_path = Path(out) / 'finetune.pth' if out else None
    if ck_path and ck_path.exists() and not resume:
        raise FileExistsError(f'{ck_path} holds a fine-tuning run: pass --resume to continue it, or choose another '
                              '--out (it is never overwritten)')
    theirs = [f for f in ('model.safetensors', 'config.json', 'README.md', 'checkpoint.pth')
              if ck_path and not ck_path.exists() and (Path(out) / f).exists()]
    if theirs:  # a model folder or a training run: the fine-tuned classifier would replace their files
        raise FileExistsError(f'--out {out} already holds {", ".join(theirs)} (a model folder or a training run); a '
                              f'fine-tune writes finetune.pth, model.safetensors and config.json there: choose '
                              f'another --out')
    size, mean, std = data_config(model)
    train, test = _load_splits(data, size, n_train, n_test, seed)
    # what a resume must find again: the same images by count and classes, wherever --data now points
    settings.update(n_train_images=len(train), n_test_images=len(test), classes=list(train.classes))
    _seed_everything(seed)  # the augmentations draw from python's and numpy's RNGs too
    model.reset_classifier(len(train.classes))
    model.to(device)
    opt = create_optimizer_v2(model, 'adamw', lr=lr, weight_decay=weight_decay, layer_decay=layer_decay)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        ImageDataset(train, transform=finetune_transform(size, mean, std)), batch_size=batch_size,
        shuffle=True, drop_last=True, num_workers=workers, generator=gen)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f'--batch-size {batch_size} is larger than the train split ({len(train)} images)')
    total = epochs * steps_per_epoch
    warm = min(warmup_epochs * steps_per_epoch, total // 2)  # short runs: warm up for half at most
    if warm < warmup_epochs * steps_per_epoch:
        print(f'finetune: --warmup-epochs {warmup_epochs} is more than half of {epochs} epochs: warming up for '
              f'{warm / steps_per_epoch:g} (recorded as warmup_epochs)', file=sys.stderr, flush=True)
    step, epoch_loss, start = 0, [], 0
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')  # fp16: small gradients would underflow
    if ck_path and ck_path.exists():
        start, step, epoch_loss = _restore_finetune(ck_path, settings, model, opt, gen, scaler)
        print(f'finetune: resuming {ck_path} at epoch {start}/{epochs}', file=sys.stderr, flush=True)
    for epoch in range(start, epochs):
        model.train()
        t_ep, run_loss = time.time(), 0.0
        for x, y in loader:
            scale = lr_at(step, total, warm, 1.0)
            for group in opt.param_groups:
                group['lr'] = lr * scale * group.get('lr_scale', 1.0)
            with autocast(device, precision):
                loss = F.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f'fine-tuning loss became {loss.item()} at epoch {epoch}, step {step}; '
                                         f'lower --lr (now {lr:g})')
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            run_loss += loss.item()
            step += 1
        epoch_loss.append(run_loss / steps_per_epoch)
        print(f'finetune epoch {epoch + 1}/{epochs}: loss {epoch_loss[-1]:.4f} '
              f'({steps_per_epoch * batch_size / (time.time() - t_ep):.0f} img/s)', file=sys.stderr, flush=True)
        if ck_path:
            _save_finetune(ck_path, settings, epoch + 1, step, epoch_loss, model, opt, gen, scaler)
    return {'finetune_top1': _top1(model, test, device, precision), 'n_train': len(train), 'n_test': len(test),
            'finetune_epochs': epochs, 'finetune_lr': lr, 'finetune_weight_decay': weight_decay,
            'layer_decay': layer_decay, 'warmup_epochs': warm / steps_per_epoch,
            'train_loss_per_epoch': [round(v, 4) for v in epoch_loss], 'label_names': train.classes}


def weights_sha256(model: nn.Module, dtype: torch.dtype = torch.float32) -> str:
    """Fingerprint of an encoder's weights (the head excluded: a fine-tune replaces it, a _lin tag adds it), as
    fp32 values after a round trip through `dtype` (an fp16 export's weights are the fp32 ones so rounded)."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if not k.startswith('head.'):
            h.update(k.encode() + v.detach().to(dtype).float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprints(model: nn.Module) -> Dict[str, str]:
    """An eval record's `weights_sha256` and `weights_sha256_fp16` (the same weights rounded to fp16, as an fp16
    checkpoint or export holds them): export accepts the record for a model with either."""
    return {'weights_sha256': weights_sha256(model), 'weights_sha256_fp16': weights_sha256(model, torch.float16)}


def _seed_everything(seed: int) -> None:
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_finetune(path: Path, settings: Dict[str, Any], epoch: int, step: int, epoch_loss: list, model: nn.Module,
                   opt, gen: torch.Generator, scaler: Optional[torch.amp.GradScaler] = None) -> None:
    """Everything a resumed fine-tune needs to continue bit for bit, written atomically (fsync + rename)."""
    import random
    import numpy as np
    from .weights import atomic_torch_save
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    atomic_torch_save({
        'settings': settings, 'epoch': epoch, 'step': step, 'epoch_loss': list(epoch_loss),
        'model': model.state_dict(), 'optimizer': opt.state_dict(),
        'scaler': scaler.state_dict() if scaler is not None else {},
        'rng': {'torch': torch.get_rng_state(), 'loader': gen.get_state(), 'python': random.getstate(),
                'numpy': (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
                'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }, path)


def _restore_finetune(path: Path, settings: Dict[str, Any], model: nn.Module, opt,
                      gen: torch.Generator, scaler: Optional[torch.amp.GradScaler] = None) -> Tuple[int, int, list]:
    """Load `_save_finetune`'s state into model/opt/RNGs; refuses a checkpoint of other settings."""
    import random
    import numpy as np
    ck = load_checkpoint(path)
    if not isinstance(ck, dict) or 'settings' not in ck or 'model' not in ck:
        raise ValueError(f'{path} is not a `macrl eval finetune` checkpoint')
    if ck['settings'].get('init_sha256') != settings['init_sha256']:
        raise ValueError(f'{path} is a fine-tune of other weights than this --model (init_sha256 differs): choose '
                         'another --out for this model')
    saved = ck['settings']  # the data by its images (a moved folder resumes); by its path in older checkpoints
    skip = {'data'} if 'classes' in saved else set()
    diff = {k: (saved[k], v) for k, v in settings.items() if k in saved and k not in skip and saved[k] != v}
    if diff:
        raise ValueError(f'{path} was fine-tuned with other settings; to resume it, pass the same ones: '
                         + ', '.join(f'{k} (checkpoint {a!r}, now {b!r})' for k, (a, b) in diff.items()))
    model.load_state_dict(ck['model'])
    opt.load_state_dict(ck['optimizer'])
    if scaler is not None and scaler.is_enabled() and ck.get('scaler'):
        scaler.load_state_dict(ck['scaler'])
    rng = ck['rng']
    torch.set_rng_state(rng['torch'])
    gen.set_state(rng['loader'])
    random.setstate(rng['python'])
    name, keys, pos, has_gauss, gauss = rng['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if rng.get('cuda') and torch.cuda.is_available() and len(rng['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng['cuda'])
    return ck['epoch'], ck['step'], list(ck['epoch_loss'])


@torch.no_grad()
def _top1(model: nn.Module, test, device, precision: str, batch_size: int = 512) -> float:
    """Top-1 (%) of the model's own classifier head on `test` (eval transform)."""
    size, mean, std = data_config(model)
    model.eval()
    correct = 0
    for i in range(0, len(test), batch_size):
        x = eval_batch(test.images[i:i + batch_size].to(device), size, mean, std)
        with autocast(device, precision):
            correct += int((model(x).argmax(1).cpu() == test.labels[i:i + batch_size]).sum())
    return 100.0 * correct / len(test)


def eval_classify(model: nn.Module, data: str, n_test: int = 0, precision: str = 'auto', device=None,
                  seed: int = 0) -> Dict[str, Any]:
    """Top-1 of a classifier as it is (e.g. a `*_lin` tag: encoder + linear-probe head) on the test split.
    Its head must have one output per class of `data`, in the dataset's class order (checked against the
    label_names in its pretrained_cfg when it has them)."""
    if not getattr(model, 'num_classes', 0):
        raise ValueError('this model has no classifier head (num_classes=0): use `macrl eval knn` or `linear`, '
                         'or a classifier tag such as macrl_vit_tiny_p4_cifar.cifar10_lin')
    device = device or next(model.parameters()).device
    precision = resolve_precision(precision, device)
    test = load_dataset(data, 'test', size=data_config(model)[0]).subset(n_test, seed=seed)
    names = (getattr(model, 'pretrained_cfg', None) or {}).get('label_names')
    if model.num_classes != len(test.classes) or (names and list(names) != list(test.classes)):
        raise ValueError(f'the model classifies into {model.num_classes} classes {list(names or [])} but the test '
                         f'split of {data} has {len(test.classes)} classes {test.classes}')
    return {'classify_top1': _top1(model, test, device, precision), 'n_test': len(test),
            'label_names': test.classes}


#: protocol -> its one-line help; each gets its own flags (`macrl eval <protocol> -h`)
PROTOCOLS = {
    'knn': 'weighted kNN on frozen features',
    'linear': 'linear probe on frozen features',
    'knn+linear': 'both, from one feature extraction',
    'finetune': 'full fine-tuning with the paper\'s augmentation and layer-wise lr decay',
    'classify': 'top-1 of a classifier as it is (e.g. a *_lin tag)',
}


def build_parser() -> argparse.ArgumentParser:
    """`macrl eval <protocol> ...`: one subparser per protocol, built from shared parent parsers."""
    from .precision import PRECISIONS
    run = argparse.ArgumentParser(add_help=False)  # every protocol
    run.add_argument('--model', required=True, help='timm name[.tag] | hf-hub:<repo> | local-dir:<folder> | '
                                                    'checkpoint.pth | model folder (or its model.safetensors)')
    run.add_argument('--data', default=None, help='cifar10 | cifar100 | folder | archive (default $MACRL_DATA)')
    run.add_argument('--model-args', default=None,
                     help='JSON of timm.create_model keywords for a timm name or hf-hub id, e.g. \'{"img_size": 32, '
                          '"patch_size": 4}\' (a checkpoint or model folder has its own)')
    run.add_argument('--random-init', action='store_true',
                     help='evaluate a random init of --model (reference), drawn with --seed')
    run.add_argument('--n-test', type=int, default=0, help='fixed random subset of the test split (0: all)')
    run.add_argument('--precision', default='auto', choices=PRECISIONS,
                     help='autocast dtype; auto: bf16 on CUDA and on CPUs where native bf16 is faster (AMX; '
                          'AVX512-BF16 where measured so), fp16 on CUDA without bf16, else fp32 (default: %(default)s)')
    run.add_argument('--device', default=None,
                     help='torch device, e.g. cpu, cuda, cuda:1 (default: cpu; finetune: cuda when available)')
    run.add_argument('--threads', type=int, default=0,
                     help='CPU threads for torch (default: %(default)s, i.e. torch\'s own choice)')
    run.add_argument('--seed', type=int, default=0,
                     help='seed of the subsets, the probe and the fine-tuning (default: %(default)s)')
    run.add_argument('--json-out', default=None, help='also write the JSON record to this file')
    train = argparse.ArgumentParser(add_help=False)  # protocols that read the train split
    train.add_argument('--n-train', type=int, default=0, help='fixed random subset of the train split (0: all)')
    knn = argparse.ArgumentParser(add_help=False)
    knn.add_argument('--k', type=int, nargs='+', default=[20, 200],
                     help='numbers of neighbours, one accuracy each (default: %(default)s)')
    knn.add_argument('--temperature', type=float, default=0.07,
                     help='temperature of the similarity weights exp(s / t) (default: %(default)s)')
    from .recipes import EVAL_PROTOCOLS

    def shown(protocol: str, key: str) -> str:  # '(fast: 100, paper: 200)'
        return '(' + ', '.join(f'{n}: {v[key][0]}' for n, v in EVAL_PROTOCOLS[protocol].items()) + ')'

    def settings(parser, protocol: str) -> None:
        parser.add_argument('--protocol', dest='eval_protocol', default='fast', choices=sorted(EVAL_PROTOCOLS[protocol]),
                            help='default values of the flags below: fast (ours, what the cards report), paper '
                                 '(the paper\'s CIFAR protocol, Sec. 4.1) or paper-subsets (its Tiny-ImageNet/'
                                 'Imagenette/Imagewoof epochs, Sec. 4.2); macrl_hub/recipes.py gives each source; '
                                 'flags given win (default: %(default)s)')
        parser.add_argument('--epochs', type=int, default=None, help='epochs ' + shown(protocol, 'epochs'))
        parser.add_argument('--batch-size', type=int, default=None, help=shown(protocol, 'batch_size'))
        parser.add_argument('--weight-decay', type=float, default=None, help=shown(protocol, 'weight_decay'))

    linear = argparse.ArgumentParser(add_help=False)
    settings(linear, 'linear')
    linear.add_argument('--lr', type=float, default=None, help='base lr, scaled by batch/256 ' + shown('linear', 'lr'))
    linear.add_argument('--optimizer', default=None, choices=['sgd', 'adamw'], help=shown('linear', 'optimizer'))
    linear.add_argument('--augment', default=None, action=argparse.BooleanOptionalAction,
                        help='train the probe on random resized crops + flips, one encoder pass per image per epoch, '
                             'instead of cached features ' + shown('linear', 'augment'))
    linear.add_argument('--warmup-epochs', type=float, default=None,
                        help='epochs of linear lr warmup before the cosine ' + shown('linear', 'warmup_epochs'))
    linear.add_argument('--save-head', default=None, help='write the folded head as safetensors here')
    finetune = argparse.ArgumentParser(add_help=False)
    settings(finetune, 'finetune')
    finetune.add_argument('--lr', type=float, default=None, help='peak lr, absolute ' + shown('finetune', 'lr'))
    finetune.add_argument('--layer-decay', type=float, default=None,
                          help='timm layer-wise lr decay ' + shown('finetune', 'layer_decay'))
    finetune.add_argument('--warmup-epochs', type=int, default=None, help=shown('finetune', 'warmup_epochs'))
    finetune.add_argument('--out', default=None,
                          help='folder for finetune.pth (after every epoch) and, at the end, the fine-tuned '
                               'classifier (model.safetensors + config.json, loadable as --model or timm local-dir:)')
    finetune.add_argument('--resume', action='store_true', help='continue <--out>/finetune.pth')
    parents = {'knn': [run, train, knn], 'linear': [run, train, linear], 'knn+linear': [run, train, knn, linear],
               'finetune': [run, train, finetune], 'classify': [run]}
    parser = argparse.ArgumentParser(prog='macrl eval', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='protocol', required=True, metavar='{' + ','.join(PROTOCOLS) + '}',
                                help='`macrl eval <protocol> -h` for its options')
    for name, help_ in PROTOCOLS.items():
        sub.add_parser(name, parents=parents[name], help=help_, description=help_, prog=f'macrl eval {name}')
    return parser


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, 'eval_protocol', None):  # the chosen settings fill every flag not given
        from .recipes import eval_settings
        kind = 'finetune' if args.protocol == 'finetune' else 'linear'
        for key, value in eval_settings(kind, args.eval_protocol).items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    if getattr(args, 'resume', False) and not args.out:
        parser.error('--resume needs --out (the folder holding finetune.pth)')
    if args.protocol in ('linear', 'knn+linear') and args.warmup_epochs and args.warmup_epochs > args.epochs / 2:
        parser.error(f'--warmup-epochs {args.warmup_epochs:g} leaves no decay in a {args.epochs}-epoch probe: at most '
                     f'half of it warms up (--warmup-epochs {args.epochs / 2:g} or less, or more --epochs)')
    if getattr(args, 'k', None) is not None and (min(args.k) < 1 or not args.temperature > 0):
        parser.error(f'--k needs numbers >= 1 and --temperature a number > 0; got --k {" ".join(map(str, args.k))} '
                     f'--temperature {args.temperature:g}')
    keep_freed_memory()  # CPU feature extraction: no page faults on every batch's activations
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or default_data()
    if data is None:
        parser.error('no dataset: pass --data (cifar10, a folder or an archive) or set MACRL_DATA')
    model_args = _json_arg(parser, '--model-args', args.model_args)
    device = torch.device(args.device) if args.device else None
    if device is not None and device.type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: this machine has no CUDA GPU torch can use (torch {torch.__version__}'
                     f'{", built without CUDA" if not torch.backends.cuda.is_built() else ""}); drop --device')
    for flag in ('json_out', 'save_head'):  # before the work: a path that cannot be written fails now, not after it
        _check_output_file(parser, '--' + flag.replace('_', '-'), getattr(args, flag, None))
    t0 = time.time()
    torch.manual_seed(args.seed)  # --random-init: the same init for the same --seed (and a fine-tune resumes it)
    model = load_encoder(args.model, pretrained=not args.random_init, model_args=model_args)
    weights = fingerprints(model)  # the record names the weights it measured (export checks it)
    if device:
        model.to(device)
    common = dict(n_train=getattr(args, 'n_train', 0), n_test=args.n_test, precision=args.precision, device=device,
                  seed=args.seed)  # classify reads no train split: it has no --n-train
    if args.protocol == 'knn':
        res = eval_knn(model, data, ks=tuple(args.k), t=args.temperature, **common)
    elif args.protocol in ('linear', 'knn+linear'):
        probe = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                     weight_decay=args.weight_decay, save_head=args.save_head, warmup_epochs=args.warmup_epochs)
        res = (eval_linear(model, data, **probe, augment=args.augment, **common) if args.protocol == 'linear' else
               eval_knn_linear(model, data, ks=tuple(args.k), t=args.temperature, augment=args.augment, **probe,
                               **common))
    elif args.protocol == 'classify':
        res = eval_classify(model, data, n_test=args.n_test, precision=args.precision, device=device, seed=args.seed)
    else:
        res = eval_finetune(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, layer_decay=args.layer_decay,
                            warmup_epochs=args.warmup_epochs, out=args.out,
                            resume=args.resume, **common)
    record = eval_record(args.protocol, args.model, data, res, t0,
                         'macrl eval ' + ' '.join(sys.argv[1:] if argv is None else argv), args.random_init, args.seed,
                         weights)
    if model_args:
        record['model_args'] = model_args
    print(json.dumps(record), flush=True)  # the numbers first: nothing written after them can lose them
    if args.json_out:
        write_eval_record(record, args.json_out)
    if args.protocol == 'finetune' and args.out:
        save_model_folder(model, args.model, args.out, tag='finetuned', label_names=res['label_names'],
                          model_args=model_args)
    return record


def _json_arg(parser: argparse.ArgumentParser, flag: str, value: Optional[str]) -> Dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as e:
        parser.error(f'{flag} is not valid JSON ({e}): {value}')
    if not isinstance(parsed, dict):
        parser.error(f'{flag} must be a JSON object of keywords, e.g. \'{{"img_size": 32}}\'; got {value}')
    return parsed


def _check_output_file(parser: argparse.ArgumentParser, flag: str, value: Optional[str]) -> None:
    """parser.error when `value` cannot become a file: a folder, or below a file, or in a folder not writable."""
    if not value:
        return
    import os
    path = Path(value).expanduser()
    if path.is_dir():
        example = path / ('head.safetensors' if 'head' in flag else 'eval.json')
        parser.error(f'{flag} {value} is a folder: give a file path in it, e.g. {example}')
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        parser.error(f'{flag} {value}: {parent} is a file, so nothing can be written below it')
    if not os.access(parent, os.W_OK | os.X_OK):
        parser.error(f'{flag} {value}: {parent} is not writable')


def eval_record(protocol: str, model: str, data: str, res: Dict[str, Any], t0: float, command: str,
                random_init: bool = False, seed: int = 0, weights: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The JSON record of one evaluation, as `macrl export --eval-json` and the model cards read it. `weights`:
    `fingerprints` of the encoder measured, so that export puts the numbers only on the card of those weights."""
    return {'eval': protocol, 'model': model, 'random_init': random_init, 'data': data, **res, 'seed': seed,
            'wall_time_s': round(time.time() - t0, 1), 'command': command, **(weights or {})}


def write_eval_record(record: Dict[str, Any], path) -> None:
    """One JSON line to `path`, written atomically (its folder made if needed)."""
    from .weights import atomic_open
    with atomic_open(path, 'w') as f:
        f.write(json.dumps(record) + '\n')


if __name__ == '__main__':
    main()
