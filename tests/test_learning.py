"""MACRL learns: `macrl train` with the memory bank on gives features whose kNN on held-out images beats a
random-init encoder's by a wide margin.

CIFAR-10 cannot show it at CI scale (ViT-Ti/4 gains ~2 points of kNN after a whole 13-minute epoch; a 2-layer
64-d ViT after 93 steps: 24.4 vs 24.2). So the data here is synthetic and built to need what the method teaches:
4 classes of grey textures (horizontal stripes, vertical stripes, checkerboard, dots) with a random period, phase and
two random grey levels per image. A random-init encoder's pooled features follow mean brightness more than the
texture (kNN k=200 ~61% on 4 classes); features invariant to crop, flip and brightness/contrast jitter (the
contrastive term) and that must fill in masked texture (reconstruction) separate the classes.

Measured when this test was written (AMD EPYC, fp32, 600 steps, ~40 s on 2 idle cores), kNN k=20 / k=200 on the
400 held-out images: random init 70.0 / 61.25; MACRL alpha=1 seeds 0, 1, 2: 95.75 / 96.0, 93.5 / 85.25,
95.5 / 94.25; MAE alone (no contrastive term) 81.0 / 56.75, i.e. below the floor at k=200 -- so the margin asked
below is not reached by reconstruction alone. alpha=1 rather than the fast recipe's 0.1: at alpha 0.1 the
600-step result varied with the seed (k=200 87.75, 70.5, 61.25).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import macrl_hub  # noqa: F401  (registers macrl_vit_*)
from macrl_hub.evaluate import eval_knn
from macrl_hub.train import train

from test_train import _cfg

KINDS = ('hstripes', 'vstripes', 'checker', 'dots')
MODEL_ARGS = '{"depth": 2, "embed_dim": 64, "num_heads": 2}'


def texture(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """(size, size, 3) uint8: a two-grey-level texture of `kind`, random period (5-10 px), phase and levels."""
    dark, light = int(rng.integers(0, 90)), int(rng.integers(160, 256))
    period = rng.uniform(5, 10)
    px, py = rng.uniform(0, period, 2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u, v = ((x + px) % period) / period, ((y + py) % period) / period  # position inside one period, [0, 1)
    on = {'hstripes': v < 0.5, 'vstripes': u < 0.5, 'checker': (u < 0.5) ^ (v < 0.5),
          'dots': (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.09}[kind]
    return np.repeat(np.where(on, light, dark).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope='module')
def textures(tmp_path_factory) -> Path:
    """ImageFolder tree: 250 train and 100 held-out test images per class (different random draws)."""
    root = tmp_path_factory.mktemp('textures')
    rng = np.random.default_rng(0)
    for split, n in (('train', 250), ('test', 100)):
        for kind in KINDS:
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(texture(kind, rng)).save(root / split / kind / f'{i}.png')
    return root


def test_macrl_with_the_bank_beats_random_init_knn_on_held_out_images(textures, tmp_path):
    floor = {}
    for seed in (0, 1):  # the better of two random inits
        torch.manual_seed(seed)
        enc = timm.create_model('macrl_vit_tiny_p4_cifar', **json.loads(MODEL_ARGS))
        r = eval_knn(enc, str(textures), precision='fp32', device=torch.device('cpu'))
        for k in (20, 200):
            floor[k] = max(floor.get(k, 0.0), r[f'knn_top1_k{k}'])
    out = tmp_path / 'run'
    # 1,000 images / batch 64 = 15 steps per epoch; k1 and k2 enqueued: 128 keys per step fill the 1,024 bank in
    # 8 steps, so ~590 of the 600 steps draw negatives from a full bank
    res = train(_cfg(textures, out, model_args=MODEL_ARGS, epochs=40, max_steps=600, total_steps=600,
                     batch_size=64, decoder_dim=64, proj_hidden_dim=256, proj_dim=64, bank_size=1024, alpha=1.0,
                     blr=5e-3, warmup_epochs=1, log_every=100, threads=0, final_knn=True))
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert int(ck['model']['bank.filled']) == 1024  # the bank was on and full
    knn = res['knn']
    assert knn['n_test'] == 400 and knn['n_train'] == 1000  # held out: the test split, never trained on
    assert knn['knn_top1_k200'] >= floor[200] + 15, (knn, floor)
    assert knn['knn_top1_k20'] >= floor[20] + 10, (knn, floor)
