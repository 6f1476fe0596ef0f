"""`macrl download` against a loopback Hub: fills the model_cards/ layout, sha256-checked, that the resolver then
loads offline; names are checked before anything is fetched; offline it fails at once."""
import hashlib
import json
import re

import huggingface_hub.constants as hc

import pytest

from macrl_hub import pretrained
from macrl_hub.cli import main as cli
from macrl_hub.download import MODEL_FILES, download
from macrl_hub.pretrained import PretrainedWeightsError, resolve_weights

from hub_server import HubServer

NAME = 'macrl_vit_tiny_p4_cifar.cifar10'
DATA = b'fake weights: only hashed\n' * 8


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A loopback Hub holding macrl-hub/NAME (weights, config, card), NAME published as those weights."""
    repo = tmp_path / 'repo'
    repo.mkdir()
    (repo / 'model.safetensors').write_bytes(DATA)
    (repo / 'config.json').write_text(json.dumps({'architecture': 'vit_tiny_patch16_224'}))
    (repo / 'README.md').write_text('---\nlibrary_name: timm\n---\n# card\n')
    (repo / 'training_curve.png').write_bytes(b'not downloaded')
    monkeypatch.setitem(pretrained.PUBLISHED, NAME, hashlib.sha256(DATA).hexdigest())
    monkeypatch.setattr(pretrained, 'MODEL_CARDS_DIR', tmp_path / 'no_checkout')
    monkeypatch.delenv('MACRL_WEIGHTS_DIR', raising=False)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    with HubServer({f'macrl-hub/{NAME}': repo}) as server:
        monkeypatch.setenv('HF_ENDPOINT', server.url)
        yield server, repo


def test_download_fills_the_layout_the_resolver_reads(hub, tmp_path, monkeypatch):
    server, repo = hub
    to = tmp_path / 'weights'
    assert download([NAME], to) == [to / NAME]
    assert sorted(p.name for p in to.iterdir()) == [NAME]  # no staging folder left behind
    assert sorted(p.name for p in (to / NAME).iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    for f in MODEL_FILES:
        assert (to / NAME / f).read_bytes() == (repo / f).read_bytes()
    gets = [r for r in server.requests if r[0] == 'GET']
    assert download([NAME], to) == [to / NAME]  # already there and verified: nothing fetched again
    assert [r for r in server.requests if r[0] == 'GET'] == gets
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('MACRL_WEIGHTS_DIR', str(to))
    assert resolve_weights(NAME) == to / NAME / 'model.safetensors'


def test_download_default_folder_and_bare_arch(hub, tmp_path, monkeypatch, capsys):
    default = tmp_path / 'xdg' / 'macrl-hub' / 'weights'
    assert download(['macrl_vit_tiny_p4_cifar']) == [default / NAME]
    monkeypatch.setenv('MACRL_WEIGHTS_DIR', str(tmp_path / 'env'))
    assert cli(['download', NAME]) == 0
    assert (tmp_path / 'env' / NAME / 'model.safetensors').read_bytes() == DATA
    assert capsys.readouterr().out.strip() == str(tmp_path / 'env' / NAME)
    assert cli(['download', NAME, '--to', str(tmp_path / 'other')]) == 0
    assert f'set MACRL_WEIGHTS_DIR={tmp_path / "other"}' in capsys.readouterr().out
    assert cli(['--help']) == 0 and '  download ' in capsys.readouterr().out


def test_download_refuses_weights_that_are_not_the_published_ones(hub, tmp_path):
    server, repo = hub
    (repo / 'model.safetensors').write_bytes(DATA + b'tampered')
    with pytest.raises(PretrainedWeightsError, match='checksum mismatch') as e:
        download([NAME], tmp_path / 'weights')
    assert 'checksum mismatch for model.safetensors of http' in str(e.value)  # not the staging copy, gone by now
    assert '.partial' not in str(e.value)
    assert not (tmp_path / 'weights').exists()  # nothing put in place, no staging, no empty folder left
    (tmp_path / 'mine').mkdir()  # a folder the user made stays
    with pytest.raises(PretrainedWeightsError, match='checksum mismatch'):
        download([NAME], tmp_path / 'mine')
    assert (tmp_path / 'mine').is_dir() and list((tmp_path / 'mine').iterdir()) == []


def test_names_are_checked_before_anything_is_fetched(hub, tmp_path, monkeypatch, capsys):
    server, _ = hub
    monkeypatch.setitem(pretrained.PUBLISHED, 'macrl_vit_medium_p4_cifar.cifar10', None)
    planned = r"no weights are published for .macrl_vit_medium_p4_cifar.cifar10. yet; weights exist for: .*"
    with pytest.raises(PretrainedWeightsError, match=planned + NAME):
        download([NAME, 'macrl_vit_medium_p4_cifar.cifar10'], tmp_path / 'w')
    assert cli(['download', 'macrl_vit_nope.cifar10', '--to', str(tmp_path / 'w')]) == 1
    assert 'unknown pretrained weights' in capsys.readouterr().err
    assert cli(['download', 'macrl_vit_medium_p4_cifar.cifar10', '--to', str(tmp_path / 'w')]) == 1
    assert 'macrl download: error: no weights are published' in capsys.readouterr().err
    assert server.requests == [] and not (tmp_path / 'w').exists()


def test_download_offline_fails_at_once(hub, tmp_path, monkeypatch, capsys):
    server, _ = hub
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    assert cli(['download', NAME, '--to', str(tmp_path / 'w')]) == 1
    assert re.search('cannot be reached .HF_HUB_OFFLINE is set.*HF_ENDPOINT', capsys.readouterr().err, re.S)
    assert server.requests == [] and not (tmp_path / 'w').exists()


def test_a_corrupt_cached_copy_is_fetched_again_and_cache_dir_is_used(hub, tmp_path, monkeypatch):
    """A Hugging Face cache blob that fails its sha256 is fetched again (deleting the snapshot link the error used
    to name could not fix it: the link came back to the same blob); offline, the error names the blob itself."""
    from macrl_hub.pretrained import sha256_file
    path = resolve_weights(NAME)
    assert path.is_relative_to(tmp_path / 'hf') and path.read_bytes() == DATA
    assert resolve_weights(NAME, cache_dir=tmp_path / 'mine').is_relative_to(tmp_path / 'mine')
    path.resolve().write_bytes(b'corrupt')
    assert resolve_weights(NAME).read_bytes() == DATA  # the resolver's copy, fetched again
    path.resolve().write_bytes(b'corrupt')
    folder = download([NAME], tmp_path / 'weights')[0]  # `macrl download` too
    assert sha256_file(folder / 'model.safetensors') == pretrained.PUBLISHED[NAME]
    path.resolve().write_bytes(b'corrupt')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hc, 'HF_HUB_OFFLINE', True)
    with pytest.raises(PretrainedWeightsError, match=f'delete {re.escape(str(path.resolve()))} and retry'):
        resolve_weights(NAME)
