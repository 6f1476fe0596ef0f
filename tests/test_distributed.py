"""Two processes x batch B (torchrun, gloo) train exactly as one process x batch 2B, and decide everything together."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from test_train import TINY, small_folder  # noqa: F401  (fixture)

ARGS = ['--model', 'macrl_vit_tiny_p4_cifar', '--model-args', TINY, '--epochs', '2', '--batch-size', '32',
        '--decoder-dim', '32', '--proj-hidden-dim', '64', '--proj-dim', '16', '--bank-size', '128', '--blr', '1e-3',
        '--warmup-epochs', '0.5', '--no-progress', '--log-every', '1', '--threads', '1', '--max-steps', '4',
        '--precision', 'fp32']  # 1 x 2B vs 2 x B agree to 1e-5 in fp32; bf16 rounding differs by more


def _run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=600,
                         env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


def test_two_processes_equal_one(small_folder, tmp_path):
    data = ['--data', str(small_folder)]
    _run([sys.executable, '-m', 'macrl_hub.train', *ARGS, *data, '--out', str(tmp_path / 'one')])
    _run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
          '-m', 'macrl_hub.train', *ARGS, *data, '--out', str(tmp_path / 'two')])
    one = torch.load(tmp_path / 'one' / 'checkpoint.pth', weights_only=True)
    two = torch.load(tmp_path / 'two' / 'checkpoint.pth', weights_only=True)
    assert one['step'] == two['step'] == 4
    for k, v in one['model'].items():
        if v.is_floating_point():
            assert torch.allclose(v, two['model'][k], atol=1e-5, rtol=1e-4), (k, (v - two['model'][k]).abs().max())
        else:
            assert torch.equal(v, two['model'][k]), k
    # the bank holds the gathered keys of both ranks, in the same order as the single process
    assert torch.allclose(one['model']['bank.bank'], two['model']['bank.bank'], atol=1e-5)
    l1 = (tmp_path / 'one' / 'log.jsonl').read_text().splitlines()
    l2 = (tmp_path / 'two' / 'log.jsonl').read_text().splitlines()
    import json
    a = [json.loads(x)['loss'] for x in l1 if '"lr"' in x]
    b = [json.loads(x)['loss'] for x in l2 if '"lr"' in x]
    assert len(a) == len(b) == 4 and all(abs(x - y) < 1e-4 for x, y in zip(a, b)), (a, b)


def test_resume_with_another_world_size(small_folder, tmp_path):
    data = ['--data', str(small_folder)]
    out = ['--out', str(tmp_path / 'run')]
    _run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
          '-m', 'macrl_hub.train', *ARGS, *data, *out])
    _run([sys.executable, '-m', 'macrl_hub.train', *ARGS, *data, *out, '--resume', 'auto'])
    _run([sys.executable, '-m', 'macrl_hub.train', *ARGS, *data, '--out', str(tmp_path / 'ref'), '--max-steps', '8'])
    a = torch.load(tmp_path / 'run' / 'checkpoint.pth', weights_only=True)
    b = torch.load(tmp_path / 'ref' / 'checkpoint.pth', weights_only=True)
    assert a['step'] == b['step'] == 8
    for k, v in a['model'].items():
        if v.is_floating_point():
            assert torch.allclose(v, b['model'][k], atol=1e-4, rtol=1e-3), k


def test_train_destroys_only_the_process_group_it_created(small_folder, tmp_path, monkeypatch):
    """Under torchrun's environment `train` makes the gloo group and destroys it on return (a group left to the
    interpreter's exit once aborted a finished rank in CI); a group the caller made before is still there after."""
    import torch.distributed as dist
    from test_train import _cfg
    from macrl_hub.train import train
    for k, v in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT='0').items():
        monkeypatch.setenv(k, v)
    train(_cfg(small_folder, tmp_path / 'own', max_steps=1))
    assert not dist.is_initialized()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        train(_cfg(small_folder, tmp_path / 'callers', max_steps=1))
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def _agree(rank_: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from macrl_hub.distributed import check_same_on_all_ranks, from_rank0
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank_, world_size=2)
    try:
        fitted = from_rank0(700 + rank_, torch.device('cpu'))  # each rank timed its own steps
        check_same_on_all_ranks(True, torch.device('cpu'), 'same')
        try:
            check_same_on_all_ranks(rank_ == 0, torch.device('cpu'), 'only rank 0 sees the checkpoint')
            err = ''
        except ValueError as e:
            err = str(e)
        from macrl_hub.config import TrainConfig
        from macrl_hub.train import train
        try:  # e.g. `--resume auto` on an --out that is not shared: each rank read its own settings
            train(TrainConfig(out=f'{out}/run{rank_}', data=f'{out}/none', alpha=0.1 * (rank_ + 1), progress=False))
            cfg_err = ''
        except ValueError as e:
            cfg_err = str(e)
        torch.save({'fitted': fitted, 'err': err, 'cfg_err': cfg_err}, f'{out}/{rank_}.pt')
    finally:
        dist.destroy_process_group()


