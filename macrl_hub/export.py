"""Export a training checkpoint as a Hub-ready model folder: `macrl export` (also `python -m macrl_hub.export`).

    macrl export runs/tiny/checkpoint.pth --name macrl_vit_tiny_p4_cifar.cifar10 \\
        --eval-json results/knn.json results/linear.json [--full] [--out-dir model_cards]
    macrl export runs/tiny/checkpoint.pth --name macrl_vit_tiny_p4_cifar.cifar10_lin --head head.safetensors
    macrl export runs/mine/checkpoint.pth --name vit_tiny_patch16_224.mydata --repo-id my-org/vit_tiny_mydata

Writes model_cards/<arch>.<tag>/ holding exactly what its Hub repo holds:
  model.safetensors    encoder (timm key names; fp32 unless --fp16; with the linear head for *_lin tags)
  config.json          stock timm architecture + every model argument, so plain timm (no plugin) rebuilds it:
                       timm.create_model('local-dir:model_cards/<arch>.<tag>', pretrained=True)
  README.md            model card: Hub metadata + model-index from the eval JSONs, usage, recipe, results
  pretrain.safetensors (--full) the whole MACRL state: decoder, projectors, momentum encoder, bank
  training_curve.png   losses and online kNN from the run's log.jsonl (`read_log`), when found beside the checkpoint
"""
import argparse
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .models import (MACRL_ARCHS, NORMALIZATION, PIPELINE_CFG, PROVENANCE, architecture_args, cfg_differences,
                     cfg_flags, checkpoint_data_config, checkpoint_filter_fn, declared_cfg, set_data_config)
from .weights import load_checkpoint, load_safetensors, save_safetensors, staging_dir

__all__ = ['export', 'plain_timm_config', 'write_model_files', 'save_for_timm', 'main']

# a stock timm ViT for each MACRL width, one that registers only what model_args overrides (patch, width, depth,
# heads), verified on export by `_check_rebuilds`. Not timm's ViT-Medium for 512-d: its LayerScale cannot be turned
# off from config.json (timm.create_model drops None-valued kwargs), so the plain ViT-Base stands in for it
_STOCK = {192: 'vit_tiny_patch16_224', 384: 'vit_small_patch16_224'}


def _geometry(model) -> Dict[str, Any]:
    """The VisionTransformer keywords a card describes, read off a built model (for a stock timm arch, whose
    checkpoint's model_args hold only what the user changed); {} for another family (e.g. a ResNet fine-tuned by
    `macrl eval finetune`), whose name and model_args rebuild it as they are."""
    if not (hasattr(model, 'patch_embed') and hasattr(model, 'blocks')):
        return {}
    block, pe = model.blocks[0], model.patch_embed
    args = dict(img_size=pe.img_size[0] if pe.img_size[0] == pe.img_size[1] else list(pe.img_size),
                patch_size=pe.patch_size[0] if pe.patch_size[0] == pe.patch_size[1] else list(pe.patch_size),
                embed_dim=model.embed_dim, depth=len(model.blocks), num_heads=block.attn.num_heads,
                global_pool=model.global_pool,  # and what a stock name's defaults may not match (a MACRL ViT
                class_token=getattr(model, 'cls_token', None) is not None,  # loaded by a stock name through hf-hub:
                fc_norm=not isinstance(getattr(model, 'fc_norm', nn.Identity()), nn.Identity),  # or local-dir:
                qkv_bias=block.attn.qkv.bias is not None)  # has no class token and an fc_norm)
    if hasattr(block, 'mlp') and hasattr(block.mlp, 'fc1'):
        args['mlp_ratio'] = block.mlp.fc1.out_features / model.embed_dim
    in_chans = next((m.in_channels for m in pe.modules() if isinstance(m, nn.Conv2d)), 3)  # a hybrid's: its stem's
    if in_chans != 3:  # e.g. a grayscale fine-tune (in_chans=1)
        args['in_chans'] = in_chans
    if getattr(model, 'num_reg_tokens', 0):
        args['reg_tokens'] = model.num_reg_tokens
    if getattr(model, 'no_embed_class', False):
        args['no_embed_class'] = True
    return args


