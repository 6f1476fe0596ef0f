"""The model card's training section tells a reader exactly how far a run got and how to rerun it."""
import dataclasses
import json

import pytest
import timm

import macrl_hub  # noqa: F401
from macrl_hub.card import write_model_card
from macrl_hub.config import TrainConfig
from macrl_hub.export import plain_timm_config

from test_train import small_folder  # noqa: F401  (fixture)

NAME = 'macrl_vit_tiny_p4_cifar.cifar10'


def _card(tmp_path, log, step, extra_evals=(), **cfg_kw):
    cfg = dataclasses.asdict(TrainConfig(model='macrl_vit_tiny_p4_cifar', epochs=16, time_budget='75m',
                                         out='runs/x', alpha=1.0, **cfg_kw))
    model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1)
    config = plain_timm_config(model, 'macrl_vit_tiny_p4_cifar', {'depth': 1}, 'cifar10')
    ck = {'config': cfg, 'step': step, 'train_time': 600.0, 'precision': 'fp32', 'hardware': 'a CPU', 'torch': 'x'}
    ev = {'eval': 'knn+linear', 'knn_top1_k20': 40.0, 'knn_top1_k200': 41.0, 'linear_top1': 50.0,
          'n_train': 50000, 'n_test': 10000, 'command': 'macrl eval knn+linear ...', 'wall_time_s': 1.0}
    return write_model_card(tmp_path, NAME, config, ck, [ev, *extra_evals], log).read_text()


def test_card_of_a_resumed_run_stopped_by_its_time_budget(tmp_path):
    log = [{'step': 10, 'epoch': 0.1, 'lr': 1e-4, 'img_per_s': 40.0, 'loss': 2.0},
           {'event': 'end', 'reason': 'time_budget', 'step': 1039, 'epochs': 2.66},
           {'step': 1040, 'epoch': 2.67, 'lr': 1e-4, 'img_per_s': 44.0, 'loss': 1.5},
           {'event': 'end', 'reason': 'time_budget', 'step': 3000, 'epochs': 7.69}]
    card = _card(tmp_path, log, 3000)
    assert '3000 steps = 7.69 of 16 scheduled epochs' in card
    assert 'mean 42.0 img/s' in card and 'the learning-rate schedule had not finished' in card
    assert 'Run in 2 invocations' in card and 'macrl train --out runs/x --resume auto' in card
    cmd = card.split('```bash')[1].split('```')[0]
    assert '--max-steps 3000' in cmd and '--time-budget' not in cmd and '--epochs 16' in cmd
    assert 'Fine-tuning (`macrl eval finetune`) was not run' in card


def test_card_of_a_finished_run(tmp_path):
    log = [{'step': 10, 'epoch': 0.1, 'lr': 1e-4, 'img_per_s': 40.0, 'loss': 2.0},
           {'event': 'end', 'reason': 'done', 'step': 6240, 'epochs': 16.0}]
    card = _card(tmp_path, log, 6240)
    assert '6240 steps = 16.00 of 16 scheduled epochs' in card and 'had not finished' not in card
    assert 'Run in 1 invocation of' in card
    cmd = card.split('```bash')[1].split('```')[0]
    assert '--max-steps' not in cmd and '--time-budget 75m' in cmd
    assert json.dumps(NAME)[1:-1] in card


def test_card_of_a_run_finished_over_several_invocations(tmp_path):
    log = [{'step': 10, 'epoch': 0.1, 'lr': 1e-4, 'img_per_s': 40.0, 'loss': 2.0},
           {'step': 390, 'epoch': 1.0, 'knn_top1_k20': 31.5, 'knn_top1_k200': 32.2},
           {'event': 'end', 'reason': 'time_budget', 'step': 400, 'epochs': 1.03},
           {'step': 780, 'epoch': 2.0, 'knn_top1_k20': 33.9, 'knn_top1_k200': 34.7},
           {'event': 'end', 'reason': 'done', 'step': 6240, 'epochs': 16.0}]
    card = _card(tmp_path, log, 6240, max_steps=5840)  # the last invocation's limit: it reached the end anyway
    assert 'Run in 2 invocations' in card and 'had not finished' not in card
    cmd = card.split('```bash')[1].split('```')[0]
    assert '--time-budget' not in cmd and '--max-steps' not in cmd  # the whole schedule, in one fresh run
    assert 'Online kNN top-1 while training (200 neighbours, 5000 train-split images as the bank, 2000 held-out' in card
    assert 'epoch 1: 32.2%, epoch 2: 34.7%.' in card


