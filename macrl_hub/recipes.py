"""Named training recipes: every setting of a recipe in one readable place, with where it comes from.

    macrl train --recipe paper --data ... --out runs/paper                 # the paper's CIFAR recipe
    macrl train --recipe paper --epochs 200 --accum-steps 8 --data ...     # flags given override the recipe
    macrl eval linear --protocol paper --model ... --data ...              # the paper's probe (EVAL_PROTOCOLS)

`fast` (the default) is `TrainConfig`'s own defaults: what we train and publish with on small hardware.
`paper` sets the paper's CIFAR pretraining settings (Sec. 3-4.1, Algorithm 1). Each value below carries its
source, and for an ambiguous one the reading we chose. Settings the paper does not give (temperature, projector
hidden width, momentum schedule, Adam betas) are the same in both recipes: see README "Design choices".
`recipes.config('paper', epochs=10)` is the same from Python. Evaluation: `EVAL_PROTOCOLS`, `paper` for CIFAR
(Sec. 4.1) and `paper-subsets` for Tiny-ImageNet, Imagenette and Imagewoof (Sec. 4.2).
"""
import dataclasses
from typing import Any, Dict, Tuple

from .config import TrainConfig

__all__ = ['RECIPES', 'recipe_overrides', 'config', 'apply_recipe', 'EVAL_PROTOCOLS', 'eval_settings']

#: recipe -> {TrainConfig field: (value, source / reading)}; `fast` is TrainConfig's defaults.
RECIPES: Dict[str, Dict[str, Tuple[Any, str]]] = {
    'fast': {},
    'paper': {
        'model': ('macrl_vit_medium_p4_cifar', 'Sec. 4.1: 12 layers, 4 heads, patch 4 on CIFAR; Sec. 3: 512-d. The '
                  'CIFAR encoder: Sec. 4.2 trains macrl_vit_medium_p8_64 on Tiny-ImageNet and '
                  'macrl_vit_medium_d4_p16_224 on Imagenette/Imagewoof (--model)'),
        'epochs': (2000, 'Sec. 4: "pre-trained the model for 2,000 epochs"'),
        'warmup_epochs': (50.0, 'Sec. 4: "with 50 warm-up epochs"'),
        'batch_size': (2048, 'Sec. 4: "batch size of 2,048 by default" (accumulated where memory is short: '
                             '--accum-steps)'),
        'blr': (1.5e-4, 'Sec. 4: "learning rate is 1.5e-4", read as MAE\'s base lr per 256 images (lr 1.2e-3 at '
                        'batch 2,048); the absolute reading is --lr 1.5e-4'),
        'weight_decay': (0.01, 'Sec. 4: "0.01 weight decay"'),
        'mask_ratio': (0.75, 'Sec. 4: "by default set to 0.75" (Sec. 3 mentions 80%)'),
        'rec_loss': ('l1', 'Sec. 3, Eq. 1: L1'),
        'rec_on': ('visible', 'Sec. 3: "we only measure the distance for the visible tokens"'),
        'bank_size': (65536, 'Sec. 3: "we set the memory bank size as 65,536"'),
        'in_batch_negatives': (False, 'Eq. 2: the denominator sums over the bank K and the positive'),
        'alpha': (0.1, 'Sec. 3: "scaled down by a factor of alpha (e.g., 10)", read as alpha = 1/10'),
        'decoder_dim': (256, 'Sec. 3: decoder embedding 256'),
        'decoder_depth': (1, 'Sec. 3 and 4.1: one linear + one attention layer'),
        'decoder_heads': (1, 'Sec. 4.1: "single attention layer (1 head) decoder"'),
        'proj_dim': (512, 'Sec. 3: "the projected dimension is 512"'),
        'crop_min': (0.08, 'Sec. 4: the augmentations "follow BYOL", whose random resized crop keeps 8-100% of the '
                           'image (so does solo-learn\'s CIFAR BYOL recipe, at 32 px)'),
        'blur_p': ((1.0, 0.1), 'Sec. 4: BYOL\'s augmentations, Gaussian blur in both views with BYOL\'s '
                               'probabilities 1.0 / 0.1'),
        'solarize_p': (0.2, 'Sec. 4: solarization in the stronger view only, with BYOL\'s probability 0.2. Which '
                            'view is stronger is ours: view 1, blurred with p 1.0 (BYOL solarizes its other view, '
                            'the one blurred with p 0.1)'),
        'views': ('both', 'Algorithm 1 and Fig. 2: both views through both branches (the introduction reads '
                          'otherwise: --views asymmetric)'),
        'pos_embed': ('sincos', 'Sec. 3: "The encoder is adapted from MAE", whose ViT has a fixed 2-D sin-cos '
                                'position embedding (timm\'s ViT, our default, learns one)'),
    },
}


