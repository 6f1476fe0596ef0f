"""Runs get killed, disks fill up, batches go bad: none of it may cost a user their checkpoint."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import macrl_hub.train as train_mod
from macrl_hub.train import TrainingDiverged, train
from macrl_hub.weights import atomic_torch_save

from conftest import ROOT
from test_train import _cfg, _sha, small_folder  # noqa: F401  (fixture)
from test_distributed import ARGS


def _args(folder, out, *extra):
    return [sys.executable, '-m', 'macrl_hub.train', *ARGS, '--data', str(folder), '--out', str(out), *extra]


ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def uninterrupted(small_folder, tmp_path_factory):
    """The checkpoint of an 8-step run that nothing stopped."""
    out = tmp_path_factory.mktemp('ref')
    ref = subprocess.run(_args(small_folder, out, '--max-steps', '8'), cwd=str(ROOT), env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return torch.load(out / 'checkpoint.pth', weights_only=True)


def _signalled_at_step(folder, out, step: int, signum: int, *extra):
    """`python -m macrl_hub.train ...` in a child that sends itself `signum` at the end of optimizer step `step`
    (after its EMA update, before any checkpoint of that step): the same step on a loaded machine as on an idle one,
    where a parent polling the log could be late."""
    code = ('import os, sys\n'
            'from macrl_hub.macrl import MACRL\n'
            'real, calls = MACRL.update_momentum, []\n'
            'def update(self, m):\n'
            '    real(self, m)\n'
            '    calls.append(1)\n'
            f'    if len(calls) == {step}:\n'
            f'        os.kill(os.getpid(), {int(signum)})\n'
            'MACRL.update_momentum = update\n'
            'from macrl_hub.train import main\n'
            'main(sys.argv[1:])\n')
    return subprocess.run([sys.executable, '-c', code, *_args(folder, out, *extra)[3:]], cwd=str(ROOT), env=ENV,
                          capture_output=True, text=True, timeout=300)


def _same_as_uninterrupted(a, run):
    b = torch.load(run / 'checkpoint.pth', weights_only=True)
    assert a['step'] == b['step'] == 8
    for k, v in a['model'].items():  # bitwise: each step's randomness is a function of (seed, step)
        assert torch.equal(v, b['model'][k]), k


def test_ctrl_c_saves_the_step_in_flight_then_resume_equals_uninterrupted(small_folder, tmp_path, uninterrupted):
    run = tmp_path / 'run'
    p = _signalled_at_step(small_folder, run, 3, signal.SIGINT, '--max-steps', '8', '--ckpt-every-min', '100')
    assert p.returncode == 130, p.stderr[-2000:]  # 128 + SIGINT, as the shell reports an interrupted command
    assert 'SIGINT: stopping after this step with a checkpoint' in p.stderr and '--resume auto' in p.stdout
    stopped_at = torch.load(run / 'checkpoint.pth', weights_only=True)['step']  # no other checkpoint was due
    assert stopped_at == 3  # the step in flight was finished and saved
    end = json.loads((run / 'log.jsonl').read_text().splitlines()[-1])
    assert (end['event'], end['reason'], end['signal'], end['step']) == ('end', 'interrupted', 'SIGINT', stopped_at)
    res = subprocess.run(_args(small_folder, run, '--max-steps', str(8 - stopped_at), '--resume', 'auto'),
                         cwd=str(ROOT), env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    _same_as_uninterrupted(uninterrupted, run)


def test_kill_9_mid_epoch_then_resume_equals_uninterrupted(small_folder, tmp_path, uninterrupted):
    env = ENV
    run = tmp_path / 'run'
    p = _signalled_at_step(small_folder, run, 3, signal.SIGKILL, '--max-steps', '8', '--ckpt-every-min', '0')
    assert p.returncode == -signal.SIGKILL
    killed_at = torch.load(run / 'checkpoint.pth', weights_only=True)['step']
    assert killed_at == 2  # killed in step 3 (mid-epoch: 6 steps per epoch), before its checkpoint
    res = subprocess.run(_args(small_folder, run, '--max-steps', str(8 - killed_at), '--resume', 'auto'),
                         cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    _same_as_uninterrupted(uninterrupted, run)


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    path = tmp_path / 'checkpoint.pth'
    atomic_torch_save({'step': 1, 'w': torch.ones(10)}, path)
    before = _sha(path)
    code = (
        'import os, signal, torch\n'
        'from macrl_hub.weights import atomic_torch_save\n'
        'real = torch.save\n'
        'def dying_save(obj, f):\n'
        '    f.write(b"partial checkpoint bytes")\n'
        '    f.flush()\n'
        '    os.kill(os.getpid(), signal.SIGKILL)\n'
        'torch.save = dying_save\n'
        f'atomic_torch_save({{"step": 2, "w": torch.zeros(10)}}, {str(path)!r})\n'
    )
    p = subprocess.run([sys.executable, '-c', code], cwd=str(ROOT))
    assert p.returncode == -signal.SIGKILL
    assert _sha(path) == before and torch.load(path, weights_only=True)['step'] == 1
    assert list(tmp_path.glob('.checkpoint.pth.*.tmp'))  # the partial file is beside it, not over it


def test_stale_partial_checkpoints_are_cleaned_and_training_resumes(small_folder, tmp_path):
    train(_cfg(small_folder, tmp_path / 'run', max_steps=2))
    stale = tmp_path / 'run' / '.checkpoint.pth.abc123.tmp'
    stale.write_bytes(b'partial')
    res = train(_cfg(small_folder, tmp_path / 'run', max_steps=1, resume='auto'))
    assert res['step'] == 3 and not stale.exists()


def test_disk_full_fails_before_training(small_folder, tmp_path, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OSError, match=r'has 0 MiB free; checkpoints need about'):
        train(_cfg(small_folder, tmp_path / 'run'))
    assert not (tmp_path / 'run' / 'checkpoint.pth').exists()


def test_nan_in_a_batch_stops_and_keeps_checkpoint(small_folder, tmp_path, monkeypatch):
    train(_cfg(small_folder, tmp_path / 'run', max_steps=2))
    ck = tmp_path / 'run' / 'checkpoint.pth'
    before = _sha(ck)
    real = train_mod.PairAugment.__call__

    def poisoned(self, x, generator=None):
        v1, v2 = real(self, x, generator)
        v1[0, 0, 0, 0] = float('nan')  # one pixel of one image
        return v1, v2

    monkeypatch.setattr(train_mod.PairAugment, '__call__', poisoned)
    with pytest.raises(TrainingDiverged, match='loss is nan at step 2') as e:
        train(_cfg(small_folder, tmp_path / 'run', max_steps=3, resume='auto', ckpt_every_min=0))
    assert _sha(ck) == before
    end = [json.loads(l) for l in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()]
    assert end[-1].get('step', 0) <= 2  # nothing logged past the last good step
    assert '--resume auto --precision fp32' in str(e.value)  # the advice is a command resume accepts:
    monkeypatch.undo()
    res = train(_cfg(small_folder, tmp_path / 'run', max_steps=1, resume='auto', precision='fp32'))
    assert res['step'] == 3  # from the untouched step-2 checkpoint


def test_atomic_writes_give_new_files_the_usual_permissions(tmp_path):
    """A new checkpoint or knn.json is readable like any file the user's umask allows (mkstemp alone makes 0600);
    a replaced file keeps its own mode."""
    import stat
    from macrl_hub.weights import atomic_open
    old = os.umask(0o022)
    try:
        atomic_torch_save({'x': torch.zeros(1)}, tmp_path / 'new.pth')
        assert stat.S_IMODE((tmp_path / 'new.pth').stat().st_mode) == 0o644
        os.chmod(tmp_path / 'new.pth', 0o600)
        with atomic_open(tmp_path / 'new.pth', 'w') as f:
            f.write('again')
        assert stat.S_IMODE((tmp_path / 'new.pth').stat().st_mode) == 0o600
    finally:
        os.umask(old)
