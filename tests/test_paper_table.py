"""benchmarks/paper_table.py's bookkeeping (not its training): the table for an ablation of any TrainConfig field,
rows written before the table is rendered, and a finished scratch run evaluated instead of retrained."""
import argparse
import json
from pathlib import Path

import pytest

from conftest import load_script


@pytest.fixture(scope='module')
def pt():
    return load_script('benchmarks/paper_table.py')


def _row(name, **kw):
    return dict(dict(name=name, epochs=1.0, train_min=1.0, pflops=0.1, hardware='test', knn20=30.0, knn200=31.0,
                     linear=40.0, flops_per_img=3e9, curve=[dict(minutes=1.0, pflops=0.1, knn200=31.0)]), **kw)


@pytest.mark.parametrize('key,default', [('mask_ratio', '0.75'), ('rec_on', 'masked'), ('alpha', '0.1')])
def test_ablation_of_any_field_renders_with_its_default(pt, tmp_path, key, default):
    """mask_ratio and rec_on have no flag of their own in paper_table.py (their default comes from TrainConfig)."""
    args = argparse.Namespace(model='m', batch_size=128, blr=1e-3, epochs=1.0, equal='flops', seeds=[0],
                              probe_epochs=50, eval_train=100, eval_test=100)
    settings = dict(base=dict(bank_size=16384, alpha=0.1), n_train=1000)
    ablation = [(key, [_row(f'macrl_{key}=x', value='x')])]
    pt.write_outputs(tmp_path, args, {'macrl': [_row('macrl')]}, ablation, settings, 'cmd', 0.0)
    md = (tmp_path / 'paper_table.md').read_text()
    assert f'## Ablation: {key}' in md and f'| {default} (default) |' in md and '| x |' in md
    assert json.loads((tmp_path / 'paper_table.json').read_text())['ablations'][0][0] == key


def test_a_finished_scratch_run_is_reused_only_with_the_same_settings(pt, tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'checkpoint.pth').write_bytes(b'x')
    cfg = dict(objective='macrl', mask_ratio=0.5, total_steps=10)
    (run / 'config.json').write_text(json.dumps(dict(cfg, out=str(run), seed=0)))
    end = dict(event='end', reason='done', step=10, train_time=60.0, checkpoint=str(run / 'checkpoint.pth'))
    (run / 'log.jsonl').write_text(json.dumps(dict(step=10, loss=1.0)) + '\n' + json.dumps(end) + '\n')
    assert pt._finished_run(run, cfg)['train_time'] == 60.0
    assert pt._finished_run(run, dict(cfg, mask_ratio=0.75)) is None  # other settings: retrain
    (run / 'log.jsonl').write_text(json.dumps(dict(end, reason='time_budget', step=7)) + '\n')
    assert pt._finished_run(run, cfg) is None  # stopped before the end of its schedule
    assert pt._finished_run(tmp_path / 'missing', cfg) is None


def test_an_interrupted_scratch_run_resumes_only_with_the_same_settings(pt, tmp_path, monkeypatch):
    """A session that ends mid-row loses at most the steps since the run's last checkpoint, not the row."""
    calls = []

    def fake_train(tc):
        calls.append((tc.resume, (tmp_path / 'runs' / 'r' / 'checkpoint.pth').is_file()))
        Path(tc.out).mkdir(parents=True, exist_ok=True)
        (Path(tc.out) / 'log.jsonl').write_text('')
        return dict(step=tc.total_steps, checkpoint='ck', train_time=120.0)

    monkeypatch.setattr(pt, 'train', fake_train)
    monkeypatch.setattr(pt, 'load_encoder', lambda ck: None)
    monkeypatch.setattr(pt, 'evaluate', lambda enc, data, splits, epochs: dict(knn20=1.0, knn200=2.0, linear=3.0))
    args = argparse.Namespace(runs_dir='', batch_size=10, model='m', model_args='', data='d', probe_epochs=1)
    cfg = dict(objective='macrl', seed=0, total_steps=10)
    run = tmp_path / 'runs' / 'r'
    run.mkdir(parents=True)
    (run / 'checkpoint.pth').write_bytes(b'x')
    (run / 'config.json').write_text(json.dumps(dict(cfg, out=str(run))))
    row = pt.run_one(dict(name='r', cfg=cfg, flops_per_img=1e9), args, tmp_path, None, 100)
    assert calls == [('auto', True)] and row['train_min'] == 2.0  # minutes of all invocations (train_time)
    pt.run_one(dict(name='r', cfg=dict(cfg, seed=1), flops_per_img=1e9), args, tmp_path, None, 100)
    assert calls[1] == ('', False)  # other settings: the scratch run is removed and trained anew