def test_card_states_the_monitor_sets_it_used_and_no_local_paths(tmp_path):
    """A run on 246 images has a monitor of 123 + 123, not the flags' 5000 + 2000; eval commands with absolute
    paths (--model, --json-out, --save-head) showed the writer's folders."""
    log = [{'step': 10, 'epoch': 0.1, 'lr': 1e-4, 'img_per_s': 40.0, 'loss': 2.0},
           {'step': 12, 'epoch': 1.0, 'knn_bank': 123, 'knn_held': 123, 'knn_held_from': 'train',
            'knn_top1_k20': 31.5, 'knn_top1_k200': 32.2},
           {'event': 'end', 'reason': 'done', 'step': 12, 'epochs': 1.0}]
    ev = {'eval': 'knn', 'knn_top1_k20': 40.0, 'n_train': 50, 'n_test': 20, 'wall_time_s': 1.0,
          'command': 'macrl eval knn --model /home/me/scratch/run1/checkpoint.pth --data /home/me/d/mine.tgz '
                     '--json-out /home/me/scratch/run1/knn.json --save-head /home/me/h.safetensors'}
    card = _card(tmp_path, log, 12, extra_evals=[ev])
    assert '(200 neighbours, 123 train-split images as the bank, 123 held-out train-split images;' in card
    assert ('`macrl eval knn --model run1/checkpoint.pth --data path/to/mine.tgz --json-out run1/knn.json '
            '--save-head h.safetensors`') in card and '/home/me' not in card


def test_card_with_a_fine_tune_says_how_many_epochs(tmp_path):
    log = [{'step': 10, 'epoch': 0.1, 'lr': 1e-4, 'img_per_s': 40.0, 'loss': 2.0},
           {'event': 'end', 'reason': 'done', 'step': 6240, 'epochs': 16.0}]
    ft = {'eval': 'finetune', 'finetune_top1': 71.234, 'finetune_epochs': 4, 'n_train': 50000, 'n_test': 10000,
          'command': 'macrl eval finetune --epochs 4 ...', 'wall_time_s': 2.0}
    card = _card(tmp_path, log, 6240, [ft])
    row = '| fine-tune top-1 (4 epochs) | 71.23% | 50000 train / 10000 test images | `macrl eval finetune --epochs 4'
    assert row in card
    assert 'name: fine-tune top-1 (4 epochs)' in card.split('---')[1]  # the Hub's model-index metadata too
    assert 'was not run' not in card


def test_card_of_a_run_fitted_to_its_time_budget(tmp_path):
    """--fit-budget: the schedule is --total-steps (fitted), not the --epochs cap; the rerun command fixes its length."""
    cfg = dataclasses.asdict(TrainConfig(model='macrl_vit_tiny_p4_cifar', epochs=1000, time_budget='298s',
                                         fit_budget=True, total_steps=6005, batch_size=512, out='runs/x'))
    model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1)
    config = plain_timm_config(model, 'macrl_vit_tiny_p4_cifar', {'depth': 1}, 'cifar10')
    ck = {'config': cfg, 'step': 5121, 'train_time': 298.0, 'precision': 'bf16', 'hardware': 'NVIDIA H200'}
    log = [{'step': 10, 'epoch': 0.1, 'lr': 1e-4, 'img_per_s': 9000.0, 'loss': 2.0},
           {'event': 'end', 'reason': 'time_budget', 'step': 5121, 'epochs': 5121 / 97}]
    card = write_model_card(tmp_path, NAME, config, ck, [], log).read_text()
    assert '5121 steps = 52.79 of 61.91 scheduled epochs (fitted to a 298s time budget by --fit-budget)' in card
    cmd = card.split('```bash')[1].split('```')[0]
    assert '--total-steps 6005' in cmd and '--max-steps 5121' in cmd
    assert '--fit-budget' not in cmd and '--time-budget' not in cmd


def test_cards_show_no_local_data_paths():
    """A card's commands name the data as a reader has it: torchvision's name, or path/to/<the file>."""
    from pathlib import Path
    from macrl_hub.card import public_data_arg, train_command
    assert public_data_arg('macrl eval knn --data ../shared/data/cifar10-jpeg.tar.xz --k 20') == \
        'macrl eval knn --data path/to/cifar10-jpeg.tar.xz --k 20'
    assert public_data_arg('macrl eval knn --data cifar10') == 'macrl eval knn --data cifar10'
    cmd = train_command({'model': 'macrl_vit_tiny_p4_cifar', 'data': '/home/me/data/imagenette2-160.tgz'})
    assert '--data path/to/imagenette2-160.tgz' in cmd and '/home/me' not in cmd
    cards = Path(__file__).resolve().parent.parent / 'model_cards'
    for readme in cards.glob('*/README.md'):
        text = readme.read_text()
        assert '--data ../' not in text and 'shared/data' not in text and '--data .data/' not in text, readme


