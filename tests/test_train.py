import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from macrl_hub.config import TrainConfig, parse_duration
from macrl_hub.macrl import MACRL
from macrl_hub.precision import resolve_precision
from macrl_hub.train import TrainingDiverged, lr_at, read_log, train

TINY = '{"depth": 2, "embed_dim": 32, "num_heads": 2}'


@pytest.fixture(scope='module')
def small_folder(tmp_path_factory, cifar_test):
    """192 train / 64 test real CIFAR-10 images as an ImageFolder tree of PNGs."""
    root = tmp_path_factory.mktemp('cifar_small')
    for split, idx in (('train', range(0, 10000, 52)[:192]), ('test', range(26, 10000, 156)[:64])):
        for i in idx:  # strided: the archive is sorted by class, so every class appears
            c = cifar_test.classes[int(cifar_test.labels[i])]
            (root / split / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(cifar_test.images[i].permute(1, 2, 0).numpy()).save(root / split / c / f'{i}.png')
    return root


def _cfg(data, out, **kw):
    base = dict(model='macrl_vit_tiny_p4_cifar', model_args=TINY, data=str(data), out=str(out), epochs=2,
                batch_size=32, decoder_dim=32, proj_hidden_dim=64, proj_dim=16, bank_size=128, blr=1e-3,
                warmup_epochs=0.5, progress=False, log_every=1, threads=1,
                precision='fp32')  # runs compared to 1e-5 or bit for bit: never auto's bf16 on a bf16 CPU
    base.update(kw)
    return TrainConfig(**base)


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_train_writes_checkpoint_and_log(small_folder, tmp_path):
    import signal
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    res = train(_cfg(small_folder, tmp_path / 'run', max_steps=4, bank_size=512))
    assert res['reason'] == 'max_steps' and res['step'] == 4 and 'signal' not in res  # of a 12-step schedule
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # the caller's, back
    ck = torch.load(tmp_path / 'run' / 'checkpoint.pth', weights_only=True)  # no pickled objects
    assert ck['step'] == 4 and ck['arch'] == 'macrl_vit_tiny_p4_cifar' and ck['model_args']['depth'] == 2
    assert int(ck['model']['bank.filled']) == 4 * 64  # the memory bank is saved
    recs = [json.loads(l) for l in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()]
    steps = [r for r in recs if 'lr' in r]
    assert [r['step'] for r in steps] == [1, 2, 3, 4]
    for key in ('loss', 'loss_cl', 'loss_mim', 'lr', 'momentum', 'img_per_s'):
        assert all(math.isfinite(r[key]) for r in steps), key
    assert recs[-1]['event'] == 'end'


@pytest.mark.parametrize('extra', [{}, {'views': 'asymmetric'}, {'drop_path': 0.2}], ids=['default', 'asymmetric',
                                                                                       'drop_path'])
def test_resume_is_exact(small_folder, tmp_path, extra):
    """Also with views='asymmetric' (one masked view: its mask noise is (B, N), not (2B, N)) and with stochastic
    depth (drawn from the global RNG, which the trainer seeds per step)."""
    train(_cfg(small_folder, tmp_path / 'a', max_steps=8, **extra))
    train(_cfg(small_folder, tmp_path / 'b', max_steps=5, **extra))
    train(_cfg(small_folder, tmp_path / 'b', max_steps=3, resume='auto', **extra))
    a = torch.load(tmp_path / 'a' / 'checkpoint.pth', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'checkpoint.pth', weights_only=True)
    assert a['step'] == b['step'] == 8  # crosses an epoch boundary (6 steps/epoch)
    for k, v in a['model'].items():
        assert torch.equal(v, b['model'][k]), k
    la = [json.loads(l) for l in (tmp_path / 'a' / 'log.jsonl').read_text().splitlines() if '"lr"' in l]
    lb = [json.loads(l) for l in (tmp_path / 'b' / 'log.jsonl').read_text().splitlines() if '"lr"' in l]
    assert [r['loss'] for r in la] == [r['loss'] for r in lb]


def test_resume_after_a_kill_between_checkpoints_rewinds_the_log(small_folder, tmp_path):
    """An invocation that logged steps 6-7 and died before checkpointing them: the resumed invocation trains them
    again, and the log keeps one row per step, the resumed one (as an uninterrupted run would have written)."""
    train(_cfg(small_folder, tmp_path / 'a', max_steps=8))
    b = tmp_path / 'b'
    train(_cfg(small_folder, b, max_steps=5))
    shutil.copy(b / 'checkpoint.pth', tmp_path / 'step5.pth')
    train(_cfg(small_folder, b, max_steps=2, resume='auto'))  # "killed" after logging 6, 7 ...
    shutil.copy(tmp_path / 'step5.pth', b / 'checkpoint.pth')  # ... before checkpointing them
    stale = (b / 'log.jsonl').read_text()
    (b / 'log.jsonl').write_text(stale[:-20])  # and cut its last line short
    assert read_log(b / 'log.jsonl')[-1]['step'] == 7
    train(_cfg(small_folder, b, max_steps=3, resume='auto'))
    la = [r for r in read_log(tmp_path / 'a' / 'log.jsonl') if 'lr' in r]
    lb = [json.loads(l) for l in (b / 'log.jsonl').read_text().splitlines()]  # the file itself, not a reader's view
    assert [r['step'] for r in lb if 'lr' in r] == list(range(1, 9))
    assert [r['loss'] for r in lb if 'lr' in r] == [r['loss'] for r in la]
    assert [r['step'] for r in lb if r.get('event') == 'end'] == [5, 8]
    # a log written before the trainer rewound it on resume reads the same through read_log
    (tmp_path / 'legacy.jsonl').write_text(stale + ''.join(l + '\n' for l in (b / 'log.jsonl').read_text()
                                                             .splitlines() if json.loads(l).get('step', 0) > 5))
    assert [r['loss'] for r in read_log(tmp_path / 'legacy.jsonl') if 'lr' in r] == [r['loss'] for r in la]


def test_time_budget_stops_cleanly(small_folder, tmp_path):
    res = train(_cfg(small_folder, tmp_path / 'run', time_budget='0s'))
    assert res['reason'] == 'time_budget' and res['step'] == 1
    assert torch.load(tmp_path / 'run' / 'checkpoint.pth', weights_only=True)['step'] == 1


def test_nan_stops_and_keeps_last_good_checkpoint(small_folder, tmp_path, monkeypatch):
    train(_cfg(small_folder, tmp_path / 'run', max_steps=2))
    ck = tmp_path / 'run' / 'checkpoint.pth'
    before = _sha(ck)
    orig = MACRL.forward

    def poisoned(self, x1, x2, generator=None, mask_noise=None):
        out = orig(self, x1, x2, generator, mask_noise)
        out['loss'] = out['loss'] * float('nan')
        return out

    monkeypatch.setattr(MACRL, 'forward', poisoned)
    with pytest.raises(TrainingDiverged, match='loss is nan at step 2.*untouched'):
        train(_cfg(small_folder, tmp_path / 'run', max_steps=3, resume='auto', ckpt_every_min=0))
    assert _sha(ck) == before


def test_unwritable_out_fails_before_training(small_folder, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(OSError, match='not writable'):
        train(_cfg(small_folder, blocker / 'run'))


def test_bad_config_values(small_folder, tmp_path):
    with pytest.raises(ValueError, match='divisible'):
        train(_cfg(small_folder, tmp_path / 'r', batch_size=30, accum_steps=4))
    with pytest.raises(ValueError, match='unknown model'):
        train(_cfg(small_folder, tmp_path / 'r', model='vit_nonexistent', model_args=''))
    with pytest.raises(ValueError, match='bank-size 40 is smaller than the 64 keys'):
        train(_cfg(small_folder, tmp_path / 'r', bank_size=40))
    with pytest.raises(ValueError, match='JSON object'):
        train(_cfg(small_folder, tmp_path / 'r', model_args='depth=2'))
    with pytest.raises(ValueError, match='resume'):
        train(_cfg(small_folder, tmp_path / 'r1', max_steps=1))
        train(_cfg(small_folder, tmp_path / 'r1', max_steps=1, resume='auto', proj_dim=8))


def test_schedules_and_durations():
    assert parse_duration('90m') == 5400 and parse_duration('1h30m') == 5400 and parse_duration('45s') == 45
    assert parse_duration('3600') == 3600 and parse_duration('') == float('inf')
    with pytest.raises(ValueError, match='duration'):
        parse_duration('ninety')
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1) and lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert resolve_precision('fp32', torch.device('cpu')) == 'fp32'
    assert resolve_precision('auto', torch.device('cpu')) in ('fp32', 'bf16')
    with pytest.raises(ValueError, match='precision'):
        resolve_precision('int8', torch.device('cpu'))


def test_resume_from_the_command_line_takes_the_runs_own_settings(small_folder, tmp_path):
    from macrl_hub.train import main as train_main
    out = tmp_path / 'run'
    train(_cfg(small_folder, out, max_steps=2, alpha=0.5, crop_min=0.3))
    res = train_main(['--out', str(out), '--resume', 'auto', '--max-steps', '1', '--threads', '1', '--no-progress'])
    assert res['step'] == 3  # continued, not restarted
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert ck['config']['alpha'] == 0.5 and ck['config']['crop_min'] == 0.3 and ck['config']['model_args'] == TINY
    before = _sha(out / 'checkpoint.pth')
    with pytest.raises(ValueError, match=r"the run has --alpha 0.5, this command asks for 0.1"):
        train_main(['--out', str(out), '--resume', 'auto', '--alpha', '0.1', '--max-steps', '1'])
    with pytest.raises(ValueError, match='cannot resume: checkpoint has alpha=0.5'):  # the Python API checks too
        train(_cfg(small_folder, out, max_steps=1, resume='auto'))
    assert _sha(out / 'checkpoint.pth') == before


def test_fit_budget_sizes_the_schedule_once_and_resume_keeps_it(small_folder, tmp_path):
    """--fit-budget times FIT_STEPS steps in the same process and fixes --total-steps to what fits the budget; the
    fitted length is saved with the run, so a resumed invocation (another budget) continues the same schedule."""
    from macrl_hub.train import FIT_SKIP, FIT_STEPS
    with pytest.raises(ValueError, match='--fit-budget sizes the schedule to --time-budget'):
        train(_cfg(small_folder, tmp_path / 'none', fit_budget=True))
    out = tmp_path / 'run'
    train(_cfg(small_folder, out, epochs=1000, fit_budget=True, time_budget='40s', max_steps=FIT_SKIP + FIT_STEPS + 2))
    fits = [r for r in read_log(out / 'log.jsonl') if r.get('event') == 'fit_budget']
    assert len(fits) == 1 and fits[0]['step'] == FIT_SKIP + FIT_STEPS
    total = fits[0]['total_steps']
    # 97% of steps/s x the seconds left (40 s minus loading and the steps so far); 1000 epochs is only a cap
    elapsed = next(r['time'] for r in read_log(out / 'log.jsonl') if r.get('step') == fits[0]['step'] and 'lr' in r)
    expected = FIT_SKIP + FIT_STEPS + 0.97 * fits[0]['steps_per_s'] * (40 - elapsed)
    assert FIT_SKIP + FIT_STEPS < total < 1000 * 6 and total == pytest.approx(expected, rel=0.02)
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert ck['config']['total_steps'] == total
    steps = [r for r in read_log(out / 'log.jsonl') if 'lr' in r]
    assert steps[-1]['lr'] == pytest.approx(lr_at(steps[-1]['step'] - 1, total, fits[0]['warmup_steps'], 1e-3 * 32 / 256))
    train(_cfg(small_folder, out, epochs=1000, fit_budget=True, time_budget='1h', max_steps=2, resume='auto'))
    assert sum(r.get('event') == 'fit_budget' for r in read_log(out / 'log.jsonl')) == 1  # not fitted again
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert ck['config']['total_steps'] == total and ck['step'] == FIT_SKIP + FIT_STEPS + 4


def test_fit_budget_says_so_when_the_run_stops_before_it_could_fit(small_folder, tmp_path, capsys):
    """It used to end silently inside its warmup, on the unfitted 1000-epoch schedule."""
    from macrl_hub.train import FIT_SKIP, FIT_STEPS
    train(_cfg(small_folder, tmp_path / 'run', epochs=1000, fit_budget=True, time_budget='1h', max_steps=2))
    assert (f'--fit-budget: this invocation stopped at step 2, before the {FIT_SKIP} + {FIT_STEPS} steps it times; '
            'the schedule stays at 6000 steps') in capsys.readouterr().out


def test_final_knn_is_macrl_eval_knn_of_the_checkpoint(small_folder, tmp_path):
    from macrl_hub.evaluate import eval_knn, load_encoder
    out = tmp_path / 'run'
    res = train(_cfg(small_folder, out, max_steps=3, final_knn=True, precision='fp32'))
    rec = json.loads((out / 'knn.json').read_text())
    assert rec['eval'] == 'knn' and rec['n_train'] == 192 and rec['n_test'] == 64  # the whole splits
    assert res['knn']['knn_top1_k20'] == rec['knn_top1_k20']
    again = eval_knn(load_encoder(str(out / 'checkpoint.pth')), str(small_folder), precision='fp32')
    for k in ('knn_top1_k20', 'knn_top1_k200'):
        assert rec[k] == pytest.approx(again[k], abs=1e-9), k


def test_trainer_picks_explicit_attention_on_cpu_bf16(small_folder, tmp_path, capsys, monkeypatch):
    """The line says so, and the training steps run so: every attention module's fused_attn off in both branches."""
    monkeypatch.delenv('TIMM_FUSED_ATTN', raising=False)
    seen = []
    orig = MACRL.forward

    def spy(self, *args, **kwargs):
        seen.append({m.fused_attn for m in self.modules() if hasattr(m, 'fused_attn')})
        return orig(self, *args, **kwargs)
    monkeypatch.setattr(MACRL, 'forward', spy)
    train(_cfg(small_folder, tmp_path / 'bf16', max_steps=1, precision='bf16'))
    assert 'precision=bf16 attention=explicit' in capsys.readouterr().out
    assert seen == [{False}]
    train(_cfg(small_folder, tmp_path / 'fp32', max_steps=1, attention='explicit'))
    assert 'precision=fp32 attention=explicit' in capsys.readouterr().out
    train(_cfg(small_folder, tmp_path / 'fused', max_steps=1))  # fp32 on CPU: timm's fused kernel
    assert seen[1:] == [{False}, {True}]


@pytest.mark.parametrize('kw,want', [(dict(knn_every=0.5), [3, 6, 9, 12]),  # 6 steps/epoch: every 3 steps
                                     (dict(knn_every=1, total_steps=10), [6, 10])])  # and at the schedule's end
def test_online_knn_at_fractions_of_an_epoch_and_at_the_end(small_folder, tmp_path, kw, want):
    res = train(_cfg(small_folder, tmp_path / 'run', knn_train=48, knn_test=32, **kw))
    rows = [r for r in read_log(Path(res['checkpoint']).parent / 'log.jsonl') if 'knn_top1_k200' in r]
    assert [r['step'] for r in rows] == want
    assert all(0 <= r['monitor_s'] <= r['time'] for r in rows)
    assert all((r['knn_bank'], r['knn_held'], r['knn_held_from']) == (48, 32, 'test') for r in rows)  # on the card
    assert [r['monitor_s'] for r in rows] == sorted(r['monitor_s'] for r in rows)


def test_monitor_uses_held_out_training_images_when_test_classes_differ(small_folder, tmp_path, capsys,
                                                                        monkeypatch):
    """Labels are class indices: a test split with a class fewer shifted every later class by one, and the monitor
    scored (silently) against the wrong labels. Now it says so and holds out training images instead."""
    import shutil
    from macrl_hub import train as train_mod
    data = tmp_path / 'data'
    shutil.copytree(small_folder, data)
    shutil.rmtree(data / 'test' / 'truck')
    sets = []
    real = train_mod._knn_sets
    monkeypatch.setattr(train_mod, '_knn_sets', lambda cfg, tr, te: sets.append(te) or real(cfg, tr, te))
    train(_cfg(data, tmp_path / 'run', max_steps=3, knn_every=0.5, knn_train=48, knn_test=32))
    assert 'has other classes than train (only in train [\'truck\'], only in test []); the kNN monitor uses ' \
           'held-out training images instead' in capsys.readouterr().out
    assert sets == [None]


def test_unlabelled_images_in_one_folder_train_without_a_monitor(small_folder, tmp_path, capsys):
    """One class: any kNN scores 100% (it was logged, and put on cards, as 100.0)."""
    import shutil
    for f in list((small_folder / 'train').rglob('*.png'))[:64]:
        (tmp_path / 'data' / 'train' / 'images').mkdir(parents=True, exist_ok=True)
        shutil.copy(f, tmp_path / 'data' / 'train' / 'images' / f'{f.parent.name}_{f.name}')
    res = train(_cfg(tmp_path / 'data', tmp_path / 'run', max_steps=2, knn_every=0.5, knn_train=48, knn_test=32))
    out = capsys.readouterr().out
    assert 'has one class (images); the kNN monitor needs labels' in out
    # the start says how images are fed, and that CIFAR-10's statistics are the architecture's, not this data's
    from macrl_hub.data import channel_stats, load_dataset
    m, sd = channel_stats(load_dataset(str(tmp_path / 'data'), 'train', size=32, progress=False).images)
    assert ("input 32x32 (images of other sizes: shorter side resized, centre crop), normalised with mean (0.4914, "
            "0.4822, 0.4465) std (0.247, 0.2435, 0.2616) (CIFAR-10's, the architecture's; this data's own, for a new "
            f"run: --mean auto, i.e. --mean {' '.join(map(str, m))} --std {' '.join(map(str, sd))})") in out
    assert not [r for r in read_log(Path(res['checkpoint']).parent / 'log.jsonl') if 'knn_top1_k200' in r]


def test_monitor_time_adds_up_across_a_resume(small_folder, tmp_path):
    """`monitor_s` counts the whole run's monitor time, as `time` counts the whole run's: after a resume, `time -
    monitor_s` (the training minutes of paper_table's curves) keeps rising and never counts an earlier monitor."""
    kw = dict(knn_every=0.5, knn_train=48, knn_test=32)
    train(_cfg(small_folder, tmp_path / 'run', max_steps=6, **kw))
    res = train(_cfg(small_folder, tmp_path / 'run', resume='auto', **kw))
    rows = [r for r in read_log(Path(res['checkpoint']).parent / 'log.jsonl') if 'knn_top1_k200' in r]
    assert [r['step'] for r in rows] == [3, 6, 9, 12]
    assert rows[2]['monitor_s'] > rows[1]['monitor_s'] > 0  # not restarted at 0 by the second invocation
    assert rows[2]['monitor_s'] - rows[1]['monitor_s'] < rows[2]['time'] - rows[1]['time']


def test_drop_path_from_either_flag_and_a_conflict_named():
    """--model-args '{"drop_path_rate": 0.1}' (timm's own keyword) works like --drop-path 0.1 (it used to fail with
    'got multiple values for keyword argument'); the two disagreeing is an error naming both."""
    from macrl_hub.config import TrainConfig
    from macrl_hub.train import build_macrl
    for cfg in (TrainConfig(model_args='{"depth": 2, "drop_path_rate": 0.1}', bank_size=64),
                TrainConfig(model_args='{"depth": 2}', drop_path=0.1, bank_size=64)):
        assert build_macrl(cfg).encoder.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)
    with pytest.raises(ValueError, match='--drop-path 0.2 and --model-args drop_path_rate 0.1 disagree'):
        build_macrl(TrainConfig(model_args='{"depth": 2, "drop_path_rate": 0.1}', drop_path=0.2))
    with pytest.raises(ValueError, match='sets num_classes'):
        build_macrl(TrainConfig(model_args='{"depth": 2, "num_classes": 10}'))