def test_curves_show_each_method_as_the_mean_of_its_seeds(pt):
    """One line per method, the point-by-point mean over its seeds (the seeds kept apart, for the faint lines);
    a row with one seed and each ablation as they are; the untrained row (no curve) left out."""
    curve = lambda *ks: [dict(minutes=m + 1.0, pflops=0.1 * (m + 1), knn200=k) for m, k in enumerate(ks)]  # noqa
    rows = {'random': [_row('random', curve=[])],
            'macrl': [_row('macrl', curve=curve(20.0, 30.0)), _row('macrl (seed 1)', curve=curve(22.0, 34.0))],
            'moco': [_row('moco', curve=curve(25.0))]}
    ablations = [('alpha', [_row('macrl_alpha=1.0', curve=curve(26.0, 36.0))])]
    series, seeds = pt.curve_series(rows, ablations, 'pflops')
    assert list(series) == ['macrl (mean of 2 seeds)', 'moco', 'macrl_alpha=1.0']
    assert series['macrl (mean of 2 seeds)'] == pytest.approx([(0.1, 21.0), (0.2, 32.0)])
    assert seeds == {'macrl (mean of 2 seeds)': [[(0.1, 20.0), (0.2, 30.0)], [(0.1, 22.0), (0.2, 34.0)]]}
    assert series['moco'] == [(0.1, 25.0)] and series['macrl_alpha=1.0'] == [(0.1, 26.0), (0.2, 36.0)]


def test_a_batch_size_ablation_gets_the_same_compute(pt):
    """Equal FLOPs holds for an ablation of the batch itself: twice the batch, half the steps (the steps used to be
    counted at the table's --batch-size, giving such a row twice MACRL's compute)."""
    from macrl_hub.train import step_flops
    from macrl_hub.config import TrainConfig
    args = argparse.Namespace(batch_size=128, epochs=1.0, equal='flops', warmup_epochs=0.25)
    base = dict(model='macrl_vit_tiny_p4_cifar', model_args='{"depth": 1}', batch_size=128, objective='macrl')
    ref = step_flops(TrainConfig(**base))
    main = pt.plan('macrl', {}, base, args, 12800, ref)
    big = pt.plan('macrl_batch_size=256', {'batch_size': 256}, base, args, 12800, ref)
    assert main['steps'] == 100 and big['steps'] == 50
    assert big['steps'] * 256 * big['flops_per_img'] == pytest.approx(main['steps'] * 128 * main['flops_per_img'])


def _table(folder: Path, epochs: float, rows: dict, ablations=()):
    folder.mkdir(parents=True)
    folder.joinpath('paper_table.json').write_text(json.dumps(dict(
        settings=dict(epochs=epochs), command='cmd',
        rows={k: [dict(pflops=0.0 if k == 'random' else 0.15 * epochs, knn200=v[0], linear=v[1],
                       plan_cfg=dict(seed=s)) for s, v in enumerate(vs)] for k, vs in rows.items()},
        ablations=[(key, [dict(pflops=0.15 * epochs, knn200=v[0], linear=v[1], plan_cfg={'seed': s, key: val})
                          for s, val, v in runs]) for key, runs in ablations])))
    return folder


def test_paper_summary_joins_seeds_across_folders_and_takes_differences_per_seed(tmp_path):
    """A seed trained by a later invocation in another folder joins its row; the first folder wins where two hold
    the same row and seed; an ablation is compared with MACRL's defaults at its own budget and seed; rows not yet
    evaluated are left out."""
    ps = load_script('benchmarks/paper_summary.py')
    a = _table(tmp_path / 'e1', 1.0, {'random': [(28.0, 38.0)], 'macrl': [(30.0, 41.0), (31.0, 42.0)]},
               [('alpha', [(0, 1.0, (33.0, 40.0))]), ('bank_size', [(0, 65536, (None, None))])])
    b = _table(tmp_path / 'e1_seed1', 1.0, {'random': [(99.0, 99.0)]}, [('alpha', [(1, 1.0, (32.0, 41.5))])])
    c = _table(tmp_path / 'e2', 2.0, {'macrl': [(34.0, 44.0)]}, [('alpha', [(0, 1.0, (35.5, 43.0))])])
    text = ps.summary([a, b, c])
    assert '| row | 1 MACRL-epoch (0.15 PFLOP) | 2 MACRL-epochs (0.30 PFLOP) |' in text
    assert '| random init | 28.00 (seed 0) |  |' in text  # not e1_seed1's 99 for seed 0
    assert '| MACRL, alpha=1.0 | 32.50 (33.00 / 32.00) | 35.50 (seed 0) |' in text  # kNN, seeds joined
    assert '| MACRL, alpha=1.0 | 40.75 (40.00 / 41.50) | 43.00 (seed 0) |' in text  # linear
    assert '| alpha=1.0 | +3.00 / -1.00 (seed 0) ; +1.00 / -0.50 (seed 1) | +1.50 / -1.00 (seed 0) |' in text
    assert 'bank_size' not in text


def test_paper_summary_refuses_to_join_tables_of_another_protocol(tmp_path):
    """Two tables of one budget but other data (or model, batch, evaluation...) are not the same measurement: a
    6,400-image table beside a full one is refused by name, not averaged into its rows."""
    ps = load_script('benchmarks/paper_summary.py')
    full = _table(tmp_path / 'full', 1.0, {'macrl': [(30.0, 41.0)]})
    small = _table(tmp_path / 'small', 1.0, {'macrl': [(20.0, 30.0), (21.0, 31.0)]})
    data = json.loads((small / 'paper_table.json').read_text())
    data['settings']['n_train'] = 6400
    (small / 'paper_table.json').write_text(json.dumps(data))
    with pytest.raises(SystemExit, match=r'small/paper_table.json and .*full/paper_table.json both train 1 '
                                         r'MACRL-epochs but differ in n_train \(None vs 6400\)'):
        ps.summary([full, small])