def _check_rebuilds(config: Dict[str, Any], model) -> None:
    """What plain timm builds from `config` (architecture + model_args, no macrl_hub) holds exactly `model`'s
    tensors; else ValueError naming the difference (before anything is written)."""
    import timm
    with torch.device('meta'):
        stock = timm.create_model(config['architecture'], pretrained=False, num_classes=config['num_classes'],
                                  **config['model_args'])
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in stock.state_dict().items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:6]
        raise ValueError(f'config.json would not rebuild this model in plain timm: {config["architecture"]} with '
                         f'{config["model_args"]} differs in {diff}')


def plain_timm_config(model, arch: str, model_args: Dict[str, Any], tag: str,
                      label_names: Optional[List[str]] = None, license: Optional[str] = None) -> Dict[str, Any]:
    """config.json in timm's Hub format, naming a stock architecture (no macrl_hub needed to load): for a MACRL
    arch a stock ViT of its width with every argument given; a stock timm arch (`macrl train --model vit_*`) is
    named as itself. Checked by building it: ValueError if plain timm would build something else. `label_names`:
    the classifier's outputs (default: the model cfg's, kept only while they count its classes). `license`: the
    weights' Hub license id (default PROVENANCE's apache-2.0), e.g. the training data's terms."""
    license = check_license(license or PROVENANCE['license'])
    if arch in MACRL_ARCHS:
        base = architecture_args(arch)
        stock, args = _STOCK.get(base['embed_dim'], 'vit_base_patch16_224'), {**base, **model_args}
    else:
        stock, args = arch, dict(_geometry(model), **model_args)
    num_classes = model.num_classes
    args.pop('num_classes', None)
    cfg = {k: v for k, v in set_data_config(model).items()  # input_size from the model itself
           if k not in ('state_dict', 'file', 'url', 'hf_hub_id', 'hf_hub_filename', 'source', 'architecture', 'tag')
           and v is not None}
    # the preprocessing our numbers were measured with, and this project's provenance (not the stock arch's)
    cfg.update(PIPELINE_CFG, **PROVENANCE)
    cfg['license'] = license
    cfg['num_classes'] = num_classes
    cfg['tag'] = tag
    if label_names is not None:
        cfg['label_names'] = list(label_names)
    elif len(cfg.get('label_names') or ()) != num_classes:  # e.g. a *_lin tag's names after its head was replaced
        cfg.pop('label_names', None)
    config = {
        'architecture': stock,
        'num_classes': num_classes,
        'num_features': model.num_features,
        # as timm's own save_config: only a pooling named by a string (a CNN's global_pool is a module)
        **({'global_pool': model.global_pool} if isinstance(getattr(model, 'global_pool', None), str) else {}),
        'model_args': args,
        'pretrained_cfg': json.loads(json.dumps(cfg, default=list)),
        'macrl_architecture': arch,
    }
    _check_rebuilds(config, model)
    return config


def _check_declared(model, name: str) -> None:
    """A name macrl_hub declares (`arch.tag` in PUBLISHED) is loaded by the plugin with its registered cfg, not with
    config.json's: refuse to export a model trained with other preprocessing under it (ValueError naming the
    difference and the flags that match it)."""
    declared = declared_cfg(name)
    if declared is None:
        return
    have = model.pretrained_cfg
    differ = cfg_differences(have, declared, ('input_size', *NORMALIZATION))
    if differ:
        fix = cfg_flags(declared, [k for k in NORMALIZATION if k in differ])
        if 'input_size' in differ:
            fix += f' --model-args \'{{"img_size": {declared["input_size"][-1]}}}\''
        diff = '; '.join(f'{k} {tuple(have[k])} (declared {tuple(declared[k])})' for k in differ)
        raise ValueError(f'{name} is declared by macrl_hub with another preprocessing than this checkpoint was '
                         f'trained with: {diff}. `timm.create_model({name!r}, pretrained=True)` would feed it '
                         f'wrongly normalised or sized images. Train with `macrl train {fix.strip()}` for this name, '
                         f'or export under a tag of your own, e.g. {name.split(".")[0]}.mydata')


def write_model_files(model, folder: Path, arch: str, model_args: Dict[str, Any], tag: str,
                      dtype: torch.dtype = torch.float32, label_names: Optional[List[str]] = None,
                      license: Optional[str] = None) -> Dict[str, Any]:
    """`model` as model.safetensors (timm key names, `dtype`) + config.json (plain timm) in `folder`; the config."""
    config = plain_timm_config(model, arch, model_args, tag, label_names, license)  # checked to rebuild first
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.to(dtype) for k, v in model.state_dict().items()}, folder / 'model.safetensors',
                     metadata={'format': 'pt'})
    (folder / 'config.json').write_text(json.dumps(config, indent=2) + '\n')
    return config