def test_a_bf16_or_fp32_run_resumes_in_fp16(small_folder, tmp_path):
    """precision may change on resume; a disabled scaler saves {}, which an fp16 run's scaler must not load."""
    train(_cfg(small_folder, tmp_path / 'run', max_steps=1))
    res = train(_cfg(small_folder, tmp_path / 'run', max_steps=1, resume='auto', precision='fp16'))
    assert res['step'] == 2
    ck = torch.load(tmp_path / 'run' / 'checkpoint.pth', weights_only=True)
    assert ck['precision'] == 'fp16' and ck['scaler'].get('scale', 0) > 0  # an enabled scaler ran the fp16 step


def test_mean_std_are_trained_with_saved_and_followed_by_eval_viz_and_export(small_folder, tmp_path, monkeypatch):
    """`--mean/--std` normalise the training views; the checkpoint records them, so `macrl eval`, `viz` and the
    exported config.json (what plain timm preprocesses with) normalise the same way; a name macrl_hub declares with
    other statistics is refused, since the plugin would load it with its own."""
    import timm
    from macrl_hub import train as train_mod
    from macrl_hub.evaluate import load_encoder
    from macrl_hub.export import export
    from macrl_hub.features import data_config
    from macrl_hub.viz import load_macrl
    seen = []
    real = train_mod.PairAugment
    monkeypatch.setattr(train_mod, 'PairAugment', lambda *a, **k: seen.append(a[1:3]) or real(*a, **k))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = tmp_path / 'run'
    train(_cfg(small_folder, out, max_steps=2, mean=mean, std=std))
    assert seen == [(mean, std)]
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert ck['normalization'] == {'mean': list(mean), 'std': list(std)}
    assert data_config(load_encoder(str(out / 'checkpoint.pth')))[1:] == (mean, std)
    assert data_config(load_encoder(str(out / 'checkpoint.pth'), pretrained=False))[1:] == (mean, std)
    assert data_config(load_macrl(str(out / 'checkpoint.pth')).encoder)[1:] == (mean, std)
    folder = export(str(out / 'checkpoint.pth'), 'macrl_vit_tiny_p4_cifar.mydata', str(tmp_path / 'cards'))
    plain = timm.data.resolve_data_config({}, model=timm.create_model(f'local-dir:{folder}', pretrained=True))
    assert (tuple(plain['mean']), tuple(plain['std']), tuple(plain['input_size'])) == (mean, std, (3, 32, 32))
    assert 'mean (0.5, 0.4, 0.3) and std (0.2, 0.25, 0.3)' in (folder / 'README.md').read_text()
    with pytest.raises(ValueError, match=r'--mean 0.4914 0.4822 0.4465 --std 0.247 0.2435 0.2616'):
        export(str(out / 'checkpoint.pth'), 'macrl_vit_tiny_p4_cifar.cifar10', str(tmp_path / 'cards'))
    assert not (tmp_path / 'cards' / 'macrl_vit_tiny_p4_cifar.cifar10').exists()
    default = tmp_path / 'default'  # no flags: the architecture's CIFAR-10 statistics, refused for .cifar100
    train(_cfg(small_folder, default, max_steps=1))
    with pytest.raises(ValueError, match='cifar100 is declared by macrl_hub with another preprocessing'):
        export(str(default / 'checkpoint.pth'), 'macrl_vit_tiny_p4_cifar.cifar100', str(tmp_path / 'cards'))
    export(str(default / 'checkpoint.pth'), 'macrl_vit_tiny_p4_cifar.cifar10', str(tmp_path / 'cards'))