@pytest.mark.parametrize('num_classes, img_size', [(0, 32), (10, 48)])
def test_model_stats_count_every_matmul_of_a_vit(num_classes, img_size):
    """Params and GMACs on the card: a ViT's multiply-adds by hand (patch projection, per block qkv + proj + MLP =
    12 d^2 per token and the two token-token attention products 2 T^2 d, the head), and its parameter count."""
    from macrl_hub.card import model_details, model_stats
    model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2, img_size=img_size, num_classes=num_classes)
    config = plain_timm_config(model, 'macrl_vit_tiny_p4_cifar', {'depth': 2, 'img_size': img_size}, 'x')
    d, p, t = 192, 4, (img_size // 4) ** 2
    macs = t * 3 * p * p * d + 2 * (t * 12 * d * d + 2 * t * t * d) + d * num_classes
    params, gmacs = model_stats(config)
    assert gmacs == pytest.approx(macs / 1e9, rel=1e-9)
    assert params == pytest.approx(sum(q.numel() for q in model.parameters()) / 1e6, rel=1e-12)
    assert f'  - Image size: {img_size} x {img_size}' in model_details(config, 'cifar10')


def test_published_cards_state_their_inputs_and_their_gap_to_the_paper():
    """Each published card's inputs and model stats are its config.json's, and its row beside the paper's numbers
    is its own linear probe (model-index) after its own pretraining epochs (Training section)."""
    import re
    from pathlib import Path
    from huggingface_hub import ModelCard
    from macrl_hub.card import _inputs_line, model_details
    from macrl_hub.paper import paper_results
    paper_lin = paper_results('cifar10')['linear']['MACRL'].top1
    folders = sorted((Path(__file__).resolve().parent.parent / 'model_cards').glob('*.cifar10*'))
    assert folders
    for folder in folders:
        text = (folder / 'README.md').read_text()
        config = json.loads((folder / 'config.json').read_text())
        assert _inputs_line(config['pretrained_cfg']) in text, folder
        lin = next(r.metric_value for r in ModelCard.load(folder / 'README.md').data.eval_results
                   if r.metric_name == 'linear probe top-1')
        epochs = re.search(r'^- \d+ steps = ([\d.]+) of', text, re.M).group(1)
        section = text.split('## Compared with the paper')[1].split('## Training')[0]
        assert f'| MACRL, this card | {epochs} (512) | {lin:.2f}% (100) | not run |' in section, folder
        assert f'linear probe {paper_lin - lin:.2f} points below the paper\'s MACRL ({lin:.2f}% vs ' in section, folder
        assert '\n'.join(model_details(config, 'cifar10')) + '\n## Usage' in text, folder


def test_each_published_cards_example_runs_as_it_stands(tmp_path):
    """A reader copies a card's Python block and runs it: every published card's block, unedited, with an image.png
    of another size than the model's, in a fresh interpreter, offline (the checkout's weights), gives features of
    the stated width and, for a classifier tag, logits over its labels."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from PIL import Image
    from huggingface_hub import ModelCard
    from macrl_hub.card import usage_block
    from macrl_hub.pretrained import hub_repo_id
    Image.new('RGB', (50, 40), (200, 30, 90)).save(tmp_path / 'image.png')
    root = Path(__file__).resolve().parent.parent
    cards = sorted((root / 'model_cards').glob('*.cifar10*'))
    code = []
    for folder in cards:
        text = (folder / 'README.md').read_text()
        config = json.loads((folder / 'config.json').read_text())
        block = '\n'.join(usage_block(folder.name, hub_repo_id(folder.name), True, config))
        assert block in text, folder  # the card holds exactly what the writer writes today
        card = ModelCard.load(folder / 'README.md').data  # an encoder is a feature extractor on the Hub too
        kind = 'image-classification' if config['num_classes'] else 'image-feature-extraction'
        assert card.pipeline_tag == kind and kind in card.tags and card.library_name == 'timm', folder
        code += [text.split('```python\n', 1)[1].split('\n```', 1)[0],
                 f'print({folder.name!r}, tuple(features.shape), tuple(logits.shape) if "logits" in dir() else None)',
                 'logits = None; del logits']
    out = subprocess.run([sys.executable, '-c', '\n'.join(code)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, 'HF_HUB_OFFLINE': '1',  # this checkout's macrl_hub
                                           'PYTHONPATH': os.pathsep.join([str(root), os.environ.get('PYTHONPATH',
                                                                                                    '')])})
    assert out.returncode == 0, out.stderr[-3000:]
    got = {line.split()[0].strip("'"): line for line in out.stdout.splitlines()}
    for folder in cards:
        config = json.loads((folder / 'config.json').read_text())
        classes = config['num_classes']
        want = f"(1, {config['num_features']}) " + (f'(1, {classes})' if classes else 'None')
        assert got[folder.name].endswith(want), got[folder.name]


def _paper_card(tmp_path, arch, tag, evals, model_args=None):
    cfg = dataclasses.asdict(TrainConfig(model=arch, epochs=100, batch_size=512, out='runs/x'))
    model = timm.create_model(arch, **(model_args or {}))
    config = plain_timm_config(model, arch, model_args or {}, tag)
    ck = {'config': cfg, 'step': 5121, 'train_time': 298.0, 'precision': 'bf16', 'hardware': 'NVIDIA H200'}
    log = [{'event': 'end', 'reason': 'time_budget', 'step': 5121, 'epochs': 52.79}]
    return write_model_card(tmp_path, f'{arch}.{tag}', config, ck, evals, log).read_text()


LINEAR = {'eval': 'knn+linear', 'knn_top1_k200': 64.43, 'linear_top1': 72.89, 'n_train': 50000, 'n_test': 10000,
          'probe_epochs': 100, 'probe_lr': 0.1, 'probe_optimizer': 'adamw', 'probe_weight_decay': 0.0,
          'probe_augment': False, 'command': 'macrl eval knn+linear ...'}


def test_card_of_the_papers_encoder_sets_its_numbers_beside_the_papers(tmp_path):
    """The paper's CIFAR encoder: the paper's Table 1-2 rows with their epochs, ours with ours, and the gap."""
    ft = {'eval': 'finetune', 'finetune_top1': 90.5, 'finetune_epochs': 20, 'n_train': 50000, 'n_test': 10000}
    card = _paper_card(tmp_path, 'macrl_vit_medium_p4_cifar', 'cifar10', [LINEAR, ft])
    section = card.split('## Compared with the paper')[1].split('## Training')[0]
    assert 'this card\'s encoder is the same architecture' in section
    assert '| MoCo (paper) | 2,000 (2,048) | 86.16% (1,000) | 95.61% (400) |' in section
    assert '| MACRL\\* (paper) | 2,000 (2,048) | 81.36% (100) | 96.43% (100) |' in section
    assert '| MACRL (paper) | 2,000 (2,048) | 91.02% (200) | 97.88% (200) |' in section
    assert '| MACRL, this card | 52.79 (512) | 72.89% (100) | 90.50% (20) |' in section
    assert 'linear probe 18.13 points below the paper\'s MACRL (72.89% vs 91.02%)' in section
    assert 'fine-tune 7.38 points below the paper\'s MACRL (90.50% vs 97.88%)' in section
    assert 'after 2.6% of its pretraining epochs' in section and 'no augmentation' in section
    warm = _paper_card(tmp_path / 'w', 'macrl_vit_medium_p4_cifar', 'cifar10', [dict(LINEAR, probe_warmup_epochs=10)])
    assert 'weight decay 0.0, 10 warmup epochs, no augmentation' in warm
    details = card.split('## Model Details')[1].split('## Usage')[0]  # timm's card section, before the usage
    assert '- **Model Type:** Image feature backbone, self-supervised (MACRL)' in details
    assert '  - Image size: 32 x 32' in details and '- **Dataset:** CIFAR-10' in details


def test_card_of_another_encoder_or_dataset_says_what_the_paper_trained(tmp_path):
    """A smaller encoder is named as different; CIFAR-100 uses its own column; a dataset the paper never ran has no
    section."""
    card = _paper_card(tmp_path, 'macrl_vit_tiny_p4_cifar', 'cifar100', [dict(LINEAR, linear_top1=40.0)],
                       {'depth': 1})
    section = card.split('## Compared with the paper')[1].split('## Training')[0]
    assert 'on `macrl_vit_medium_p4_cifar` (512-d, 12 layers, 4 heads, patch 4)' in section
    assert 'a different one (192-d, 1 layers, 3 heads, patch 4)' in section
    assert '| MACRL (paper) | 2,000 (2,048) | 66.27% (200) | 82.94% (200) |' in section
    assert '| MACRL, this card | 52.79 (512) | 40.00% (100) | not run |' in section
    assert 'linear probe 26.27 points below' in section
    card = _paper_card(tmp_path, 'macrl_vit_tiny_p4_cifar', 'mydata', [LINEAR], {'depth': 1})
    assert 'Compared with the paper' not in card and '## Training' in card
    # model-index: a Hub dataset id, `imagefolder` for the user's own data (it was `mydata`, made up from the tag)
    from huggingface_hub import ModelCard
    meta = ModelCard(card).data.to_dict()
    assert meta['model-index'][0]['results'][0]['dataset'] == {'name': 'MYDATA', 'type': 'imagefolder',
                                                               'split': 'test'}
    assert 'datasets' not in meta


def _parsed(argv):
    """`macrl train`'s own reading of argv (flags, then the recipe where no flag was given)."""
    import argparse
    from macrl_hub.config import add_dataclass_args, config_from_args
    from macrl_hub.recipes import apply_recipe
    p = argparse.ArgumentParser()
    add_dataclass_args(p)
    g = argparse.ArgumentParser(add_help=False)
    add_dataclass_args(g, suppress_defaults=True)
    return apply_recipe(config_from_args(p.parse_args(argv)), vars(g.parse_known_args(argv)[0]))


@pytest.mark.parametrize('argv', [
    ['--recipe', 'paper', '--rec-on', 'masked', '--bank-size', '16384', '--in-batch-negatives', '--warmup-epochs',
     '10', '--epochs', '3'],  # values set back to fast's: the card must keep those flags
    ['--alpha', '1', '--epochs', '3', '--model-args', '{"depth": 2}'],
])
def test_the_cards_train_command_reproduces_the_run(argv):
    import shlex
    from macrl_hub.card import train_command
    cfg = _parsed(argv + ['--data', 'cifar10', '--out', 'runs/x'])
    cmd = train_command(dataclasses.asdict(cfg))
    assert _parsed(shlex.split(cmd.replace('\\\n', ' '))[2:]) == cfg, cmd


def test_a_fitted_runs_command_gives_its_schedule_not_its_budget():
    """A run whose schedule --fit-budget fitted (total_steps recorded) and that finished it: the card's command
    gives --total-steps and no --time-budget, which would stop a slower machine short of the schedule (the tiny
    cards said --time-budget 149s)."""
    import shlex
    from macrl_hub.card import train_command
    cfg = _parsed(['--data', 'cifar10', '--out', 'runs/x', '--time-budget', '149s', '--fit-budget',
                   '--total-steps', '2572'])
    cmd = train_command(dataclasses.asdict(cfg))
    assert '--total-steps 2572' in cmd and '--time-budget' not in cmd and '--fit-budget' not in cmd, cmd
    assert _parsed(shlex.split(cmd.replace('\\\n', ' '))[2:]) == dataclasses.replace(cfg, time_budget='',
                                                                                   fit_budget=False), cmd


def test_card_of_a_run_resumed_under_max_steps_reruns_its_total(small_folder, tmp_path):
    """`--max-steps` counts per invocation: 1 step, then `--resume auto --max-steps 3`, trains 4 of a 12-step
    schedule. The log says the invocation stopped on --max-steps (not 'done'), and the card's command reruns 4."""
    from test_train import _cfg
    from macrl_hub.export import export
    from macrl_hub.train import read_log, train
    run = tmp_path / 'run'
    train(_cfg(small_folder, run, max_steps=1))
    res = train(_cfg(small_folder, run, max_steps=3, resume='auto'))
    assert res['step'] == 4 and res['reason'] == 'max_steps'
    assert [r['reason'] for r in read_log(run / 'log.jsonl') if r.get('event') == 'end'] == ['max_steps', 'max_steps']
    card = (export(str(run / 'checkpoint.pth'), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / 'cards'))
            / 'README.md').read_text()
    cmd = card.split('```bash')[1].split('```')[0]
    assert '- 4 steps = ' in card and '--max-steps 4' in cmd and '--max-steps 3' not in cmd
    assert 'stopped: max_steps (the learning-rate schedule had not finished)' in card