def save_for_timm(model, folder: str, tag: Optional[str] = None, label_names: Optional[List[str]] = None,
                  dtype: torch.dtype = torch.float32, license: Optional[str] = None) -> Dict[str, Any]:
    """A model from `timm.create_model('macrl_vit_*', ...)`, e.g. fine-tuned in your own code, as a folder that plain
    timm loads with no macrl_hub installed: `timm.create_model('local-dir:<folder>', pretrained=True)`, or
    `hf-hub:` after `huggingface_hub.upload_folder`. model.safetensors (`dtype`) + config.json naming a stock timm
    ViT with every argument (timm's own `save_for_hf` names the macrl_vit_* architecture, which needs the plugin).
    Overrides made at creation (`img_size=`, `num_classes=`, `global_pool=`) are carried; `tag` defaults to the
    model's own (e.g. cifar10); `label_names` names the classifier's outputs; `license` the Hub license id
    (default apache-2.0). Returns config.json's content."""
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    if not hasattr(model, 'patch_embed') or arch is None:
        raise ValueError(f'save_for_timm takes a VisionTransformer built by timm.create_model; got '
                         f'{type(model).__name__} (a features_only wrapper: save the model it wraps)')
    model_args = {}
    if arch in MACRL_ARCHS:  # the arguments that differ from the registered architecture's
        base = architecture_args(arch)
        model_args = {k: v for k, v in _geometry(model).items() if base.get(k) != v}
    if getattr(model, 'dynamic_img_size', False):  # a forward-time choice: no tensor shows it
        model_args['dynamic_img_size'] = True
    num_classes = getattr(model, 'num_classes', 0)
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f'{len(label_names)} label_names for a model with {num_classes} classes')
    return write_model_files(model, Path(folder), arch, model_args, tag or model.pretrained_cfg.get('tag') or
                             'finetuned', dtype, label_names, license)