def test_a_resumed_run_keeps_its_normalisation(small_folder, tmp_path):
    """--mean/--std on resume are compared by what they resolve to: the architecture's own values given explicitly
    continue the run; others are refused, naming both; a checkpoint older than the record counts as trained with
    its architecture's cfg, so new flags cannot slip in half way."""
    from macrl_hub.models import CIFAR10_MEAN, CIFAR10_STD
    out = tmp_path / 'run'
    train(_cfg(small_folder, out, max_steps=1))
    train(_cfg(small_folder, out, max_steps=1, resume='auto', mean=CIFAR10_MEAN, std=CIFAR10_STD))
    assert torch.load(out / 'checkpoint.pth', weights_only=True)['step'] == 2
    with pytest.raises(ValueError, match=r'trained with --mean 0.4914 0.4822 0.4465, this command asks for '
                                         r'--mean 0.5 0.5 0.5'):
        train(_cfg(small_folder, out, max_steps=1, resume='auto', mean=(0.5, 0.5, 0.5)))
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)  # as written before the normalisation record
    del ck['normalization'], ck['config']['mean'], ck['config']['std']
    torch.save(ck, out / 'checkpoint.pth')
    with pytest.raises(ValueError, match='--std 0.247 0.2435 0.2616, this command asks for --std 0.5 0.5 0.5'):
        train(_cfg(small_folder, out, max_steps=1, resume='auto', std=(0.5, 0.5, 0.5)))
    train(_cfg(small_folder, out, max_steps=1, resume='auto'))
    assert torch.load(out / 'checkpoint.pth', weights_only=True)['normalization']['mean'] == list(CIFAR10_MEAN)