def recipe_overrides(name: str) -> Dict[str, Any]:
    """{field: value} that recipe `name` sets on top of TrainConfig's defaults."""
    if name not in RECIPES:
        raise ValueError(f'unknown recipe {name!r}; choose from {sorted(RECIPES)}')
    return {k: v for k, (v, _) in RECIPES[name].items()}


def config(name: str = 'fast', **overrides: Any) -> TrainConfig:
    """TrainConfig of recipe `name`, with `overrides` (any TrainConfig field) on top."""
    return TrainConfig(**{**recipe_overrides(name), **overrides, 'recipe': name})


def apply_recipe(cfg: TrainConfig, given: Dict[str, Any]) -> TrainConfig:
    """cfg with its recipe's values, except the fields the user gave explicitly (`given`: flags on the
    command line), which win."""
    changes = {k: v for k, v in recipe_overrides(cfg.recipe).items() if k not in given}
    return dataclasses.replace(cfg, **changes)


_NOT_GIVEN = 'not given by the paper: ours'
#: evaluation protocol -> settings -> {flag: (value, source)}; `fast` is what our cards report.
EVAL_PROTOCOLS: Dict[str, Dict[str, Dict[str, Tuple[Any, str]]]] = {
    'linear': {
        'fast': {'epochs': (100, 'ours'), 'batch_size': (256, 'ours'), 'lr': (0.1, 'MAE: base lr per 256'),
                 'optimizer': ('sgd', 'ours (momentum 0.9)'), 'weight_decay': (0.0, 'MAE'),
                 'augment': (False, 'ours: cached features of the unaugmented images, one encoder pass'),
                 'warmup_epochs': (0, 'ours: cosine from the first step')},
        'paper': {'epochs': (200, 'Sec. 4.1: MACRL is linear-probed for 200 epochs on CIFAR'),
                  'batch_size': (256, _NOT_GIVEN),
                  'lr': (0.1, 'Sec. 4: "learning rate as 0.1", read as MAE\'s base lr per 256 images'),
                  'optimizer': ('adamw', 'Sec. 4: "AdamW is still preferred"'),
                  'weight_decay': (0.0, 'Sec. 4: "set to zero, following the setups in MAE"'),
                  'augment': (True, 'Sec. 4: "random resize crop and random horizontal flip"'),
                  'warmup_epochs': (10, 'Sec. 4: a cosine schedule "for all experiments with warmup"; its length '
                                        'is not given: MAE\'s linear probe\'s 10 epochs')},
    },
    'finetune': {
        'fast': {'epochs': (100, 'ours'), 'batch_size': (128, 'ours'), 'lr': (1.5e-3, 'the paper'),
                 'weight_decay': (0.05, 'MAE'), 'layer_decay': (0.75, 'MAE'), 'warmup_epochs': (5, 'MAE')},
        'paper': {'epochs': (200, 'Sec. 4.1: MACRL is fine-tuned for 200 epochs on CIFAR'),
                  'batch_size': (128, _NOT_GIVEN),
                  'lr': (1.5e-3, 'Sec. 4: "the learning rate is 1.5e-3" (absolute peak lr)'),
                  'weight_decay': (0.01, 'Sec. 4: "with 0.01 weight decay"'),
                  'layer_decay': (0.75, _NOT_GIVEN + ' (MAE\'s)'), 'warmup_epochs': (5, _NOT_GIVEN)},
    },
}


# Sec. 4.2, the ImageNet subsets (Tiny-ImageNet, Imagenette, Imagewoof): "For all three methods, we fine-tuned for
# 400 epochs, and linear probed for 1,000 epochs"; every other setting as on CIFAR
for _protocol, _epochs in (('linear', 1000), ('finetune', 400)):
    EVAL_PROTOCOLS[_protocol]['paper-subsets'] = {
        **EVAL_PROTOCOLS[_protocol]['paper'],
        'epochs': (_epochs, f'Sec. 4.2: {_epochs:,} epochs on the ImageNet subsets (Tables 3-4)')}


def eval_settings(protocol: str, name: str) -> Dict[str, Any]:
    """{flag: value} of evaluation `protocol` ('linear' | 'finetune') under settings `name` ('fast' | 'paper' |
    'paper-subsets')."""
    table = EVAL_PROTOCOLS[protocol]
    if name not in table:
        raise ValueError(f'unknown --protocol {name!r}; choose from {sorted(table)}')
    return {k: v for k, (v, _) in table[name].items()}
