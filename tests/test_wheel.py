"""A pip user's install: the wheel (macrl_hub/*.py, no model_cards/) in a fresh venv, used from a folder outside the
checkout, gets published weights each documented way -- MACRL_WEIGHTS_DIR, `macrl download` from a (loopback) Hub,
`local-dir:` -- and with none of them fails at once, naming them."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from macrl_hub.pretrained import HUB_TIMEOUT_S

from conftest import ROOT
from hub_server import HubServer

NAME = 'macrl_vit_tiny_p4_cifar.cifar10'
CARD = ROOT / 'model_cards' / NAME

# Runs in the venv's python, Hub off (HF_HUB_OFFLINE=1): argv = reference weights, two weights folders, an empty one.
LOAD = '''
import json, os, sys, time
import torch, timm, macrl_hub
from safetensors.torch import load_file
name, ref, copied, downloaded, empty = sys.argv[1:]
ref = load_file(ref)
def same(m):
    sd = m.state_dict()
    return sd.keys() == ref.keys() and all(torch.equal(sd[k], v.to(sd[k].dtype)) for k, v in ref.items())
out = {'file': macrl_hub.__file__}
for way, folder in (('MACRL_WEIGHTS_DIR', copied), ('macrl download', downloaded)):
    os.environ['MACRL_WEIGHTS_DIR'] = folder
    out[way] = same(timm.create_model(name, pretrained=True))
out['local-dir:'] = same(timm.create_model(f'local-dir:{downloaded}/{name}', pretrained=True))
os.environ['MACRL_WEIGHTS_DIR'] = empty
t0 = time.perf_counter()
try:
    timm.create_model(name, pretrained=True)
except macrl_hub.pretrained.PretrainedWeightsError as e:
    out['error'] = str(e)
out['error_s'] = time.perf_counter() - t0
print(json.dumps(out))
'''


def _run(cmd, **kw) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(root, venv python, wheel): the wheel built from this checkout's sources, installed in a fresh venv."""
    root = tmp_path_factory.mktemp('wheel')
    src = root / 'src'  # build from a copy: an in-tree build writes build/ and *.egg-info into the checkout
    shutil.copytree(ROOT / 'macrl_hub', src / 'macrl_hub', ignore=shutil.ignore_patterns('__pycache__'))
    for f in ('setup.cfg', 'pyproject.toml', 'README.md', 'LICENSE'):
        shutil.copy2(ROOT / f, src / f)
    pip = ['-m', 'pip', '--disable-pip-version-check', '-q']
    _run([sys.executable, *pip, 'wheel', src, '--no-deps', '--no-build-isolation', '--no-index', '-w', root / 'dist'])
    wheel, = (root / 'dist').glob('macrl_hub-*.whl')
    _run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', root / 'venv'])
    python = root / 'venv' / 'bin' / 'python'
    # the system's pip run by the venv's python installs into the venv (torch, timm stay the system's);
    # --ignore-installed: an editable macrl-hub in the system site-packages must not count as installed
    _run([python, *pip, 'install', '--no-deps', '--no-index', '--ignore-installed', wheel])
    return root, python, wheel


def _env(root, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'MACRL_WEIGHTS_DIR', 'HF_ENDPOINT', 'HF_HUB_OFFLINE')}
    return dict(env, HOME=str(root / 'home'), XDG_CACHE_HOME=str(root / 'xdg'), HF_HOME=str(root / 'hf'),
                HF_HUB_DISABLE_TELEMETRY='1', **extra)


def test_wheel_holds_code_only(installed):
    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert 'macrl_hub/pretrained.py' in names and 'macrl_hub/download.py' in names
    assert all(n.startswith(('macrl_hub/', 'macrl_hub-')) and not n.endswith('.safetensors') for n in names)
    # Apache-2.0 (setup.cfg, every card and pretrained_cfg) asks for its text with every copy
    lic = [n for n in names if n.startswith('macrl_hub-') and n.endswith('LICENSE')]
    assert lic and 'Apache License' in zipfile.ZipFile(wheel).read(lic[0]).decode()[:200]


def test_pip_install_gets_weights_every_documented_way(installed):
    root, python, _ = installed
    elsewhere = root / 'elsewhere'  # cwd outside the checkout: nothing of it on sys.path
    elsewhere.mkdir()
    copied, downloaded, empty = root / 'copied', root / 'downloaded', root / 'empty'
    shutil.copytree(CARD, copied / NAME)
    with HubServer({f'macrl-hub/{NAME}': CARD}) as hub:
        out = _run([root / 'venv' / 'bin' / 'macrl', 'download', NAME, '--to', downloaded], cwd=elsewhere,
                   env=_env(root, HF_ENDPOINT=hub.url))
    assert out.splitlines()[0] == str(downloaded / NAME)
    assert {p.name for p in (downloaded / NAME).iterdir()} == {'model.safetensors', 'config.json', 'README.md'}
    out = json.loads(_run([python, '-c', LOAD, NAME, CARD / 'model.safetensors', copied, downloaded, empty],
                          cwd=elsewhere, env=_env(root, HF_HUB_OFFLINE='1')).splitlines()[-1])
    assert out['file'] == str(root / 'venv' / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}'
                              / 'site-packages' / 'macrl_hub' / '__init__.py')
    assert out['MACRL_WEIGHTS_DIR'] and out['macrl download'] and out['local-dir:']
    msg = out['error']
    assert f'MACRL_WEIGHTS_DIR={empty}: {empty / NAME / "model.safetensors"} (not found)' in msg
    assert 'model_cards' not in msg.split('Ways out:')[0]  # a wheel has no checkout: nothing claimed there
    for way_out in (f'macrl download {NAME}', 'local-dir:', 'HF_ENDPOINT=', 'set MACRL_WEIGHTS_DIR'):
        assert way_out in msg, way_out
    assert out['error_s'] < HUB_TIMEOUT_S