def test_mean_auto_normalises_with_the_training_images_own_statistics(small_folder, tmp_path, monkeypatch, capsys):
    """`--mean auto` (alone or with `--std auto`): the training images' own mean/std, computed before the first step,
    are what the views are normalised with and what the checkpoint and config.json record, as numbers; a resume
    with or without the flag continues the run (computed again from the same data, it matches the record)."""
    from macrl_hub import train as train_mod
    from macrl_hub.data import channel_stats, load_dataset
    seen = []
    real = train_mod.PairAugment
    monkeypatch.setattr(train_mod, 'PairAugment', lambda *a, **k: seen.append(a[1:3]) or real(*a, **k))
    mean, std = channel_stats(load_dataset(str(small_folder), 'train', size=32, progress=False).images)
    assert mean != (0.4914, 0.4822, 0.4465)  # this subset's own statistics are not the architecture's
    out = tmp_path / 'run'
    train(_cfg(small_folder, out, max_steps=1, mean='auto'))
    assert seen == [(mean, std)]
    assert "normalised with mean %s std %s (this data's own: --mean auto)" % (mean, std) in capsys.readouterr().out
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert ck['normalization'] == {'mean': list(mean), 'std': list(std)}
    assert tuple(json.loads((out / 'config.json').read_text())['mean']) == mean
    from macrl_hub.train import main
    flags = ['--resume', 'auto', '--max-steps', '1', '--threads', '1', '--no-progress']
    main(['--out', str(out), *flags, '--mean', 'auto', '--std', 'auto'])
    main(['--out', str(out), *flags, '--std', 'auto'])
    main(['--out', str(out), *flags])
    assert torch.load(out / 'checkpoint.pth', weights_only=True)['step'] == 4
    assert seen[1:] == [(mean, std)] * 3
    (out / 'checkpoint.pth').unlink()  # a run that left only its config.json starts again, computing them again
    main(['--out', str(out), *flags, '--mean', 'auto'])
    assert seen[4:] == [(mean, std)]
    train(_cfg(small_folder, tmp_path / 'other', max_steps=1))  # trained with the architecture's statistics:
    with pytest.raises(ValueError, match='trained with --mean 0.4914 0.4822 0.4465'):  # auto cannot switch them
        main(['--out', str(tmp_path / 'other'), *flags, '--mean', 'auto'])


