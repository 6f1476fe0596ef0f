"""The resolver: weights folder (MACRL_WEIGHTS_DIR) first, then the checkout, then the Hub; offline it fails in
seconds with one message naming every place looked in and the ways out. Fake weights (the resolver only hashes
them) and a loopback Hub keep these in-process and fast."""
import hashlib
import re
import socket
import time

import huggingface_hub.constants as hc
import pytest

from macrl_hub import pretrained
from macrl_hub.pretrained import PretrainedWeightsError, resolve_weights

from hub_server import HubServer

NAME = 'macrl_vit_tiny_p4_cifar.cifar10'
DATA = b'fake weights: the resolver only hashes them\n' * 8


@pytest.fixture
def places(tmp_path, monkeypatch):
    """NAME published as DATA; a checkout with an empty model_cards/, MACRL_WEIGHTS_DIR unset, fresh caches."""
    monkeypatch.setitem(pretrained.PUBLISHED, NAME, hashlib.sha256(DATA).hexdigest())
    monkeypatch.setattr(pretrained, 'MODEL_CARDS_DIR', tmp_path / 'checkout' / 'model_cards')
    pretrained.MODEL_CARDS_DIR.mkdir(parents=True)
    monkeypatch.delenv('MACRL_WEIGHTS_DIR', raising=False)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    return tmp_path


def _put(root, data: bytes = DATA):
    (root / NAME).mkdir(parents=True, exist_ok=True)
    (root / NAME / 'model.safetensors').write_bytes(data)
    return root / NAME / 'model.safetensors'


def test_weights_folder_first_then_checkout(places, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    wrong = DATA + b'other'
    _put(pretrained.MODEL_CARDS_DIR, wrong)  # were the checkout tried first, its sha256 would not match
    env_dir = places / 'weights'
    monkeypatch.setenv('MACRL_WEIGHTS_DIR', str(env_dir))
    expected = _put(env_dir)
    assert resolve_weights(NAME) == expected
    monkeypatch.delenv('MACRL_WEIGHTS_DIR')  # unset: the per-user folder `macrl download` fills by default
    default = places / 'xdg' / 'macrl-hub' / 'weights'
    assert pretrained.weights_dir() == default
    expected = _put(default)
    assert resolve_weights(NAME) == expected
    expected.unlink()
    expected = _put(pretrained.MODEL_CARDS_DIR)
    assert resolve_weights(NAME) == expected
    _put(default, wrong)  # a damaged copy in the weights folder is refused by name, never skipped silently
    with pytest.raises(PretrainedWeightsError, match=f'checksum mismatch for {default / NAME}'):
        resolve_weights(NAME)


def _refused_endpoint() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return f'http://127.0.0.1:{s.getsockname()[1]}'  # closed on return: connections are refused


@pytest.mark.parametrize('hub', ['HF_HUB_OFFLINE', 'refused', 'silent'])
def test_offline_fails_fast_naming_every_place_and_the_ways_out(places, monkeypatch, hub):
    """HF_HUB_OFFLINE, a refused connection, a server that never answers: one try of at most HUB_TIMEOUT_S
    (hf_hub_download alone retries for 23 s), then one message."""
    monkeypatch.setattr(pretrained, 'HUB_TIMEOUT_S', 1.0)
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever reads or answers them
    endpoint = f'http://127.0.0.1:{silent.getsockname()[1]}' if hub == 'silent' else _refused_endpoint()
    monkeypatch.setenv('HF_ENDPOINT', endpoint)
    if hub == 'HF_HUB_OFFLINE':
        monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as info:
        resolve_weights(NAME)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2 * pretrained.HUB_TIMEOUT_S
    if hub == 'silent':  # a slow link: huggingface_hub's own HF_HUB_ETAG_TIMEOUT is waited for instead
        monkeypatch.setenv('HF_HUB_ETAG_TIMEOUT', '2.5')
        t0 = time.perf_counter()
        with pytest.raises(PretrainedWeightsError):
            resolve_weights(NAME)
        assert 2.5 <= time.perf_counter() - t0 < 5
    msg = str(info.value)
    looked = [pretrained.weights_dir() / NAME / 'model.safetensors', pretrained.MODEL_CARDS_DIR / NAME,
              f'{endpoint}/macrl-hub/{NAME}', hc.HF_HUB_CACHE]
    for place in looked:
        assert str(place) in msg, place
    assert ('HF_HUB_OFFLINE is set' if hub == 'HF_HUB_OFFLINE' else f'{endpoint} is unreachable') in msg
    silent.close()
    for way_out in ('set MACRL_WEIGHTS_DIR', f'macrl download {NAME} --to DIR', f"'local-dir:/path/to/{NAME}'",
                    'HF_ENDPOINT=http://host:port'):
        assert way_out in msg, way_out
    if hub == 'HF_HUB_OFFLINE':  # timm.create_model(..., cache_dir=): that cache is the one looked in and named
        with pytest.raises(PretrainedWeightsError, match=re.escape(f'the Hugging Face cache: {places / "mine"}')):
            resolve_weights(NAME, cache_dir=places / 'mine')


def test_hub_then_its_cache_when_offline(places, monkeypatch):
    """Reachable: downloaded (into the HF cache) and checked. Unreachable later: the cached copy, without waiting."""
    repo = places / 'repo'
    _put(repo)
    with HubServer({f'macrl-hub/{NAME}': repo / NAME}) as hub:
        monkeypatch.setenv('HF_ENDPOINT', hub.url)
        path = resolve_weights(NAME)
        assert path.read_bytes() == DATA and str(path).startswith(hc.HF_HUB_CACHE)
        assert ('GET', f'macrl-hub/{NAME}/resolve/main/model.safetensors') in hub.requests
    monkeypatch.setenv('HF_ENDPOINT', _refused_endpoint())
    assert resolve_weights(NAME).read_bytes() == DATA
    (repo / NAME / 'model.safetensors').write_bytes(DATA + b'tampered')
    with HubServer({f'macrl-hub/{NAME}': repo / NAME}) as hub:
        monkeypatch.setenv('HF_ENDPOINT', hub.url)
        monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(places / 'hf2'))
        with pytest.raises(PretrainedWeightsError, match='checksum mismatch') as e:
            resolve_weights(NAME)
    # fetched fresh and still other bytes: not corruption a retry mends, but other weights on the Hub
    assert 'now serves other weights than' in str(e.value) and 'Upgrade macrl_hub' in str(e.value)
    assert 'delete' not in str(e.value)