def test_ranks_take_one_decision(tmp_path):
    """--fit-budget's schedule length is rank 0's on every rank (each rank used to fit its own: different lr and
    momentum schedules, and a hang when one stops first); a rank that does not see the checkpoint to resume makes
    every rank fail with the reason, instead of silently starting a fresh run beside the resumed ones; ranks started
    with different settings fail alike."""
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_agree, args=(port, str(tmp_path)), nprocs=2)
    got = [torch.load(tmp_path / f'{r}.pt') for r in range(2)]
    assert [g['fitted'] for g in got] == [700, 700]
    assert all('only rank 0 sees the checkpoint (true on ranks [0], false on [1])' in g['err'] for g in got)
    assert all('the ranks run with different settings than rank 0' in g['cfg_err'] for g in got)  # before any work
    assert not any((tmp_path / f'run{r}').exists() for r in range(2))


def _one_rank_signalled(rank_: int, port: int, folder: str, out: str) -> None:
    """Rank 1 alone gets SIGTERM at the end of step 2 (one node preempted); every rank records how train ended."""
    import os
    import signal
    from macrl_hub.macrl import MACRL
    from macrl_hub.train import TrainingInterrupted, train
    from test_train import _cfg
    os.environ.update(RANK=str(rank_), WORLD_SIZE='2', LOCAL_RANK=str(rank_), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    real, calls = MACRL.update_momentum, []

    def update(self, m):
        real(self, m)
        calls.append(1)
        if rank_ == 1 and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    MACRL.update_momentum = update
    try:
        train(_cfg(folder, out, max_steps=6, ckpt_every_min=100))
        got = {'raised': None, 'steps': len(calls)}
    except TrainingInterrupted as e:
        got = {'raised': e.signum, 'steps': len(calls), 'step': e.result['step']}
    torch.save(got, f'{out}/rank{rank_}.pt')


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(small_folder, tmp_path):
    """Every rank finishes the step in flight, rank 0 checkpoints it, and each rank raises TrainingInterrupted with
    the signal one of them got: no rank trains on alone into a collective the others have left."""
    import json
    import signal
    import socket
    import time
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = tmp_path / 'run'
    out.mkdir()
    t0 = time.time()
    ranks = mp.spawn(_one_rank_signalled, args=(port, str(small_folder), str(out)), nprocs=2, join=False)
    while not ranks.join(timeout=2):
        if time.time() - t0 > 180:  # a rank that trained on alone waits in a collective until gloo's 30 min timeout
            for p in ranks.processes:
                p.kill()
            pytest.fail('the ranks did not stop at the same step: still running after 180 s')
    got = [torch.load(out / f'rank{r}.pt') for r in range(2)]
    assert got == [{'raised': signal.SIGTERM, 'steps': 2, 'step': 2}] * 2, got
    assert torch.load(out / 'checkpoint.pth', weights_only=True)['step'] == 2
    end = json.loads((out / 'log.jsonl').read_text().splitlines()[-1])
    assert (end['event'], end['reason'], end['signal'], end['step']) == ('end', 'interrupted', 'SIGTERM', 2)