def test_mean_auto_mixed_with_numbers_or_on_flat_colours_is_refused(tmp_path):
    import argparse
    from macrl_hub.config import add_dataclass_args, config_from_args
    p = argparse.ArgumentParser()
    add_dataclass_args(p)
    assert config_from_args(p.parse_args(['--mean', 'auto'])).mean == ['auto']
    with pytest.raises(SystemExit):
        p.parse_args(['--mean', 'mine'])
    with pytest.raises(ValueError, match='--mean auto takes no numbers'):
        train(_cfg(tmp_path / 'no-data', tmp_path / 'run', mean=['auto', 0.5, 0.5]))
    with pytest.raises(ValueError, match=r'--mean auto computes mean and std from the data; --std 0.2 0.2 0.2 '
                                         r'contradicts it'):
        train(_cfg(tmp_path / 'no-data', tmp_path / 'run', mean='auto', std=(0.2, 0.2, 0.2)))
    assert not (tmp_path / 'run').exists()  # refused before anything was made
    for c in range(2):  # every image the same grey in every channel
        (tmp_path / 'grey' / 'train' / f'c{c}').mkdir(parents=True)
        for i in range(20):
            Image.new('RGB', (32, 32), (128, 128, 128)).save(tmp_path / 'grey' / 'train' / f'c{c}' / f'{i}.png')
    with pytest.raises(ValueError, match='has no variation in channel 0'):
        train(_cfg(tmp_path / 'grey', tmp_path / 'run', std='auto', knn_every=0))