def test_a_repo_the_hub_does_not_have_is_named_with_the_cause(places, monkeypatch):
    """The Hub answers 401 RepoNotFound for a missing (or private) repo: the message keeps huggingface_hub's cause,
    not only its status line, and says where a token comes from."""
    with HubServer({}) as hub:
        monkeypatch.setenv('HF_ENDPOINT', hub.url)
        with pytest.raises(PretrainedWeightsError) as e:
            resolve_weights(NAME)
    text = str(e.value)
    assert 'the Hugging Face Hub did not provide it' in text
    assert re.search(r'RepositoryNotFoundError: 401 Client Error\..* Repository Not Found for url: .*macrl-hub/'
                     + re.escape(NAME) + r'.*HF_TOKEN or `hf auth login`', text), text
    # a '401' that is not an HTTP answer (a folder name, a shape) gets no token advice
    assert pretrained.error_text(FileNotFoundError('runs/401/checkpoint.pth not found')) == \
        'runs/401/checkpoint.pth not found'


def test_planned_and_unknown_names(monkeypatch):
    monkeypatch.setitem(pretrained.PUBLISHED, 'macrl_vit_medium_p4_cifar.cifar10', None)
    with pytest.raises(PretrainedWeightsError, match='no weights are published for .macrl_vit_medium_p4_cifar.cifar10'):
        resolve_weights('macrl_vit_medium_p4_cifar.cifar10')
    with pytest.raises(ValueError, match=r"unknown pretrained weights 'macrl_vit_tiny_p4_cifar.nope'; published: \["):
        resolve_weights('macrl_vit_tiny_p4_cifar.nope')
    assert pretrained.published_name('macrl_vit_tiny_p4_cifar') == NAME  # a bare arch: its first published tag
