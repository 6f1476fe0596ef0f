import subprocess
import sys

from macrl_hub.cli import main

from conftest import ROOT


def test_help_lists_only_available_commands(capsys):
    assert main(['-h']) == 0
    out = capsys.readouterr().out
    for cmd in ('train', 'eval', 'models', 'download', 'export', 'push', 'viz', 'demo'):
        assert f'  {cmd} ' in out


def test_bare_macrl_is_a_usage_error(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == '' and captured.err.startswith('usage: macrl ')


def test_version(capsys, monkeypatch):
    import importlib.metadata
    import macrl_hub
    assert main(['--version']) == 0
    assert capsys.readouterr().out.strip() == f'macrl-hub {importlib.metadata.version("macrl-hub")}'

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, 'version', not_installed)
    assert main(['--version']) == 0
    assert capsys.readouterr().out.strip() == f'macrl-hub {macrl_hub.__version__}'


def test_debug_shows_the_traceback(capsys, tmp_path):
    import pytest
    argv = ['eval', 'knn', '--model', str(tmp_path / 'none.pth'), '--data', str(tmp_path)]
    assert main(argv) == 1
    assert 'Traceback' not in capsys.readouterr().err
    with pytest.raises(ValueError, match='none.pth'):
        main(['--debug'] + argv)


def test_unexpected_errors_are_one_line_too(capsys, monkeypatch, tmp_path):
    from macrl_hub import evaluate

    def bug(*a, **k):
        raise KeyError('a bug\nwith a second line')
    monkeypatch.setattr(evaluate, 'load_encoder', bug)
    assert main(['eval', 'knn', '--model', 'x', '--data', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('macrl eval: error: KeyError: ') and '--debug' in err and '\n' not in err


def test_usage_errors_exit_2(capsys):
    assert main(['eval', 'knn']) == 2  # --model missing
    assert 'required: --model' in capsys.readouterr().err
    assert main(['eval', 'knn', '--model', 'x', '--epochs', '3']) == 2  # a linear/finetune flag
    assert 'unrecognized arguments: --epochs 3' in capsys.readouterr().err
    assert main(['eval', 'classify', '--model', 'x', '--precision', 'f32']) == 2
    assert "invalid choice: 'f32'" in capsys.readouterr().err


def _flags(text: str) -> set:
    import re
    return set(re.findall(r'(?<![\w-])--[a-z][\w+-]*', text.split('options:', 1)[1]))


def test_each_eval_protocol_lists_only_its_flags(capsys):
    from macrl_hub.evaluate import PROTOCOLS
    flags = {}
    for protocol in PROTOCOLS:
        assert main(['eval', protocol, '-h']) == 0
        flags[protocol] = _flags(capsys.readouterr().out)
    assert {'--k', '--temperature'} <= flags['knn'] and not {'--epochs', '--lr', '--out', '--save-head'} & flags['knn']
    assert {'--epochs', '--lr', '--save-head'} <= flags['linear'] and not {'--k', '--out'} & flags['linear']
    assert flags['knn+linear'] == flags['knn'] | flags['linear']
    assert {'--layer-decay', '--out', '--resume'} <= flags['finetune']
    assert not {'--k', '--save-head'} & flags['finetune']
    assert not {'--n-train', '--k', '--epochs'} & flags['classify']
    shared = set.intersection(*flags.values())
    assert {'--model', '--precision', '--device', '--threads', '--seed'} <= shared


def test_eval_flags_say_their_default():
    from macrl_hub.evaluate import build_parser
    protocols = build_parser()._subparsers._group_actions[0].choices
    wanted = {'--k', '--temperature', '--precision', '--device', '--threads', '--seed'}
    seen = set()
    for parser in protocols.values():
        for action in parser._actions:
            flag = action.option_strings[-1] if action.option_strings else ''
            if flag in wanted:
                seen.add(flag)
                shown = parser._get_formatter()._expand_help(action) if action.help else ''  # as -h prints it
                assert 'default' in shown, flag
                if action.default is not None:
                    assert f'default: {action.default}' in shown, flag
    assert seen == wanted


def test_help_examples_keep_their_line_breaks(capsys):
    """A `\\` at the end of a docstring line is a line continuation unless escaped: the example collapses into one
    line with a run of spaces inside the command."""
    import re
    from macrl_hub.cli import _COMMANDS
    for cmd in _COMMANDS:
        assert main([cmd, '-h']) == 0, cmd
        out = capsys.readouterr().out
        assert not re.search(r'\S {4,}--', out), (cmd, re.search(r'.*\S {4,}--.*', out).group())


def test_bad_input_is_one_line_and_exit_1(capsys, tmp_path):
    assert main(['eval', 'knn', '--model', 'vit_nope', '--data', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('macrl eval: error: unknown model') and '\n' not in err
    assert main(['frobnicate']) == 2


# Runs each module as `python -m` does (runpy, run_name='__main__'), all in one child process: one torch import
# instead of one per command.
_RUN_EACH_AS_MAIN = """
import contextlib, io, runpy, sys, warnings
warnings.simplefilter('ignore', RuntimeWarning)  # 'found in sys.modules': a module the package imported already
for mod in sys.argv[1:]:
    sys.argv, out = [mod, '-h'], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module(mod, run_name='__main__', alter_sys=True)
        code = 'returned without exiting'
    except SystemExit as e:
        code = e.code
    print(mod, code, 'usage' in out.getvalue())
"""


def test_models_listing_and_module_entry_points():
    out = subprocess.run([sys.executable, '-m', 'macrl_hub.cli', 'models'], capture_output=True, text=True,
                         cwd=str(ROOT), check=True).stdout
    assert 'macrl_vit_tiny_p4_cifar' in out and '.cifar10_lin' in out
    from macrl_hub.cli import _COMMANDS
    mods = [mod for mod, _ in _COMMANDS.values()]  # the README: each command is also `python -m macrl_hub.<module>`
    r = subprocess.run([sys.executable, '-c', _RUN_EACH_AS_MAIN, *mods], capture_output=True, text=True,
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f'{mod} 0 True' for mod in mods], r.stdout + r.stderr


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


def test_weights_not_found_prints_where_it_looked_and_the_ways_out(tmp_path, monkeypatch, capsys):
    """The one error a wheel user meets offline: its whole message (places looked in, ways out), not its first line."""
    import huggingface_hub.constants as hc
    from macrl_hub import pretrained
    monkeypatch.setattr(pretrained, 'MODEL_CARDS_DIR', tmp_path / 'none')  # as in a wheel: no model_cards/
    monkeypatch.setenv('MACRL_WEIGHTS_DIR', str(tmp_path / 'weights'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hc, 'HF_HUB_OFFLINE', True)
    assert main(['eval', 'knn', '--model', 'macrl_vit_tiny_p4_cifar.cifar10', '--data', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert 'Looked in:' in err and 'Ways out:' in err and 'macrl download macrl_vit_tiny_p4_cifar.cifar10' in err
