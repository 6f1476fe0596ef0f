import subprocess
import sys

from macrl_hub.cli import main

from conftest import ROOT


def test_help_lists_only_available_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ('train', 'eval', 'models', 'download', 'export', 'push', 'viz', 'demo'):
        assert f'  {cmd} ' in out


def test_bad_input_is_one_line_and_exit_1(capsys, tmp_path):
    assert main(['eval', 'knn', '--model', 'vit_nope', '--data', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('macrl eval: error: unknown model') and '\n' not in err
    assert main(['frobnicate']) == 2


def test_models_listing_and_module_entry_points():
    out = subprocess.run([sys.executable, '-m', 'macrl_hub.cli', 'models'], capture_output=True, text=True,
                         cwd=str(ROOT), check=True).stdout
    assert 'macrl_vit_tiny_p4_cifar' in out and '.cifar10_lin' in out
    for mod in ('train', 'evaluate', 'export', 'viz', 'demo', 'push'):
        r = subprocess.run([sys.executable, '-m', f'macrl_hub.{mod}', '-h'], capture_output=True, text=True,
                           cwd=str(ROOT))
        assert r.returncode == 0 and 'usage' in r.stdout, mod


def test_models_lists_published_and_planned_tags_and_where_weights_are(capsys, monkeypatch, tmp_path):
    from macrl_hub import listing, pretrained
    name = 'macrl_vit_tiny_p4_cifar.cifar10'
    (tmp_path / name).mkdir()
    (tmp_path / name / 'model.safetensors').write_bytes(b'found before the checkout')
    monkeypatch.setenv('MACRL_WEIGHTS_DIR', str(tmp_path))
    listing.main([])
    shown, arch = {}, None
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith(' '):
            arch = line.split()[0]
        else:
            tag, state, where = line.split(maxsplit=2)
            shown[arch + tag] = (state, where)
    assert shown.keys() == pretrained.PUBLISHED.keys()
    assert all(shown[n][0] == 'published' for n in pretrained.list_published())
    assert all(shown[n] == ('planned', 'no weights yet') for n in pretrained.list_planned())
    assert shown[name][1] == f'local: {tmp_path / name / "model.safetensors"}'


import pytest


@pytest.mark.parametrize('args,match', [
    (['--objective', 'mae', '--bank-size', '4096'], '--objective mae does not use --bank-size'),
    (['--objective', 'mae', '--temperature', '0.1', '--alpha', '1'], 'does not use --alpha, --temperature'),
    (['--objective', 'moco', '--mask-ratio', '0.9'], '--objective moco does not use --mask-ratio'),
    (['--objective', 'moco', '--rec-on', 'visible'], 'does not use --rec-on'),
])
def test_contradictory_flags_refused_before_anything_runs(args, match, capsys, tmp_path):
    out = tmp_path / 'run'
    assert main(['train', '--out', str(out), '--data', str(tmp_path / 'none'), *args]) == 1
    assert match in capsys.readouterr().err
    assert not out.exists()  # nothing was created
