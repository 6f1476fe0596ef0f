"""MACRL Vision Transformers as plain timm models.

Paper: "Masked Contrastive Representation Learning", Yao, Desai, Palaniswami (2022),
https://arxiv.org/abs/2211.06012

Every architecture here is a stock `timm.models.VisionTransformer` built with
`build_model_with_cfg`: no class token, features are the average of the patch tokens ("the latent
representations from the encoder are first averaged in the token dimension", Sec. 3) followed by
timm's `fc_norm`. Nothing but weights and a config differ from a timm ViT, so `forward_features`,
`forward_intermediates`, `features_only`, `reset_classifier`, `set_grad_checkpointing` and
`resolve_data_config` behave as on any timm ViT, and plain timm (no plugin) rebuilds them from a
`config.json` naming `vision_transformer` (see `macrl_hub.export`).

Names (`arch.tag`; `timm.list_models('macrl_*')`, `timm.list_pretrained('macrl_*')`):
  macrl_vit_tiny_p4_cifar      192-d, 12 layers, 3 heads, 32x32, patch 4
  macrl_vit_small_p4_cifar     384-d, 12 layers, 6 heads, 32x32, patch 4
  macrl_vit_medium_p4_cifar    512-d, 12 layers, 4 heads, 32x32, patch 4   (paper's CIFAR encoder)
  macrl_vit_medium_p8_64       512-d, 12 layers, 4 heads, 64x64, patch 8   (paper's Tiny-ImageNet)
  macrl_vit_medium_d4_p16_224  512-d,  4 layers, 4 heads, 224x224, patch 16 (paper's Imagenette/woof)
"""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
import timm.data
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import PatchEmbed, to_2tuple
from timm.models import VisionTransformer, build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import checkpoint_filter_fn as _vit_filter_fn

from .pretrained import DEFAULT_HF_ORG, PUBLISHED, published_name, resolve_weights
from .weights import load_safetensors

__all__ = ['MACRL_ARCHS', 'CIFAR10_MEAN', 'CIFAR10_STD', 'CIFAR100_MEAN', 'CIFAR100_STD',
           'CIFAR10_CLASSES', 'architecture_args', 'check_input', 'checkpoint_filter_fn', 'set_data_config',
           'checkpoint_data_config', 'declared_cfg', 'image_channels', 'input_size', 'cfg_differences',
           'cfg_flags', 'NORMALIZATION']

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
PAPER_URL = 'https://arxiv.org/abs/2211.06012'

# What is shared by every MACRL encoder; the per-arch dicts below add size and depth.
_COMMON_ARGS = dict(class_token=False, global_pool='avg', fc_norm=True, num_classes=0)
#: arch -> every VisionTransformer argument needed to rebuild it in plain timm.
MACRL_ARCHS: Dict[str, Dict[str, Any]] = {
    'macrl_vit_tiny_p4_cifar': dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3),
    'macrl_vit_small_p4_cifar': dict(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6),
    'macrl_vit_medium_p4_cifar': dict(img_size=32, patch_size=4, embed_dim=512, depth=12, num_heads=4),
    'macrl_vit_medium_p8_64': dict(img_size=64, patch_size=8, embed_dim=512, depth=12, num_heads=4),
    'macrl_vit_medium_d4_p16_224': dict(img_size=224, patch_size=16, embed_dim=512, depth=4, num_heads=4),
}


def architecture_args(arch: str) -> Dict[str, Any]:
    """Every `VisionTransformer` keyword needed to rebuild `arch` (no head: num_classes=0)."""
    if arch not in MACRL_ARCHS:
        raise ValueError(f'unknown MACRL architecture {arch!r}; available: {sorted(MACRL_ARCHS)}')
    return dict(_COMMON_ARGS, mlp_ratio=4.0, qkv_bias=True, **MACRL_ARCHS[arch])


def _model_args(arch: str) -> Dict[str, Any]:
    """architecture_args without num_classes: timm takes it from the tag's cfg (0, or 10 for *_lin)."""
    args = architecture_args(arch)
    del args['num_classes']
    return args