def test_mean_without_std_is_refused_for_a_new_run(tmp_path):
    with pytest.raises(ValueError, match='--mean was given without --std: give both'):
        train(_cfg(tmp_path / 'no-data', tmp_path / 'run', mean=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match='--std was given without --mean'):
        train(_cfg(tmp_path / 'no-data', tmp_path / 'run', std=(0.2, 0.2, 0.2)))
    assert not (tmp_path / 'run').exists()  # refused before anything was made


def test_a_failed_start_leaves_no_empty_out_folder(tmp_path):
    from macrl_hub.data import DataError
    with pytest.raises(DataError):
        train(_cfg(tmp_path / 'no-such-data', tmp_path / 'runs' / 'new'))
    assert not (tmp_path / 'runs' / 'new').exists()
    (tmp_path / 'mine').mkdir()  # a folder the user made stays, empty or not
    with pytest.raises(DataError):
        train(_cfg(tmp_path / 'no-such-data', tmp_path / 'mine'))
    assert (tmp_path / 'mine').is_dir()


def test_mean_std_flags_parse_and_are_checked():
    import argparse
    from macrl_hub.config import add_dataclass_args, config_from_args
    from macrl_hub.train import build_macrl
    p = argparse.ArgumentParser()
    add_dataclass_args(p)
    cfg = config_from_args(p.parse_args(['--mean', '0.5', '0.5', '0.5', '--std', '0.2', '0.2', '0.2',
                                         '--blur-p', '1', '0.1', '--model-args', TINY]))
    assert cfg.mean == [0.5, 0.5, 0.5] and cfg.blur_p == [1.0, 0.1]
    assert build_macrl(cfg).encoder.pretrained_cfg['std'] == (0.2, 0.2, 0.2)
    def build(*flags):
        return build_macrl(config_from_args(p.parse_args([*flags, '--model-args', TINY])))
    with pytest.raises(ValueError, match=r'--mean needs one value per input channel \(3\)'):
        build('--mean', '0.5', '--std', '0.2', '0.2', '0.2')
    with pytest.raises(ValueError, match='--std must be positive'):
        build('--mean', '0.5', '0.5', '0.5', '--std', '0', '1', '1')
    with pytest.raises(ValueError, match=r'--mean is on the 0-1 scale .* e.g. \[0.4706, 0.4314, 0.3922\]'):
        build('--mean', '120', '110', '100', '--std', '0.2', '0.2', '0.2')  # 0-255 statistics
    with pytest.raises(ValueError, match='--std is on the 0-1 scale'):
        build('--mean', '0.5', '0.5', '0.5', '--std', '60', '60', '60')


def _signal_at_step(monkeypatch, at: int, *signums: int) -> None:
    """Send `signums` to this process at the end of optimizer step `at` (after its EMA update)."""
    import os
    real, calls = MACRL.update_momentum, []

    def update(self, m):
        real(self, m)
        calls.append(1)
        if len(calls) == at:
            for s in signums:
                os.kill(os.getpid(), s)
    monkeypatch.setattr(MACRL, 'update_momentum', update)


def test_sigterm_finishes_the_step_saves_it_and_restores_the_handlers(small_folder, tmp_path, monkeypatch):
    import signal
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    _signal_at_step(monkeypatch, 3, signal.SIGTERM)
    from macrl_hub.train import TrainingInterrupted
    run = tmp_path / 'run'
    with pytest.raises(TrainingInterrupted) as e:  # a caller looping over runs stops too, never scores this one
        train(_cfg(small_folder, run, max_steps=8, ckpt_every_min=100, ckpt_every_epochs=0))
    res = e.value.result
    assert e.value.signum == signal.SIGTERM and res['reason'] == 'interrupted' and res['step'] == 3
    assert torch.load(run / 'checkpoint.pth', weights_only=True)['step'] == 3  # the only checkpoint: the signal's
    end = read_log(run / 'log.jsonl')[-1]
    assert end['event'] == 'end' and end['reason'] == 'interrupted' and end['signal'] == 'SIGTERM'
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_second_signal_stops_at_once(small_folder, tmp_path, monkeypatch):
    import signal
    before = signal.getsignal(signal.SIGINT)
    _signal_at_step(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(small_folder, tmp_path / 'run', max_steps=8, ckpt_every_min=100, ckpt_every_epochs=0))
    assert not (tmp_path / 'run' / 'checkpoint.pth').exists()  # stopped mid-step 2, before any save
    assert signal.getsignal(signal.SIGINT) is before


def test_resume_auto_before_the_first_checkpoint_restarts_that_run_not_a_default_one(small_folder, tmp_path):
    from macrl_hub.train import main
    run = tmp_path / 'run'
    flags = ['--model', 'macrl_vit_tiny_p4_cifar', '--model-args', TINY, '--data', str(small_folder), '--epochs', '2',
             '--batch-size', '32', '--decoder-dim', '32', '--proj-hidden-dim', '64', '--proj-dim', '16',
             '--bank-size', '128', '--alpha', '0.5', '--mean', '0.5', '0.5', '0.5', '--std', '0.2', '0.2', '0.2',
             '--no-progress', '--log-every', '1', '--threads', '1', '--precision', 'fp32']
    main(flags + ['--out', str(run), '--max-steps', '2'])
    first = torch.load(run / 'checkpoint.pth', weights_only=True)
    saved = first['config']
    (run / 'checkpoint.pth').unlink()  # as if killed before its first checkpoint: config.json and log rows remain
    with pytest.raises(ValueError, match='the run has --alpha 0.5, this command asks for 0.9'):
        main(['--out', str(run), '--resume', 'auto', '--alpha', '0.9'])
    with pytest.raises(ValueError, match=r'the run has --mean \[0.5, 0.5, 0.5\], this command asks for \[0.4'):
        main(['--out', str(run), '--resume', 'auto', '--mean', '0.4', '0.4', '0.4'])
    old_log = (run / 'log.jsonl').read_text()
    main(['--out', str(run), '--resume', 'auto', '--max-steps', '2'])
    ck = torch.load(run / 'checkpoint.pth', weights_only=True)
    from macrl_hub.train import PER_INVOCATION, _clashes
    assert ck['step'] == 2 and not _clashes(saved, ck['config'])
    assert {k: v for k, v in ck['config'].items() if k not in PER_INVOCATION} == \
        {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k not in PER_INVOCATION}
    assert all(torch.equal(v, first['model'][k]) for k, v in ck['model'].items())  # the same run, from step 0
    steps = [r['step'] for r in read_log(run / 'log.jsonl') if 'img_per_s' in r]
    assert steps == [1, 2]  # the restarted run's rows only
    raw = [json.loads(line) for line in (run / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in raw if 'img_per_s' in r] == [1, 2] and sum(r.get('event') == 'end' for r in raw) == 1
    assert [p.read_text() for p in run.glob('log-before-*.jsonl')] == [old_log]  # the first log, kept aside


def test_model_args_compare_by_value_on_resume():
    from macrl_hub.train import _clashes
    assert _clashes({'model_args': '{"depth": 2, "img_size": 64}'}, {'model_args': '{"img_size":64,"depth":2}'}) == {}
    assert 'model_args' in _clashes({'model_args': '{"depth": 2}'}, {'model_args': '{"depth": 3}'})
    assert 'model_args' in _clashes({'model_args': ''}, {'model_args': '{"depth": 3}'})


def test_knn_monitor_holds_out_images_the_bank_does_not_hold():
    from macrl_hub.data import ImageTensors
    from macrl_hub.train import _knn_sets
    n = 100
    data = ImageTensors(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone(),
                        torch.arange(n), ['c'])
    cfg = TrainConfig(knn_train=5000, knn_test=2000)
    bank, held = _knn_sets(cfg, data, None)  # a train-only folder
    assert len(held) == 50 and len(bank) == 50
    assert not set(bank.labels.tolist()) & set(held.labels.tolist())
    bank, held = _knn_sets(TrainConfig(knn_train=30, knn_test=20), data, None)
    assert (len(bank), len(held)) == (30, 20) and not set(bank.labels.tolist()) & set(held.labels.tolist())
    test = ImageTensors(data.images[:10], torch.arange(10) + 1000, ['c'])
    bank, held = _knn_sets(cfg, data, test)  # a test split: all of it is held out, the bank from train
    assert len(bank) == n and held.labels.min() >= 1000


def test_an_ignored_signal_stays_ignored(small_folder, tmp_path, monkeypatch):
    """A job started with SIGTERM ignored (nohup-style) keeps running through one, to the end of its steps."""
    import signal
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        _signal_at_step(monkeypatch, 1, signal.SIGTERM)
        res = train(_cfg(small_folder, tmp_path / 'run', max_steps=3))
        assert res['step'] == 3 and res['reason'] == 'max_steps'
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_split_larger_than_a_quarter_of_free_gpu_memory_stays_in_host_memory(monkeypatch):
    """CIFAR-sized sets are moved to the GPU (batches gathered and augmented there); a larger one would take the
    memory the model and activations need (a CUDA out-of-memory at the start), so it stays on the host."""
    from macrl_hub.train import images_fit_on_gpu
    images = torch.zeros(1000, 3, 32, 32, dtype=torch.uint8)  # 3,072,000 bytes
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device=None: (4 * 3_072_000, 80 * 2 ** 30))
    assert images_fit_on_gpu(images, torch.device('cuda'))
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device=None: (4 * 3_072_000 - 4, 80 * 2 ** 30))
    assert not images_fit_on_gpu(images, torch.device('cuda'))