def _read_head(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """A linear head from `macrl eval linear --save-head`: exactly head.weight and head.bias (anything else, e.g. a
    whole model's safetensors, is refused: its tensors would replace the checkpoint's encoder) and its metadata."""
    from safetensors import safe_open
    try:
        sd = load_safetensors(path)
        with safe_open(path, 'pt') as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise ValueError(f'--head {path} is not a readable safetensors file ({type(e).__name__}: {e})') from None
    if set(sd) != {'head.weight', 'head.bias'}:
        others = sorted(set(sd) - {'head.weight', 'head.bias'})
        raise ValueError(f'--head {path} is not a linear head (head.weight + head.bias, as `macrl eval linear '
                         f'--save-head` writes): it holds {len(sd)} tensors' +
                         (f', e.g. {others[:3]}' if others else f': {sorted(sd)}'))
    return sd, meta


class _Fingerprints:
    """This model's encoder fingerprints (`evaluate.fingerprints`: fp32, and rounded to fp16), hashed once, on first
    need, and whether a record (an eval JSON, a head's metadata) names other weights."""

    def __init__(self, model):
        self.model, self._ours = model, None

    def other_weights(self, record: Dict[str, Any]) -> bool:
        """True if `record` carries fingerprints and none is this model's (records without one: False)."""
        theirs = {record.get(k) for k in ('weights_sha256', 'weights_sha256_fp16')} - {None}
        if not theirs:
            return False
        if self._ours is None:
            from .evaluate import fingerprints
            self._ours = set(fingerprints(self.model).values())
        return not theirs & self._ours


def _check_head_fits(path: str, head_sd: Dict[str, torch.Tensor], meta: Dict[str, str], model,
                     ours: _Fingerprints) -> None:
    """ValueError for a head of another width, or one probed on other weights than this checkpoint's encoder (its
    `weights_sha256` metadata, written by `--save-head` since 2026-11-29; heads without it are taken as they are)."""
    width = head_sd['head.weight'].shape[1]
    if width != model.num_features or head_sd['head.bias'].shape != head_sd['head.weight'].shape[:1]:
        raise ValueError(f'--head {path} takes {width}-d features; {model.pretrained_cfg.get("architecture", "this")} '
                         f'encoder gives {model.num_features}-d: it is a head of another model')
    if ours.other_weights(meta):
        raise ValueError(f'--head {path} was trained on other weights than this checkpoint\'s encoder (an '
                         f'earlier checkpoint of the run, or another run): probe this checkpoint with `macrl '
                         f'eval linear --model <checkpoint> --save-head ...` and pass that head')


def _check_evals_measured_this(evals: List[Dict[str, Any]], paths: List[str], ours: _Fingerprints) -> None:
    """ValueError for an eval record whose numbers are not this model's: one of an untrained encoder
    (`--random-init`), or one whose weights fingerprints differ from this checkpoint's encoder's (each side in fp32
    and rounded to fp16: an fp16 checkpoint or export of the same weights matches). Records without a fingerprint
    (before 2026-11-29) are taken as they are."""
    for path, record in zip(paths, evals):
        if record.get('random_init'):
            raise ValueError(f'--eval-json {path} measured an untrained encoder (macrl eval --random-init): a '
                             f'baseline, not this model\'s numbers; it does not go on its card')
        if ours.other_weights(record):
            raise ValueError(f'--eval-json {path} measured other weights ({record.get("model")}) than this '
                             f'checkpoint\'s encoder: its numbers would go on the wrong card. Evaluate this '
                             f'checkpoint (or its export) and pass that record')


def _load_checkpoint(path: Path):
    ck = load_checkpoint(path)
    if not isinstance(ck, dict) or 'model' not in ck or 'arch' not in ck:
        raise ValueError(f'{path} is not a `macrl train` checkpoint (no "model"/"arch" keys)')
    return ck


def check_license(license: str) -> str:
    """`license` if it has the form of a Hub license id (lowercase letters, digits, '.', '-': apache-2.0, mit,
    cc-by-nc-4.0, other), else ValueError. The Hub's own list is the authority; this catches a typo'd form only."""
    if not re.fullmatch(r'[a-z0-9][a-z0-9.-]*', license):
        raise ValueError(f'--license {license!r} is not a Hugging Face Hub license id: lowercase, e.g. apache-2.0, '
                         'mit, cc-by-4.0, cc-by-nc-4.0 (https://huggingface.co/docs/hub/repositories-licenses)')
    return license


def check_repo_id(repo_id: str, flag: str = '--repo-id') -> str:
    """`repo_id` if it is a Hub model repo id, <user or org>/<name> (huggingface_hub's own rules), else ValueError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        if repo_id.count('/') != 1:
            raise HFValidationError('it needs exactly one "/"')
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f'{flag} must be <user or org>/<name> on the Hub (letters, digits, "-", "_", "."), got '
                         f'{repo_id!r}: {str(e).splitlines()[0]}') from None
    return repo_id


#: what `export` writes into <out_dir>/<arch>.<tag>/ (other files there are never touched)
EXPORT_FILES = ('model.safetensors', 'config.json', 'README.md', 'training_curve.png', 'pretrain.safetensors')


#: the Hub org a card's loading code names for a model macrl_hub does not declare, until `macrl push --repo-id`
#: (or `macrl export --repo-id`) names the real one
PLACEHOLDER_ORG = '<your-hf-user-or-org>'


def export(checkpoint: str, name: str, out_dir: str = 'model_cards', eval_json: Optional[List[str]] = None,
           head: Optional[str] = None, full: bool = False, fp16: bool = False, overwrite: bool = False,
           repo_id: Optional[str] = None, license: Optional[str] = None) -> Path:
    import timm
    from . import models  # noqa: F401
    if '.' not in name:
        raise ValueError(f'--name must be <arch>.<tag>, e.g. macrl_vit_tiny_p4_cifar.cifar10; got {name!r}')
    if not re.fullmatch(r'[A-Za-z0-9_.-]{1,96}', name) or '..' in name or '--' in name:
        raise ValueError(f'--name {name!r} is also the folder and the Hub repo name: letters, digits, "_", "-" and '
                         '"." only (no spaces or "/", no ".." or "--"), at most 96 characters')
    if repo_id is not None:  # the card's loading code names it: it must be one the Hub takes
        check_repo_id(repo_id, '--repo-id')
    arch, tag = name.split('.', 1)
    folder = Path(out_dir) / name
    existing = [f for f in EXPORT_FILES if (folder / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f'{folder} already holds {", ".join(existing)}; pass --overwrite to replace them '
                              f'(other files in the folder are kept), or choose another --out-dir')
    ck = _load_checkpoint(Path(checkpoint))
    if ck['arch'] != arch:
        raise ValueError(f'checkpoint {checkpoint} is a {ck["arch"]}, not {arch}')
    model_args = dict(ck.get('model_args') or {})
    head_sd, label_names, head_meta = None, None, {}
    if head:
        head_sd, head_meta = _read_head(head)
        label_names = json.loads(head_meta['label_names']) if 'label_names' in head_meta else None
    num_classes = head_sd['head.weight'].shape[0] if head_sd else 0
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **model_args)
    sd = checkpoint_filter_fn(ck['model'], model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (head_sd and k.startswith('head.'))]  # the head comes from --head
    if missing or unexpected:
        raise ValueError(f'checkpoint {checkpoint} does not fit {arch}: missing keys {missing[:8]}, '
                         f'unexpected keys {unexpected[:8]}')
    ours = _Fingerprints(model)  # the encoder's, hashed at most once for the head and the eval records
    if head_sd:
        _check_head_fits(head, head_sd, head_meta, model, ours)
        model.head.load_state_dict({k[len('head.'):]: v for k, v in head_sd.items()})
    set_data_config(model, **checkpoint_data_config(ck))  # the run's --mean/--std and input size go to config.json
    _check_declared(model, name)
    evals = [json.loads(Path(p).read_text().strip().splitlines()[-1]) for p in (eval_json or [])]
    _check_evals_measured_this(evals, eval_json or [], ours)
    log = Path(checkpoint).parent / 'log.jsonl'
    from .train import read_log
    records = read_log(log) if log.is_file() else []
    # every file is written into a staging folder beside the target and moved in only when all are written: an
    # export that fails half-way (a bad eval JSON, a model plain timm would not rebuild) leaves no partial folder
    with staging_dir(folder) as staging:
        config = write_model_files(model, staging, arch, model_args, tag, torch.float16 if fp16 else torch.float32,
                                   label_names, license)
        if full:
            save_safetensors({k: v.half() if v.is_floating_point() else v for k, v in ck['model'].items()},
                             staging / 'pretrain.safetensors', metadata={'macrl': json.dumps(ck.get('macrl', {}))})
        if records:
            from .plot import plot_training_curve
            plot_training_curve(records, staging / 'training_curve.png', title=name)
        from .card import write_model_card
        if repo_id is None and declared_cfg(name) is None:
            repo_id = f'{PLACEHOLDER_ORG}/{name}'
        write_model_card(staging, name, config, ck, evals, records, repo_id=repo_id)
        folder.mkdir(exist_ok=True)
        for f in EXPORT_FILES:  # an earlier export's file this one does not write (--full, a curve) is not its own
            if (staging / f).is_file():
                os.replace(staging / f, folder / f)
            elif (folder / f).is_file():
                (folder / f).unlink()
    return folder


def main(argv: Optional[list] = None) -> Path:
    p = argparse.ArgumentParser(prog='macrl export', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint')
    p.add_argument('--name', required=True, help='<arch>.<tag>, e.g. macrl_vit_tiny_p4_cifar.cifar10')
    p.add_argument('--out-dir', default='model_cards')
    p.add_argument('--eval-json', nargs='*', default=[], help='JSON lines printed by `macrl eval --json-out`')
    p.add_argument('--head', default=None, help='linear head from `macrl eval linear --save-head`')
    p.add_argument('--full', action='store_true', help='also write pretrain.safetensors (whole MACRL state, fp16)')
    p.add_argument('--fp16', action='store_true', help='store the encoder in fp16 (default fp32)')
    p.add_argument('--overwrite', action='store_true', help=f'replace {", ".join(EXPORT_FILES)} in an existing folder')
    p.add_argument('--repo-id', default=None,
                   help='<org>/<name> of its Hub repo, for the card\'s loading code (default: macrl_hub\'s own repo '
                        f'for a name it declares, else {PLACEHOLDER_ORG}/<name>, which `macrl push --repo-id` fills in)')
    p.add_argument('--license', default=None, metavar='ID',
                   help='the weights\' license as a Hub license id, e.g. cc-by-nc-4.0 for weights trained on data with '
                        'non-commercial terms (default: apache-2.0, this project\'s)')
    a = p.parse_args(argv)
    folder = export(a.checkpoint, a.name, a.out_dir, a.eval_json, a.head, a.full, a.fp16, a.overwrite, a.repo_id,
                    a.license)
    print(f'macrl export: wrote {folder}: {", ".join(sorted(f.name for f in folder.iterdir()))}')
    return folder


if __name__ == '__main__':
    main()
