"""--recipe: every paper setting one flag away, flags override it, README's table lists each difference."""
import re
from pathlib import Path

import pytest
import torch

from macrl_hub import recipes
from macrl_hub.config import TrainConfig
from macrl_hub.train import main

from test_train import TINY, small_folder  # noqa: F401  (small_folder is a fixture)

README = Path(__file__).resolve().parent.parent / 'README.md'


def test_paper_recipe_values_written_out():
    """The paper's numbers, typed here from the paper text (Sec. 3-5), not read from recipes.py."""
    cfg = recipes.config('paper')
    assert (cfg.model, cfg.epochs, cfg.warmup_epochs, cfg.batch_size, cfg.blr, cfg.weight_decay) == \
        ('macrl_vit_medium_p4_cifar', 2000, 50, 2048, 1.5e-4, 0.01)
    assert (cfg.mask_ratio, cfg.rec_loss, cfg.rec_on, cfg.bank_size, cfg.in_batch_negatives, cfg.alpha) == \
        (0.75, 'l1', 'visible', 65536, False, 0.1)
    assert (cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.proj_dim) == (256, 1, 1, 512)
    assert cfg.blur_p == (1.0, 0.1) and cfg.solarize_p == 0.2 and cfg.views == 'both' and cfg.recipe == 'paper'
    assert cfg.crop_min == 0.08  # Sec. 4: the augmentations follow BYOL (random resized crop 0.08-1)
    assert recipes.config('fast') == TrainConfig()  # fast: the defaults, nothing else
    assert recipes.config('paper', epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown recipe 'papr'"):
        recipes.config('papr')


def test_cli_recipe_with_flags_given_winning(small_folder, tmp_path):  # noqa: F811
    out = tmp_path / 'run'
    given = dict(model='macrl_vit_tiny_p4_cifar', batch_size=32, epochs=2, bank_size=256)
    main(['--recipe', 'paper', '--model', given['model'], '--model-args', TINY, '--batch-size', '32',
          '--epochs', '2', '--bank-size', '256', '--data', str(small_folder), '--out', str(out), '--max-steps', '1',
          '--precision', 'fp32', '--threads', '1', '--no-progress'])
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    for key, value in recipes.recipe_overrides('paper').items():
        want = given.get(key, value)
        got = ck['config'][key]
        assert (tuple(got) if isinstance(got, list) else got) == want, key
    assert ck['config']['recipe'] == 'paper'
    assert ck['macrl']['rec_on'] == 'visible' and ck['macrl']['in_batch_negatives'] is False
    assert ck['macrl']['bank_size'] == 256  # the flag, not the recipe's 65,536


def test_readme_table_lists_every_difference_between_the_recipes():
    text = README.read_text()
    table = text[text.index('| setting | `--recipe fast` (default) | `--recipe paper` |'):].split('\n\n')[0]
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r'^\| `--([a-z-]+)` \| ([^|]+) \| ([^|]+) \|', table, re.M)}
    fast = TrainConfig()
    diffs = {k: v for k, v in recipes.recipe_overrides('paper').items() if getattr(fast, k) != v}
    assert sorted(rows) == sorted(k.replace('_', '-') for k in diffs)
    for key, value in diffs.items():
        f, p = rows[key.replace('_', '-')]
        assert str(getattr(fast, key)).replace(',', '') in f.replace(',', ''), key
        assert str(value).replace(',', '') in p.replace(',', ''), key