def check_input(patch_embed: nn.Module, args: Tuple[torch.Tensor]) -> None:
    """Forward pre-hook on `patch_embed`: a wrong input gets one ValueError naming the problem, not timm's bare
    asserts or a dtype error from inside a conv.

    On `patch_embed`, not the model, so every entry point that takes an image is checked: `forward`,
    `forward_features`, `forward_intermediates`, a `features_only` wrapper, the MACRL wrapper. Eager only:
    TorchScript compiles a hook's body, and this one needs Python, so under `torch.jit.script` the block is
    skipped (the scripted model keeps timm's own asserts); `torch.export`/ONNX trace it once on the example input.
    """
    if not torch.jit.is_scripting():
        if not isinstance(args[0], torch.fx.Proxy):  # torch.fx traces symbolically: no input to check
            _check_image(patch_embed, args[0])


def _check_image(patch_embed: nn.Module, x: Any) -> None:
    """check_input's eager checks of one image batch `x`, in the order a user's mistake is most likely named."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f'expected a (B, C, H, W) image tensor, got {type(x).__name__} '
                         f'of shape {tuple(getattr(x, "shape", ()))}')
    shape = tuple(x.shape)
    channels = patch_embed.proj.in_channels
    if shape[1] != channels:
        layout = ('; channels last? x.permute(0, 3, 1, 2) makes it (B, C, H, W)' if shape[3] == channels else
                  "; a grayscale model: read images with PIL's .convert('L'), or x.mean(1, keepdim=True)"
                  if channels == 1 and shape[1] == 3 else '')
        raise ValueError(f'expected {channels} input channels (B, {channels}, H, W), got {shape}{layout}')
    if patch_embed.img_size is not None and patch_embed.strict_img_size:
        expected = (channels, *patch_embed.img_size)
        if shape[1:] != expected:
            raise ValueError(f'the model expects input (B, {expected[0]}, {expected[1]}, {expected[2]}), '
                             f'got {shape}; resize with timm.data.create_transform(**{_DATA_CONFIG_FN}(model))')
    elif not patch_embed.dynamic_img_pad and (shape[2] % patch_embed.patch_size[0] or
                                              shape[3] % patch_embed.patch_size[1]):
        raise ValueError(f'input height and width must be multiples of the patch size '
                         f'{tuple(patch_embed.patch_size)}, got {shape}')
    if not x.is_floating_point():
        raise ValueError(f'expected a float image tensor (normalised with the model\'s mean/std), got '
                         f'{x.dtype}; convert with timm.data.resolve_data_config + create_transform, or '
                         f'x.float() / 255 then normalise')
    weight = patch_embed.proj.weight
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(f'the input is {x.dtype} but the model\'s weights are {weight.dtype}: convert one '
                         f'(x.to({weight.dtype}) or model.to({x.dtype})), or run under torch.autocast')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: VisionTransformer) -> Dict[str, torch.Tensor]:
    """Accept our own checkpoints: strip wrapper prefixes first, then timm's ViT filter.

    timm reads a `{'encoder': sd}` dict as I-JEPA and keeps nothing, so unwrap our formats here.
    """
    for key in ('model', 'state_dict', 'encoder'):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    out = {}
    for k, v in state_dict.items():
        for prefix in ('module.', '_orig_mod.'):
            k = k[len(prefix):] if k.startswith(prefix) else k
        if k.startswith('encoder.'):
            k = k[len('encoder.'):]
        elif k.split('.')[0] in ('momentum_encoder', 'decoder', 'projector', 'momentum_projector', 'bank'):
            continue
        out[k] = v
    return _vit_filter_fn(out, model)


#: whose weights these are: every cfg we register and every config.json we export says so
PROVENANCE: Dict[str, str] = {'license': 'apache-2.0', 'paper_ids': 'arXiv:2211.06012',
                              'paper_name': 'Masked Contrastive Representation Learning',
                              'origin_url': 'https://github.com/macrl-hub/macrl-hub'}


#: how every macrl_hub pipeline feeds an encoder (`data.load_dataset`: shorter side to the input size, bicubic,
#: centre crop, no margin) in timm's cfg terms, so that timm's resolve_data_config + create_transform reproduce it
#: pixel for pixel; and a safetensors state dict, never the custom (.npz) loader a stock timm cfg may name.
#: An exported config.json carries these whatever the architecture's own cfg said (a stock ViT's: crop_pct 0.9).
PIPELINE_CFG: Dict[str, Any] = {'crop_pct': 1.0, 'crop_mode': 'center', 'interpolation': 'bicubic',
                                'custom_load': False}


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 0, 'input_size': (3, 32, 32), 'pool_size': None, **PIPELINE_CFG,
        'fixed_input_size': True, 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head', **PROVENANCE, **kwargs,
    }


_cifar10 = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD)
_cifar100 = dict(mean=CIFAR100_MEAN, std=CIFAR100_STD)
_in1k = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
_TAG_CFGS: Dict[str, Dict[str, Any]] = {
    'cifar10': _cifar10,
    'cifar10_lin': dict(_cifar10, num_classes=10, label_names=CIFAR10_CLASSES),
    'cifar100': _cifar100,
    'tinyimagenet': dict(_in1k, input_size=(3, 64, 64)),  # crop_pct 1.0 as every tag (_cfg: PIPELINE_CFG)
    'imagenette': dict(_in1k, input_size=(3, 224, 224)),
    'imagewoof': dict(_in1k, input_size=(3, 224, 224)),
}


def _timm_cfgs(table: Dict[str, Optional[str]], archs: Iterable[str]) -> Dict[str, Dict[str, Any]]:
    """timm cfgs for `table` (arch.tag -> sha256 or None): one per published tag, first published = default.

    A planned tag (sha256 None) is not registered, so `timm.list_pretrained` lists exactly what loads. An arch
    with no published tag gets one weightless cfg under its bare name (timm builds from an arch's default cfg),
    with the preprocessing of its first planned tag.
    """
    cfgs = {name: _cfg(hf_hub_id=f'{DEFAULT_HF_ORG}/{name}', **_TAG_CFGS[name.split('.')[1]])
            for name, sha in table.items() if sha}
    for arch in archs:
        if not any(name.split('.')[0] == arch for name in cfgs):
            planned = [name.split('.')[1] for name in table if name.split('.')[0] == arch]
            cfgs[arch] = _cfg(**_TAG_CFGS[planned[0]]) if planned else _cfg()
    return cfgs


default_cfgs = generate_default_cfgs(_timm_cfgs(PUBLISHED, MACRL_ARCHS))


#: the pretrained_cfg keys `macrl train --mean/--std` set and a checkpoint records
NORMALIZATION = ('mean', 'std')
#: what sizes a transform for a model as it is now (timm >= 1.0.2x: after set_input_size too), else its cfg's
_DATA_CONFIG_FN = ('timm.data.resolve_input_data_config' if hasattr(timm.data, 'resolve_input_data_config')
                   else 'timm.data.resolve_model_data_config')


def declared_cfg(name: str) -> Optional[Dict[str, Any]]:
    """The timm cfg macrl_hub registers (or will, once it has weights) for `arch.tag`; None for a name it does not
    declare. What `timm.create_model(name, pretrained=True)` preprocesses with, whatever config.json says."""
    if name not in PUBLISHED:
        return None
    return _cfg(**_TAG_CFGS[name.split('.', 1)[1]])


def set_data_config(model: nn.Module, mean: Optional[Sequence[float]] = None,
                    std: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Make `model.pretrained_cfg` say what the model takes: `input_size` from its patch embedding (an `img_size=`
    override changes the model, not timm's cfg) and, when given, the `mean`/`std` it was trained with (`macrl train
    --mean/--std`). Everything that preprocesses from the cfg (timm's resolve_data_config, our eval, a config.json
    written from it) then agrees with training. Returns the new cfg (a copy; other models keep theirs)."""
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    channels, size = image_channels(model), input_size(model)
    if size is not None:
        cfg['input_size'] = size
    for key, v in (('mean', mean), ('std', std)):
        if v is not None:
            if channels is not None and len(v) != channels:
                raise ValueError(f'--{key} needs one value per input channel ({channels}), got {list(v)}')
            if key == 'std' and min(v) <= 0:
                raise ValueError(f'--std must be positive, got {list(v)}')
            if (key == 'mean' and not all(0 <= x <= 1 for x in v)) or (key == 'std' and max(v) > 1):
                raise ValueError(f'--{key} is on the 0-1 scale images are read on (0-255 statistics divided by 255, '
                                 f'e.g. {[round(x / 255, 4) for x in v] if max(v) > 1 else "0.5"}); got {list(v)}')
            cfg[key] = tuple(float(x) for x in v)
    model.pretrained_cfg = cfg
    return cfg


def image_channels(model: nn.Module) -> Optional[int]:
    """Channels of the images `model` takes: its patch projection's input, except for a hybrid ViT (a CNN backbone
    before the projection; timm's HybridEmbed), whose cfg's input_size says it; None without a patch embedding."""
    pe = getattr(model, 'patch_embed', None)
    if pe is None:
        return None
    if getattr(pe, 'backbone', None) is not None:
        return int((getattr(model, 'pretrained_cfg', None) or {}).get('input_size', (3,))[0])
    return pe.proj.in_channels


def input_size(model: nn.Module) -> Optional[Tuple[int, ...]]:
    """(C, H, W) `model` takes: the size its patch embedding's position embedding was built for (an `img_size=`
    override changes it, timm's cfg does not follow); None without a patch embedding of fixed size."""
    pe = getattr(model, 'patch_embed', None)
    if pe is None or not getattr(pe, 'img_size', None):
        return None
    return (image_channels(model) or 3, *pe.img_size)


def cfg_differences(have: Dict[str, Any], want: Dict[str, Any], keys: Sequence[str]) -> List[str]:
    """The `keys` whose number sequences (input_size, mean, std) differ between two cfgs: in length, or in any entry
    by more than 1e-6 (JSON and float32 round trips)."""
    return [k for k in keys if len(have[k]) != len(want[k]) or any(abs(a - b) > 1e-6 for a, b in zip(have[k], want[k]))]


def cfg_flags(cfg: Dict[str, Any], keys: Sequence[str]) -> str:
    """`macrl train` flags that give `cfg`'s `keys`: {'mean': (0.5, 0.4)} -> '--mean 0.5 0.4'."""
    return ' '.join(f'--{k} ' + ' '.join(f'{x:g}' for x in cfg[k]) for k in keys)


def checkpoint_data_config(ck: Dict[str, Any]) -> Dict[str, Any]:
    """{'mean', 'std'} a `macrl train` checkpoint was trained with ({} for one older than the record: those used
    their architecture's cfg, which a freshly built model has)."""
    norm = ck.get('normalization') or {}
    return {k: tuple(norm[k]) for k in NORMALIZATION if k in norm}


def _pretrained_overlay(variant: str, kwargs: Dict[str, Any]) -> None:
    """Local-first, sha256-checked weight resolution, handed to timm as an in-memory state dict.

    A user's own `pretrained_cfg_overlay` naming a source (file, url, hf_hub_id, state_dict) wins,
    as in timm. A planned tag (or an arch with none published) raises PretrainedWeightsError naming what exists.
    """
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    if any(overlay.get(k) for k in ('file', 'url', 'hf_hub_id', 'state_dict')):
        return
    cfg = kwargs.get('pretrained_cfg')
    if cfg is not None and not isinstance(cfg, str):
        return  # an explicit cfg dict: timm resolves it as given
    tags = [n.split('.', 1)[1] for n in PUBLISHED if n.split('.')[0] == variant]
    if cfg is not None and cfg not in tags:
        published = [t for t in tags if PUBLISHED[f'{variant}.{t}']]
        raise ValueError(f'unknown pretrained tag {cfg!r} for {variant}; available: {published}, '
                         f'planned (no weights yet): {[t for t in tags if t not in published]}')
    name = published_name(f'{variant}.{cfg}' if cfg else variant)
    overlay['state_dict'] = load_safetensors(resolve_weights(name, cache_dir=kwargs.get('cache_dir')))
    kwargs['pretrained_cfg_overlay'] = overlay


def _create_macrl_vit(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    if pretrained:
        _pretrained_overlay(variant, kwargs)
    model = build_model_with_cfg(
        VisionTransformer, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=3, feature_cls='getter'),
        **kwargs,
    )
    pe = next((m for m in model.modules() if isinstance(m, PatchEmbed)), None)  # any features_only wrapper
    if pe is not None:  # None: feature_cls='fx' traced it into a graph (no input check there)
        pe.register_forward_pre_hook(check_input)
    if pe is not None and pe.img_size:
        size = (pe.proj.in_channels, *pe.img_size)
    else:  # feature_cls='fx': the graph has no PatchEmbed left; the size it was built for
        size = (kwargs.get('in_chans', 3), *to_2tuple(kwargs['img_size'])) if kwargs.get('img_size') else None
    if 'input_size' in (kwargs.get('pretrained_cfg_overlay') or {}):
        size = None  # the user's own overlay says it
    for m in model.modules():  # the weights were handed over in the cfg: loaded now, so not kept (a second copy of
        for cfg in (getattr(m, 'pretrained_cfg', None), getattr(m, 'default_cfg', None)):  # every tensor otherwise;
            if isinstance(cfg, dict):  # wrappers too: FeatureGetterNet's .model, FeatureHookNet's .body)
                cfg.pop('state_dict', None)
                if size is not None:  # an img_size= override (e.g. fine-tuning at 64 px): sized for it
                    cfg['input_size'] = size
                    if size[0] == 1:  # in_chans=1: one mean and std, the channels' average (as timm's
                        for k in NORMALIZATION:  # resolve_input_data_config takes them)
                            if len(cfg.get(k) or ()) == 3:
                                cfg[k] = (round(sum(cfg[k]) / 3, 4),)
    return model


@register_model
def macrl_vit_tiny_p4_cifar(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny/4 for 32x32 images (192-d, 12 layers, 3 heads)."""
    model_args = _model_args('macrl_vit_tiny_p4_cifar')
    return _create_macrl_vit('macrl_vit_tiny_p4_cifar', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def macrl_vit_small_p4_cifar(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Small/4 for 32x32 images (384-d, 12 layers, 6 heads)."""
    model_args = _model_args('macrl_vit_small_p4_cifar')
    return _create_macrl_vit('macrl_vit_small_p4_cifar', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def macrl_vit_medium_p4_cifar(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The paper's CIFAR encoder: 512-d, 12 layers, 4 heads, patch 4, 32x32."""
    model_args = _model_args('macrl_vit_medium_p4_cifar')
    return _create_macrl_vit('macrl_vit_medium_p4_cifar', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def macrl_vit_medium_p8_64(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The paper's Tiny-ImageNet encoder: 512-d, 12 layers, 4 heads, patch 8, 64x64."""
    model_args = _model_args('macrl_vit_medium_p8_64')
    return _create_macrl_vit('macrl_vit_medium_p8_64', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def macrl_vit_medium_d4_p16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The paper's Imagenette/Imagewoof encoder: 512-d, 4 layers, 4 heads, patch 16, 224x224."""
    model_args = _model_args('macrl_vit_medium_d4_p16_224')
    return _create_macrl_vit('macrl_vit_medium_d4_p16_224', pretrained=pretrained, **dict(model_args, **kwargs))
