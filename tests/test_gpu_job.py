"""benchmarks/gpu_job.py's packing (not its training): what a device call brings back must rebuild the checkpoint.

A call returns at most 8 files and 64 MiB, and the paper's CIFAR encoder (macrl_vit_medium_p4_cifar) is 75.6 MB in
fp16, so pack compresses the encoder's weights losslessly and leaves what still does not fit for a second call."""
import dataclasses
import json

import pytest
import torch

from conftest import ROOT, load_script


@pytest.fixture(scope='module')
def gj():
    return load_script('benchmarks/gpu_job.py')


def test_fp16_blob_round_trips_bit_for_bit(gj):
    sd = {'a': torch.randn(3, 5).half(), 'b': torch.tensor([0.0, -0.0, float('inf'), float('nan'), 6e-8]).half(),
          'c': torch.zeros(0).half()}
    back = gj.decode_fp16(gj.encode_fp16(sd))
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].shape == sd[k].shape and torch.equal(back[k].view(torch.int16), sd[k].view(torch.int16)), k
    with pytest.raises(ValueError, match='fp16 tensors only'):
        gj.encode_fp16({'x': torch.ones(2)})


def test_trained_weights_compress_enough_for_the_medium_encoder(gj):
    """The published ViT-S/4 encoder stands in for a trained one: at <= 0.87 of fp16, the medium encoder (75.6 MB)
    fits a call's 64 MiB (67.1 MB) with its logs; plain zlib of the same bytes gives ~0.92 and would not."""
    from safetensors.torch import load_file
    sd = load_file(ROOT / 'model_cards' / 'macrl_vit_small_p4_cifar.cifar10' / 'model.safetensors')
    sd = {k: v.half() for k, v in sd.items()}
    raw = sum(v.numel() * 2 for v in sd.values())
    assert len(gj.encode_fp16(sd)) / raw < 0.87


def _checkpoint(run_dir):
    from macrl_hub.config import TrainConfig
    from macrl_hub.train import build_macrl
    cfg = TrainConfig(model='macrl_vit_tiny_p4_cifar', model_args='{"depth": 1}', bank_size=64, out=str(run_dir))
    model = build_macrl(cfg)
    run_dir.mkdir(parents=True)
    torch.save({'model': model.state_dict(), 'optimizer': {}, 'step': 3, 'train_time': 1.0,
                'config': dataclasses.asdict(cfg), 'arch': cfg.model, 'model_args': cfg.encoder_kwargs(),
                'macrl': model.config, 'precision': 'fp32'}, run_dir / 'checkpoint.pth')
    (run_dir / 'log.jsonl').write_text(json.dumps(dict(step=3, loss=1.0)) + '\n')
    return model


def test_pack_compresses_then_spills_and_unpack_rebuilds_the_encoder(gj, tmp_path, monkeypatch):
    from macrl_hub.evaluate import load_encoder
    monkeypatch.setattr(gj, 'PIECE', 100_000)
    monkeypatch.setenv('SPILL', str(tmp_path / 'spill'))
    model = _checkpoint(tmp_path / 'work' / 'medium')
    out1 = tmp_path / 'out1'
    out1.mkdir()
    room = 250_000  # smaller than the compressed encoder (~1 MB): levels 1, 2, then spill
    wrote = gj.pack('medium', tmp_path / 'work' / 'medium', tmp_path / 'work', out1, room)
    assert wrote == room == sum(p.stat().st_size for p in out1.iterdir())
    assert gj.phases[-1]['level'] == 2 and gj.phases[-1]['spilled'] > 0
    gj.write_job(out1)
    with pytest.raises(SystemExit, match='spill'):  # the spilled pieces are missing: say so, build nothing
        gj.unpack(str(out1), str(tmp_path / 'back'))
    outs = []
    while list((tmp_path / 'spill').glob('*.tar.part-*')):  # second (and further) calls
        outs.append(tmp_path / f'out{len(outs) + 2}')
        gj.spill(outs[-1])
        assert len(list(outs[-1].iterdir())) <= gj.MAX_FILES
    gj.unpack(str(out1), str(tmp_path / 'back'), *map(str, outs))
    enc = load_encoder(str(tmp_path / 'back' / 'medium' / 'checkpoint.pth'))
    want = {k[len('encoder.'):]: v.half() for k, v in model.state_dict().items() if k.startswith('encoder.')}
    got = {k: v.half() for k, v in enc.state_dict().items()}
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
