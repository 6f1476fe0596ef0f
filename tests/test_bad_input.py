"""Bad input, as a table: each case gets a clear error naming the problem (or, for odd image modes, a
documented conversion), and nothing the user owns changes: every file the case starts from is
byte-identical afterwards. The same list, with the behaviour, is README's troubleshooting table."""
import hashlib
import io
import re
import shutil
import tarfile
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Tuple, Type

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import macrl_hub  # noqa: F401
from macrl_hub import MACRL
from macrl_hub.cli import main as cli
from macrl_hub.data import DataError, load_dataset
from macrl_hub.evaluate import load_encoder, main as eval_main
from macrl_hub.export import export
from macrl_hub.pretrained import PUBLISHED
from macrl_hub.train import train
from macrl_hub.weights import WeightsFileError, load_safetensors

from test_train import _cfg, small_folder  # noqa: F401  (fixture)

NAME = 'macrl_vit_tiny_p4_cifar.cifar10'


class Case(NamedTuple):
    run: Callable[[], object]
    error: Optional[Type[BaseException]]  # None: must succeed
    match: str  # regex on the message (or on repr(result) when it succeeds)
    owned: List[Path]  # the user's files: unchanged afterwards


def _jpeg_tree(root: Path, corrupt: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for c in ('cat', 'dog'):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / c / f'{i}.jpg')
    if corrupt:
        (root / 'train' / 'cat' / 'bad.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    return root


def _odd_modes_tree(root: Path) -> Path:
    for c, arr, mode in (('gray', np.full((32, 32), 128, np.uint8), 'L'),
                         ('rgba', np.dstack([np.full((32, 32, 3), 200, np.uint8), np.full((32, 32), 255, np.uint8)]),
                          'RGBA'),
                         ('deep', np.full((32, 32), 65535, np.uint16), None)):
        (root / 'train' / c).mkdir(parents=True)
        Image.fromarray(arr, mode=mode).save(root / 'train' / c / '0.png')
    return root


def _files(*roots: Path) -> List[Path]:
    return sorted(f for r in roots for f in ([r] if r.is_file() else r.rglob('*')) if f.is_file())


def _digest(paths: List[Path]) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _cases(tmp: Path, ckpt: Path, folder: Path) -> dict:
    cases = {}
    bad = _jpeg_tree(tmp / 'corrupt', corrupt=True)
    cases['corrupt JPEG, --on-error raise'] = Case(
        lambda: load_dataset(str(bad), 'train', on_error='raise'), DataError, r'bad\.jpg', _files(bad))
    good = _jpeg_tree(tmp / 'good')
    arc = tmp / 'data.tar.xz'
    with tarfile.open(arc, 'w:xz') as tar:
        tar.add(good, arcname='data')
    cut = tmp / 'cut.tar.xz'
    cut.write_bytes(arc.read_bytes()[: arc.stat().st_size // 2])
    cases['truncated archive'] = Case(lambda: load_dataset(str(cut), 'train'), DataError, 'truncated or corrupt',
                                      [cut])
    odd = _odd_modes_tree(tmp / 'odd')
    cases['grayscale / RGBA / 16-bit images'] = Case(
        lambda: tuple(load_dataset(str(odd), 'train').images.shape), None, r'\(3, 3, 32, 32\)', _files(odd))
    model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1)
    cases['wrong-size tensor to a fixed-size model'] = Case(
        lambda: model(torch.randn(2, 3, 64, 64)), ValueError, r'expects input \(B, 3, 32, 32\), got \(2, 3, 64, 64\)',
        [])
    cases['one-channel tensor to an RGB model'] = Case(lambda: model(torch.randn(2, 1, 32, 32)), ValueError,
                                                       r'expected 3 input channels \(B, 3, H, W\)', [])
    cases['channels-last tensor'] = Case(lambda: model(torch.randn(2, 32, 32, 3)), ValueError,
                                         r'got \(2, 32, 32, 3\); channels last\? x\.permute\(0, 3, 1, 2\)', [])
    cases['fp16 tensor to an fp32 model'] = Case(lambda: model(torch.randn(2, 3, 32, 32).half()), ValueError,
                                                 r'input is torch\.float16 but the model\'s weights are torch\.float32',
                                                 [])
    cases['wrong-size tensor to forward_features'] = Case(
        lambda: model.forward_features(torch.randn(2, 3, 64, 64)), ValueError,
        r'expects input \(B, 3, 32, 32\), got \(2, 3, 64, 64\)', [])
    cases['uint8 image tensor'] = Case(lambda: model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)), ValueError,
                                       r'^expected a float image tensor .*got torch\.uint8; [^\n]*$', [])
    text, empty, cut_ck = tmp / 'notes.pth', tmp / 'empty.pth', tmp / 'cut.pth'
    text.write_text('these are not weights\n')
    empty.write_bytes(b'')
    cut_ck.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    cases['text file as a checkpoint (macrl eval)'] = Case(
        lambda: _cli_error(['eval', 'knn', '--model', str(text), '--data', str(folder)]), ValueError,
        r"notes\.pth is not a torch checkpoint \(it starts with b'these are not", [text])
    cases['empty file as a checkpoint (macrl export)'] = Case(
        lambda: _cli_error(['export', str(empty), '--name', 'macrl_vit_tiny_p4_cifar.mine', '--out-dir',
                            str(tmp / 'cards_empty')]), ValueError, r'empty\.pth is empty \(0 bytes\)', [empty])
    cases['truncated checkpoint (macrl train --resume)'] = Case(
        lambda: _cli_error(['train', '--resume', str(cut_ck), '--out', str(tmp / 'resumed'), '--data', str(folder)]),
        ValueError, r'cut\.pth is not a readable torch checkpoint \(truncated or corrupt\?\)', [cut_ck])
    whole = tmp / 'whole_model.pth'
    torch.save(model, whole)
    cases['a whole model saved with torch.save(model) (macrl eval)'] = Case(
        lambda: _cli_error(['eval', 'knn', '--model', str(whole), '--data', str(folder)]), ValueError,
        r'whole_model\.pth holds a pickled timm\.models\.vision_transformer\.VisionTransformer, which torch\.load\('
        r'weights_only=True\) does not unpickle.*a whole model saved with torch\.save\(model\)\? .*'
        r'torch\.save\(model\.state_dict\(\), path\)', [whole])
    unpublished = [n for n, sha in PUBLISHED.items() if not sha][:1]  # (PretrainedWeightsError, a RuntimeError)
    cases['a tag without published weights (macrl eval)'] = Case(
        lambda: _cli_error(['eval', 'knn', '--model', unpublished[0], '--data', str(folder)]), ValueError,
        r'^macrl eval: error: (?!\w+Error: ).*'  # its own message, not the catch-all's 'SomeError: ... --debug'
        + re.escape(repr(unpublished and unpublished[0])), [])
    cases['unknown model'] = Case(lambda: load_encoder('vit_nope'), ValueError, r'unknown model .*macrl_vit_tiny', [])
    cases['unknown tag'] = Case(lambda: timm.create_model(f'{NAME.split(".")[0]}.imagenet', pretrained=True),
                                ValueError, r"unknown pretrained tag 'imagenet'.*available", [])
    cases['unknown objective'] = Case(lambda: MACRL(timm.create_model('macrl_vit_tiny_p4_cifar', depth=1),
                                                    objective='simclr'), ValueError, r"unknown objective 'simclr'", [])
    cases['checkpoint from another architecture'] = Case(
        lambda: export(str(ckpt), 'macrl_vit_small_p4_cifar.mine', str(tmp / 'cards')), ValueError,
        'is a macrl_vit_tiny_p4_cifar, not macrl_vit_small_p4_cifar', [ckpt])
    pkl = tmp / 'weights.safetensors'
    torch.save(model.state_dict(), pkl)
    cases['pickle offered as published weights'] = Case(lambda: load_safetensors(pkl), WeightsFileError, 'pickle',
                                                        [pkl])
    cases['contradictory flags (--objective mae --bank-size)'] = Case(
        lambda: _cli_error(['train', '--objective', 'mae', '--bank-size', '4096', '--data', str(folder),
                            '--out', str(ckpt.parent)]), ValueError, '--objective mae does not use --bank-size',
        _files(ckpt.parent))
    cases['new run into a folder holding a checkpoint'] = Case(
        lambda: train(_cfg(folder, ckpt.parent, max_steps=1)), FileExistsError, r'--resume auto', _files(ckpt.parent))
    cards = tmp / 'cards'
    mine = cards / 'macrl_vit_tiny_p4_cifar.mine'
    mine.mkdir(parents=True)
    (mine / 'README.md').write_text('my own notes\n')
    cases['export over an existing model folder'] = Case(
        lambda: export(str(ckpt), 'macrl_vit_tiny_p4_cifar.mine', str(cards)), FileExistsError, r'--overwrite',
        _files(mine))
    ft = ckpt.parent / 'ft'  # a 1-epoch fine-tune's folder (checkpoint + classifier), made by `setting`
    tune = ['finetune', '--model', str(ckpt), '--data', str(folder), '--epochs', '1', '--batch-size', '32',
            '--out', str(ft)]
    cases['fine-tune into a folder holding its checkpoint'] = Case(lambda: eval_main(tune), FileExistsError,
                                                                   r'--resume', _files(ft))
    cases['fine-tune --batch-size larger than the train split (macrl eval)'] = Case(
        lambda: eval_main(['finetune', '--model', str(ckpt), '--data', str(folder), '--epochs', '1', '--batch-size',
                           '512', '--out', str(tmp / 'ft_big')]), ValueError,
        r'--batch-size 512 is larger than the train split \(192 images\)', [])
    model_dir = tmp / 'model_folder'  # what `macrl export` / `macrl download` leave: a user's model
    model_dir.mkdir()
    (model_dir / 'model.safetensors').write_bytes(b'weights')
    (model_dir / 'config.json').write_text('{"architecture": "vit_tiny_patch16_224"}\n')
    cases['fine-tune --out into a model folder'] = Case(
        lambda: eval_main(tune[:-1] + [str(model_dir)]), FileExistsError,
        r'already holds model.safetensors, config.json \(a model folder or a training run\)', _files(model_dir))
    cases['a new run into a model folder (macrl train --out)'] = Case(
        lambda: train(_cfg(folder, model_dir, max_steps=1)), FileExistsError, r'holds a model folder',
        _files(model_dir))

    def fewer(drop_split: str) -> Path:  # the small folder with one class fewer in one split (or both)
        other = tmp / f'fewer_{drop_split}'
        shutil.copytree(folder, other)
        for split in (('train', 'test') if drop_split == 'both' else (drop_split,)):
            shutil.rmtree(other / split / 'truck')
        return other
    cases['--resume with other --data'] = Case(
        lambda: train(_cfg(fewer('both'), ckpt.parent, resume='auto')), ValueError,
        r'trained on other data than --data gives \(192 images, now \d+; classes', _files(ckpt.parent))
    def old_checkpoint() -> Path:  # one saved before checkpoints recorded their data: the log tells
        run = tmp / 'old_run'
        shutil.copytree(ckpt.parent, run, ignore=shutil.ignore_patterns('ft'))
        ck = torch.load(run / 'checkpoint.pth', weights_only=True)
        del ck['data']
        torch.save(ck, run / 'checkpoint.pth')
        return run
    cases['--resume of an older checkpoint with other --data'] = Case(
        lambda: train(_cfg(fewer('both'), old_checkpoint(), resume='auto')), ValueError,
        r'the run had 6 steps per epoch, --data now gives 5', [])
    cases['--final-knn when test and train classes differ'] = Case(
        lambda: train(_cfg(fewer('test'), tmp / 'fk', final_knn=True, max_steps=1)), ValueError,
        r"--final-knn: the train and test splits .*only in train \['truck'\]", [])
    cases['fine-tune --resume with another --lr'] = Case(
        lambda: eval_main(tune + ['--resume', '--lr', '1e-2']), ValueError, r'lr \(checkpoint 0.0015, now 0.01\)',
        _files(ft))
    one = tmp / 'one_class'
    for split in ('train', 'test'):
        (one / split / 'cat').mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(one / split / 'cat' / f'{i}.png')
    cases['a dataset with one class (macrl eval)'] = Case(
        lambda: eval_main(['knn', '--model', str(ckpt), '--data', str(one)]), ValueError,
        r'has one class \(cat\): any classifier scores 100%', _files(one))
    other = tmp / 'other_classes'
    for split, classes in (('train', ('cat', 'dog')), ('test', ('cat', 'fox'))):
        for c in classes:
            (other / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(other / split / c / f'{i}.png')
    cases['train and test splits with other classes (macrl eval)'] = Case(
        lambda: eval_main(['linear', '--model', str(ckpt), '--data', str(other)]), ValueError,
        r"train and test splits of .*other_classes have different classes: only in train \['dog'\], only in test "
        r"\['fox'\]", _files(other))
    cases['--model-args that is not JSON (macrl train)'] = Case(
        lambda: _cli_error(['train', '--model-args', '{depth: 1}', '--data', str(folder), '--out', str(tmp / 'j')]),
        ValueError, r"--model-args must be a JSON object, got '\{depth: 1\}'", [])
    cases['mean/std on a 0-255 scale (macrl train)'] = Case(
        lambda: _cli_error(['train', '--mean', '125', '123', '114', '--std', '63', '62', '66', '--data', str(folder),
                            '--out', str(tmp / 'scale')]), ValueError, r'--mean is on the 0-1 scale .*\[0.4902', [])
    cases['a pretrained tag as macrl train --model'] = Case(
        lambda: train(_cfg(folder, tmp / 'tagged', model='macrl_vit_tiny_p4_cifar.cifar10')), ValueError,
        r'asks for pretrained weights; macrl train pretrains from a random init: .*--model macrl_vit_tiny_p4_cifar$',
        [])
    cases['macrl train numbers out of range (--log-every 0, --epochs 0, ...)'] = Case(
        lambda: _cli_error(['train', '--log-every', '0', '--data', str(folder), '--out', str(tmp / 'zero')]),
        ValueError, r'--log-every must be >= 1, got 0', [])
    def into_another_run() -> None:  # a folder whose run left a log (and no checkpoint yet)
        other = tmp / 'other_run'
        other.mkdir()
        (other / 'log.jsonl').write_text('{"step": 1, "loss": 1.0}\n')
        train(_cfg(folder, other, resume=str(ckpt), max_steps=1))
    cases['--resume <a checkpoint> --out <another run>'] = Case(
        into_another_run, FileExistsError, r'holds another run \(checkpoint.pth or log.jsonl\)',
        [ckpt, ckpt.parent / 'log.jsonl'])

    def locked() -> None:  # as a second macrl train would find it: the folder's lock held by another descriptor
        import contextlib
        from macrl_hub.train import _lock_folder
        with contextlib.ExitStack() as stack:
            _lock_folder(ckpt.parent, stack)
            train(_cfg(folder, ckpt.parent, resume='auto', max_steps=1))
    cases['two macrl train into one --out at once'] = Case(locked, BlockingIOError,
                                                            r'is in use by another macrl train', _files(ckpt.parent))
    cases['--fit-budget resuming a run with a fixed schedule'] = Case(
        lambda: train(_cfg(folder, ckpt.parent, resume='auto', fit_budget=True, time_budget='1m')), ValueError,
        r'was not fitted to a time budget .*drop --fit-budget', _files(ckpt.parent))
    cases['--final-knn on data without a test split'] = Case(
        lambda: train(_cfg(folder / 'train', tmp / 'nt', final_knn=True, max_steps=1)), ValueError,
        r'--final-knn scores on the test split, and there is none', [])
    cases['a one-channel encoder to macrl train'] = Case(
        lambda: _cli_error(['train', '--model-args', '{"in_chans": 1, "depth": 1}', '--data', str(folder),
                            '--out', str(tmp / 'gray')]), ValueError,
        r'feeds square RGB images .* takes 1 channels at 32x32', [])
    cases['export --name with a space or a slash'] = Case(
        lambda: export(str(ckpt), 'macrl_vit_tiny_p4_cifar.my data/v1', str(tmp / 'cards_bad')), ValueError,
        r'letters, digits', [ckpt])
    return cases


def _cli_error(argv):
    """The CLI prints one line and returns 1: raise it again as ValueError so the table can match it."""
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli(argv)
    lines = err.getvalue().strip().splitlines()
    if rc == 1 and len(lines) == 1:
        raise ValueError(lines[0])
    raise AssertionError(f'expected one error line and exit 1, got {rc}: {lines}')


CASES = ['corrupt JPEG, --on-error raise', 'truncated archive', 'grayscale / RGBA / 16-bit images',
         'wrong-size tensor to a fixed-size model', 'one-channel tensor to an RGB model',
         'wrong-size tensor to forward_features', 'uint8 image tensor', 'channels-last tensor',
         'fp16 tensor to an fp32 model', 'unknown model', 'unknown tag',
         'unknown objective', 'checkpoint from another architecture', 'text file as a checkpoint (macrl eval)',
         'empty file as a checkpoint (macrl export)', 'truncated checkpoint (macrl train --resume)',
         'a whole model saved with torch.save(model) (macrl eval)',
         'a tag without published weights (macrl eval)', 'pickle offered as published weights',
         'contradictory flags (--objective mae --bank-size)', 'new run into a folder holding a checkpoint',
         'export over an existing model folder', 'fine-tune into a folder holding its checkpoint',
         'fine-tune --resume with another --lr', 'fine-tune --batch-size larger than the train split (macrl eval)',
         'a dataset with one class (macrl eval)',
         'train and test splits with other classes (macrl eval)', '--model-args that is not JSON (macrl train)',
         'mean/std on a 0-255 scale (macrl train)', 'export --name with a space or a slash',
         'a one-channel encoder to macrl train', 'fine-tune --out into a model folder',
         'a new run into a model folder (macrl train --out)', '--resume with other --data',
         '--final-knn when test and train classes differ', '--resume of an older checkpoint with other --data',
         'a pretrained tag as macrl train --model', 'macrl train numbers out of range (--log-every 0, --epochs 0, ...)',
         '--resume <a checkpoint> --out <another run>', 'two macrl train into one --out at once',
         '--fit-budget resuming a run with a fixed schedule', '--final-knn on data without a test split']


@pytest.fixture(scope='module')
def setting(small_folder, tmp_path_factory) -> Tuple[Path, Path]:
    run = tmp_path_factory.mktemp('run')
    train(_cfg(small_folder, run, max_steps=1))
    eval_main(['finetune', '--model', str(run / 'checkpoint.pth'), '--data', str(small_folder), '--epochs', '1',
               '--batch-size', '32', '--out', str(run / 'ft')])
    return run / 'checkpoint.pth', small_folder


@pytest.mark.parametrize('name', CASES)
def test_bad_input_table(name, setting, tmp_path):
    ckpt, folder = setting
    case = _cases(tmp_path, ckpt, folder)[name]
    before = _digest(case.owned)
    if case.error is None:
        assert re.search(case.match, repr(case.run())), name
    else:
        with pytest.raises(case.error, match=case.match):
            case.run()
    assert _digest(case.owned) == before, f'{name}: a file the user owns changed'


def test_the_table_covers_every_case(setting, tmp_path):
    assert sorted(_cases(tmp_path, *setting)) == sorted(CASES)


def test_export_overwrite_replaces_only_its_own_files(setting, tmp_path):
    ckpt, _ = setting
    mine = tmp_path / 'cards' / 'macrl_vit_tiny_p4_cifar.mine'
    mine.mkdir(parents=True)
    (mine / 'NOTES.txt').write_text('keep me\n')
    (mine / 'README.md').write_text('old card\n')
    export(str(ckpt), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / 'cards'), overwrite=True)
    assert (mine / 'NOTES.txt').read_text() == 'keep me\n'
    assert (mine / 'README.md').read_text() != 'old card\n' and (mine / 'model.safetensors').is_file()
    # an earlier export's --full state and training curve are not kept beside other weights
    export(str(ckpt), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / 'cards'), full=True, overwrite=True)
    assert (mine / 'pretrain.safetensors').is_file() and (mine / 'training_curve.png').is_file()
    (tmp_path / 'nolog').mkdir()
    shutil.copy(ckpt, tmp_path / 'nolog' / 'checkpoint.pth')  # no log.jsonl beside it: no curve to draw
    export(str(tmp_path / 'nolog' / 'checkpoint.pth'), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / 'cards'),
           overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == ['NOTES.txt', 'README.md', 'config.json', 'model.safetensors']
    assert 'training_curve.png' not in (mine / 'README.md').read_text()


def test_a_checkpoint_dict_with_other_objects_is_not_called_a_whole_model(tmp_path):
    """Another trainer's checkpoint (MAE's and DINO's keep an argparse.Namespace beside the weights) gets the way to
    load it once and keep the weights, not the whole-model advice."""
    import argparse
    from macrl_hub.weights import WeightsFileError, load_checkpoint
    path = tmp_path / 'mae_checkpoint.pth'
    torch.save({'model': {'w': torch.zeros(2)}, 'args': argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(WeightsFileError, match=r'holds a pickled argparse\.Namespace, .*weights_only=False') as e:
        load_checkpoint(path)
    assert 'whole model saved' not in str(e.value)
