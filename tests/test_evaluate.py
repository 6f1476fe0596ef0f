import json

import pytest
import torch

from macrl_hub.evaluate import load_encoder, main as eval_main

from test_train import _cfg, small_folder  # noqa: F401  (fixture)
from macrl_hub.train import train


@pytest.fixture(scope='module')
def trained_ckpt(small_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('run')
    train(_cfg(small_folder, out, max_steps=2))
    return out / 'checkpoint.pth'


def test_load_encoder_from_checkpoint(trained_ckpt):
    ck = torch.load(trained_ckpt, weights_only=True)
    enc = load_encoder(str(trained_ckpt))
    assert torch.equal(enc.state_dict()['blocks.0.attn.qkv.weight'], ck['model']['encoder.blocks.0.attn.qkv.weight'])
    assert len(enc.blocks) == 2


def test_eval_cli_prints_one_json_line(trained_ckpt, small_folder, capsys, tmp_path):
    rec = eval_main(['knn', '--model', str(trained_ckpt), '--data', str(small_folder), '--k', '5', '20',
                     '--json-out', str(tmp_path / 'knn.json')])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line) == rec == json.loads((tmp_path / 'knn.json').read_text())
    assert 0 <= rec['knn_top1_k5'] <= 100 and rec['n_train'] == 192 and rec['n_test'] == 64
    rec = eval_main(['linear', '--model', str(trained_ckpt), '--data', str(small_folder), '--epochs', '3',
                     '--save-head', str(tmp_path / 'head.safetensors')])
    assert 0 <= rec['linear_top1'] <= 100 and (tmp_path / 'head.safetensors').is_file()


def test_bad_model_specs(tmp_path):
    with pytest.raises(ValueError, match='unknown model'):
        load_encoder('vit_does_not_exist')
    with pytest.raises(ValueError, match='not found'):
        load_encoder(str(tmp_path / 'missing.pth'))
    bad = tmp_path / 'other.pth'
    torch.save({'weights': torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match='not a `macrl train` checkpoint'):
        load_encoder(str(bad))