def test_the_trainer_feeds_its_crop_blur_and_momentum_settings_to_the_algorithm(small_folder, tmp_path, monkeypatch):
    """--crop-min, --blur-p and --solarize-p reach the views' augmentation, and the EMA gets each step's cosine
    momentum (the config and the log alone would not show either going astray)."""
    from macrl_hub import train as train_mod
    from macrl_hub.macrl import MACRL
    from macrl_hub.momentum import cosine_momentum
    made, used = [], []
    real = train_mod.PairAugment
    monkeypatch.setattr(train_mod, 'PairAugment', lambda *a, **k: made.append(k) or real(*a, **k))
    real_update = MACRL.update_momentum
    monkeypatch.setattr(MACRL, 'update_momentum', lambda self, m: used.append(m) or real_update(self, m))
    train(_cfg(small_folder, tmp_path / 'run', max_steps=4, crop_min=0.08, blur_p=(1.0, 0.1), solarize_p=0.3,
               momentum=0.9))
    assert made == [dict(crop_scale=(0.08, 1.0), blur_p=(1.0, 0.1), solarize_p=0.3)]
    total = 2 * (192 // 32)  # epochs x steps per epoch
    assert used == pytest.approx([cosine_momentum(s, total, 0.9) for s in range(4)])


def test_a_paper_recipe_run_from_before_pos_embed_resumes_as_it_was(small_folder, tmp_path):
    """A checkpoint written before --pos-embed existed trained a learned position embedding; resumed with the same
    command (`--recipe paper`, which now means 'sincos'), it continues with its learned one (it failed with torch's
    'parameter group doesn't match' as the frozen embedding left the optimizer)."""
    from macrl_hub.train import main
    out = tmp_path / 'run'
    flags = ['--recipe', 'paper', '--model', 'macrl_vit_tiny_p4_cifar', '--model-args', TINY, '--data',
             str(small_folder), '--batch-size', '32', '--bank-size', '64', '--threads', '1', '--no-progress',
             '--precision', 'fp32', '--max-steps', '1', '--out', str(out), '--knn-every', '0']
    main(flags + ['--pos-embed', 'learned'])
    ck = torch.load(out / 'checkpoint.pth', weights_only=False)
    del ck['config']['pos_embed'], ck['macrl']['pos_embed']  # as written before the option
    torch.save(ck, out / 'checkpoint.pth')
    res = main(flags + ['--resume', 'auto'])
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert res['step'] == 2 and ck['config']['pos_embed'] == 'learned'
    from timm.layers import build_sincos2d_pos_embed
    pe = ck['model']['encoder.pos_embed']
    assert not torch.equal(pe[0], build_sincos2d_pos_embed([8, 8], pe.shape[-1]))  # still its own, learned


def test_a_bank_that_holds_many_keys_of_each_image_is_pointed_out(small_folder, tmp_path, capsys):
    """192 images, 2 keys each per epoch: a bank of 512 holds 1.3 epochs of keys, so every image meets its own
    earlier keys (~2) among its negatives when it comes back; 128 (a third of an epoch) is not pointed out."""
    train(_cfg(small_folder, tmp_path / 'big', max_steps=1, bank_size=512))
    out = capsys.readouterr().out
    assert 'holds 1.3 epochs of keys' in out and 'each image meets ~2 of its own earlier keys' in out
    assert 'half an epoch, --bank-size 192,' in out
    train(_cfg(small_folder, tmp_path / 'small', max_steps=1, bank_size=128))
    assert 'of its own earlier keys' not in capsys.readouterr().out


@pytest.mark.parametrize('kw,msg', [
    (dict(beta2=1.0), r'--beta2 must be in \[0, 1\), got 1.0'),     # open upper bound
    (dict(crop_min=0.0), r'--crop-min must be in \(0, 1\], got 0.0'),  # open lower bound
    (dict(blur_p=(0.5, 2.0)), r'--blur-p must be in \[0, 1\] .*got 0.5 2.0'),  # each value of a pair
    (dict(temperature=0.0), r'--temperature must be > 0, got 0.0'),
    (dict(alpha=float('nan')), r'--alpha must be >= 0, got nan')])
def test_config_refuses_values_outside_the_range_its_message_states(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)
    TrainConfig(beta2=0.0, crop_min=1.0, blur_p=(0.0, 1.0), temperature=1e-3, alpha=0.0, ckpt_every_min=0)  # bounds


@pytest.mark.parametrize('clip', [0.0, 0.05])
def test_clip_grad_bounds_the_gradients_the_optimizer_steps_with(small_folder, tmp_path, clip):
    """--clip-grad c: every AdamW step sees gradients of global L2 norm <= c, and the log records the norm before
    clipping (above c here: an untrained model's gradients are larger); without it they are left alone."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    norms = []

    def hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g['params'] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
    handle = register_optimizer_step_pre_hook(hook)
    try:
        train(_cfg(small_folder, tmp_path / 'run', max_steps=3, clip_grad=clip))
    finally:
        handle.remove()
    rows = [r for r in read_log(tmp_path / 'run' / 'log.jsonl') if 'loss' in r and 'lr' in r]
    assert len(norms) == 3 and len(rows) == 3
    if clip:
        assert max(norms) <= clip * (1 + 1e-5), norms
        assert all(r['grad_norm'] > clip for r in rows), rows  # so the bound above was clipping's doing
    else:
        assert min(norms) > 0.05 and all('grad_norm' not in r for r in rows), norms


def test_num_train_trains_on_a_subset_of_that_many_images(small_folder, tmp_path):
    """--num-train 64 of the folder's 192 images: 64 // batch 32 = 2 steps an epoch (6 with every image), and the
    checkpoint records 64 images, so a resume with another --num-train is refused."""
    result = train(_cfg(small_folder, tmp_path / 'run', epochs=1, num_train=64))
    assert result['step'] == 2
    assert torch.load(tmp_path / 'run' / 'checkpoint.pth', weights_only=True)['data']['n_images'] == 64
    train(_cfg(small_folder, tmp_path / 'all', epochs=1, max_steps=1))
    assert [r['epoch'] for r in read_log(tmp_path / 'all' / 'log.jsonl') if 'lr' in r] == [1 / 6]
    with pytest.raises(ValueError, match='num_train=64, this run asks for 96'):
        train(_cfg(small_folder, tmp_path / 'run', epochs=1, num_train=96, resume='auto'))
