"""Export, model folders and loading by timm, plain timm, torch.hub and the Hub protocol (offline)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import macrl_hub  # noqa: F401
from macrl_hub.export import export
from macrl_hub.pretrained import PretrainedWeightsError, resolve_weights, sha256_file
from macrl_hub.weights import WeightsFileError, load_safetensors

from conftest import ROOT
from hub_server import HubServer

NAME = 'macrl_vit_tiny_p4_cifar.cifar10'


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A real (tiny-step) MACRL checkpoint of the full macrl_vit_tiny_p4_cifar, exported as a model folder."""
    from macrl_hub import MACRL
    from macrl_hub.train import _save
    from macrl_hub.config import TrainConfig
    root = tmp_path_factory.mktemp('export')
    torch.manual_seed(0)
    cfg = TrainConfig(bank_size=256, proj_hidden_dim=64)
    model = MACRL(timm.create_model('macrl_vit_tiny_p4_cifar'), **cfg.macrl_kwargs())
    opt = torch.optim.AdamW(model.parameters())
    _save(root / 'checkpoint.pth', model, opt, torch.amp.GradScaler('cpu', enabled=False), cfg, 3, 1.0, 'fp32')
    (root / 'knn.json').write_text(json.dumps({'eval': 'knn', 'knn_top1_k20': 41.5, 'knn_top1_k200': 40.25,
                                               'n_train': 50000, 'n_test': 10000, 'command': 'macrl eval knn ...',
                                               'wall_time_s': 1.0}) + '\n')
    folder = export(str(root / 'checkpoint.pth'), NAME, str(root / 'cards'), [str(root / 'knn.json')])
    return folder, model


def test_export_folder_contents(exported):
    folder, model = exported
    assert {p.name for p in folder.iterdir()} >= {'model.safetensors', 'config.json', 'README.md'}
    sd = load_safetensors(folder / 'model.safetensors')
    assert sd.keys() == model.encoder.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in model.encoder.state_dict().items())
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['architecture'] in timm.list_models('vit_*') and not cfg['architecture'].startswith('macrl')
    card = (folder / 'README.md').read_text()
    assert 'library_name: timm' in card and 'model-index' in card and 'value: 40.25' in card
    assert 'macrl train' in card and 'arXiv:2211.06012' in card


def _run(code: str, env: dict) -> str:
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, **env},
                         cwd=str(ROOT), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_plain_timm_local_dir_and_hf_hub_without_plugin(exported, tmp_path):
    folder, model = exported
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / 'x.pt')
    expected = model.encoder.eval()(x)
    code = (
        'import sys, torch, timm\n'
        f'x = torch.load({str(tmp_path / "x.pt")!r})\n'
        f'a = timm.create_model("local-dir:{folder}", pretrained=True).eval()\n'
        f'b = timm.create_model("hf-hub:test-org/{NAME}", pretrained=True).eval()\n'
        'assert "macrl_hub" not in sys.modules\n'
        f'torch.save([a(x), b(x)], {str(tmp_path / "out.pt")!r})\n'
    )
    with HubServer({f'test-org/{NAME}': folder}) as hub:
        _run(code, {'HF_ENDPOINT': hub.url, 'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_DISABLE_TELEMETRY': '1'})
        assert any(r[0] == 'GET' and r[1].endswith('model.safetensors') for r in hub.requests)
    a, b = torch.load(tmp_path / 'out.pt')
    assert torch.allclose(a, expected, atol=1e-6) and torch.allclose(b, expected, atol=1e-6)


def test_registered_name_downloads_from_hub_with_sha_check(exported, tmp_path):
    folder, model = exported
    sha = sha256_file(folder / 'model.safetensors')
    code = (
        'import torch, timm, macrl_hub\n'
        'from pathlib import Path\n'
        'from macrl_hub import pretrained\n'
        f'pretrained.PUBLISHED[{NAME!r}] = {sha!r}\n'
        f'pretrained.MODEL_CARDS_DIR = Path({str(tmp_path / "no_local")!r})\n'
        f'm = timm.create_model({NAME!r}, pretrained=True)\n'
        f'torch.save(m.state_dict(), {str(tmp_path / "sd.pt")!r})\n'
        f'pretrained.PUBLISHED[{NAME!r}] = "0" * 64\n'
        'try:\n'
        f'    timm.create_model({NAME!r}, pretrained=True)\n'
        'except pretrained.PretrainedWeightsError as e:\n'
        '    print("MISMATCH", e)\n'
    )
    with HubServer({f'macrl-hub/{NAME}': folder}) as hub:
        out = _run(code, {'HF_ENDPOINT': hub.url, 'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_DISABLE_TELEMETRY': '1',
                          'MACRL_WEIGHTS_DIR': str(tmp_path / 'no_weights')})
    sd = torch.load(tmp_path / 'sd.pt')
    assert all(torch.equal(sd[k], v) for k, v in model.encoder.state_dict().items())
    assert 'MISMATCH checksum mismatch' in out and sha in out and '0' * 64 in out
    # the plugin cached config.json beside the weights: the same model by its hf-hub: id now loads offline
    _run(f'import sys, torch, timm\n'
         f'm = timm.create_model("hf-hub:macrl-hub/{NAME}", pretrained=True)\n'
         'assert "macrl_hub" not in sys.modules\n'
         f'torch.save(m.state_dict(), {str(tmp_path / "sd_offline.pt")!r})\n',
         {'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_DISABLE_TELEMETRY': '1'})
    sd = torch.load(tmp_path / 'sd_offline.pt')
    assert all(torch.equal(sd[k], v) for k, v in model.encoder.state_dict().items())


def test_missing_weights_offline_says_where_it_looked(tmp_path, monkeypatch):
    from macrl_hub import pretrained
    monkeypatch.setitem(pretrained.PUBLISHED, NAME, '1' * 64)
    monkeypatch.setattr(pretrained, 'MODEL_CARDS_DIR', tmp_path / 'none')  # as in a wheel: no checkout
    monkeypatch.setenv('MACRL_WEIGHTS_DIR', str(tmp_path / 'weights'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, 'HF_HUB_OFFLINE', True)
    with pytest.raises(PretrainedWeightsError, match=r'(?s)Looked in:.*weights/macrl_vit_tiny_p4_cifar.cifar10/model'
                                                     r'.safetensors.*/macrl-hub/macrl_vit_tiny_p4_cifar.cifar10/') as e:
        resolve_weights(NAME)
    assert str(tmp_path / 'none') not in str(e.value)  # a checkout that is not there is not claimed as looked in


def test_local_first_and_corrupt_files(exported, tmp_path, monkeypatch):
    from macrl_hub import pretrained
    folder, model = exported
    cards = tmp_path / 'cards'
    (cards / NAME).mkdir(parents=True)
    data = (folder / 'model.safetensors').read_bytes()
    (cards / NAME / 'model.safetensors').write_bytes(data)
    monkeypatch.setattr(pretrained, 'MODEL_CARDS_DIR', cards)
    monkeypatch.setenv('MACRL_WEIGHTS_DIR', str(tmp_path / 'no_weights'))
    monkeypatch.setitem(pretrained.PUBLISHED, NAME, sha256_file(folder / 'model.safetensors'))
    m = timm.create_model(NAME, pretrained=True)
    assert torch.equal(m.pos_embed, model.encoder.pos_embed)
    assert 'state_dict' not in m.pretrained_cfg  # handed to timm in the cfg, not kept: no second copy of the weights
    asked = []
    monkeypatch.setattr('macrl_hub.models.resolve_weights', lambda n, cache_dir=None: asked.append(cache_dir) or
                        pretrained.resolve_weights(n, cache_dir))
    timm.create_model(NAME, pretrained=True, cache_dir=str(tmp_path / 'hf_cache'))  # timm's own keyword, passed on
    assert asked == [str(tmp_path / 'hf_cache')]
    # pretrained_cfg_overlay with a file keeps working as in timm (and wins)
    m2 = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')))
    assert torch.equal(m2.pos_embed, model.encoder.pos_embed)
    # truncated
    (cards / NAME / 'model.safetensors').write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedWeightsError, match='checksum mismatch'):
        timm.create_model(NAME, pretrained=True)
    with pytest.raises(WeightsFileError, match='truncated or corrupt'):
        load_safetensors(cards / NAME / 'model.safetensors')
    # a pickle offered as weights
    torch.save(model.encoder.state_dict(), tmp_path / 'pickle.safetensors')
    with pytest.raises(WeightsFileError, match='pickle'):
        load_safetensors(tmp_path / 'pickle.safetensors')


def test_export_rejects_other_architecture(exported, tmp_path):
    folder, _ = exported
    ck = folder.parent.parent / 'checkpoint.pth'
    for bad in ('macrl_vit_tiny_p4_cifar', 'macrl_vit_tiny_p4_cifar.my data/v1', 'macrl_vit_tiny_p4_cifar.a..b'):
        with pytest.raises(ValueError, match='--name'):  # the folder and the Hub repo name: checked before anything
            export(str(ck), bad, str(tmp_path / 'cards'))
    assert not (tmp_path / 'cards').exists()
    with pytest.raises(ValueError, match='is a macrl_vit_tiny_p4_cifar, not macrl_vit_small_p4_cifar'):
        export(str(ck), 'macrl_vit_small_p4_cifar.cifar10', str(tmp_path))
    bad = torch.load(ck, weights_only=True)
    bad['model'] = {k: v for k, v in bad['model'].items() if 'blocks.11' not in k}
    torch.save(bad, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=r'missing keys \[.blocks\.11'):
        export(str(tmp_path / 'bad.pth'), NAME, str(tmp_path))


def test_torch_hub_local(exported, tmp_path):
    m = torch.hub.load(str(ROOT), 'macrl_vit_tiny_p4_cifar', source='local', pretrained=False, num_classes=3)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    import hubconf
    from macrl_hub.models import MACRL_ARCHS
    assert all(callable(getattr(hubconf, arch)) and getattr(hubconf, arch).__doc__ for arch in MACRL_ARCHS)
    assert hubconf.dependencies == ['torch', 'timm', 'safetensors', 'huggingface_hub']


def test_demo_end_to_end_on_an_exported_folder(exported, cifar_archive, tmp_path, capsys):
    """The README's main job: model folder -> kNN on CIFAR-10 -> knn.json + attention.png."""
    from PIL import Image
    from macrl_hub.demo import main as demo
    folder, _ = exported
    rec = demo(['--model', str(folder), '--data', str(cifar_archive), '--n-train', '500', '--n-test', '200',
                '--n-images', '4', '--out', str(tmp_path / 'demo')])
    assert rec['n_train'] == 500 and rec['n_test'] == 200 and 0 <= rec['knn_top1_k200'] <= 100
    assert json.loads((tmp_path / 'demo' / 'knn.json').read_text())['knn_top1_k20'] == rec['knn_top1_k20']
    w, h = Image.open(tmp_path / 'demo' / 'attention.png').size
    assert w == 3 * 128 and h == 14 + 4 * 128  # image + last + rollout, 4 rows at 4x
    # knn.json is `macrl eval knn`'s record, with the fingerprint export checks (without it, export put the demo's
    # numbers of the published encoder on any checkpoint's card)
    from macrl_hub.evaluate import fingerprints, load_encoder
    assert rec['weights_sha256'] == fingerprints(load_encoder(str(folder)))['weights_sha256']
    assert rec['command'].startswith('macrl demo ') and rec['random_init'] is False
    with pytest.raises(SystemExit):
        demo(['--model', str(folder), '--data', str(cifar_archive), '--n-images', '0'])


def test_push_follows_the_hub_api_contract(exported, monkeypatch, tmp_path):
    """`macrl push` creates the repo (idempotently, the account's visibility unless --private) and the branch, then
    makes the repo hold exactly the folder's model files in one commit: other files stay local, an export file the
    folder lost is deleted. Bad ids and a missing token are refused before anything is sent, and the folder's card
    is rewritten only once the commit landed. (Recorded contract: the loopback server only speaks downloads.)"""
    import shutil
    import huggingface_hub
    from macrl_hub.push import push
    folder = Path(shutil.copytree(exported[0], tmp_path / exported[0].name))
    (folder / 'notes.txt').write_text('mine\n')
    card_before = (folder / 'README.md').read_text()
    calls, fail = [], []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(('create_repo', repo_id, kw))
            return type('RepoUrl', (), {'repo_id': repo_id})()

        def repo_info(self, repo_id):
            return type('Info', (), {'private': False})()  # it exists, public

        def create_branch(self, repo_id, branch, exist_ok):
            calls.append(('create_branch', repo_id, branch, exist_ok))

        def list_repo_files(self, repo_id, revision=None):
            return ['.gitattributes', 'README.md', 'model.safetensors', 'pretrain.safetensors']

        def create_commit(self, repo_id, operations, commit_message, revision=None):
            if fail:
                raise RuntimeError('500 Server Error')
            calls.append(('create_commit', repo_id, revision, list(operations)))
            return type('Info', (), {'commit_url': f'https://hub/{repo_id}/commit/1'})()

    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    for bad, match in (('me/bad name', 'Repo id must use'), ('noorg', r'<user or org>/<name>')):
        with pytest.raises(ValueError, match=match):
            push(str(folder), bad)
    monkeypatch.setenv('HF_TOKEN', '')
    monkeypatch.setattr(huggingface_hub, 'get_token', lambda: None)
    with pytest.raises(ValueError, match='no Hugging Face token: set HF_TOKEN or run `hf auth login`'):
        push(str(folder), 'me/macrl-tiny')
    monkeypatch.setattr(huggingface_hub, 'get_token', lambda: 'hf_test')
    with pytest.raises(ValueError, match='already exists and is public, and --private was asked: nothing was uploaded'):
        push(str(folder), 'me/macrl-tiny', private=True)
    assert not any(c[0] == 'create_commit' for c in calls)
    fail.append(1)
    with pytest.raises(RuntimeError):
        push(str(folder), 'me/macrl-tiny')
    assert (folder / 'README.md').read_text() == card_before  # nothing landed: the folder is as it was
    fail.clear()
    calls.clear()
    url = push(str(folder), 'me/macrl-tiny', revision='dev')
    assert url == 'https://hub/me/macrl-tiny/commit/1'
    assert calls[0] == ('create_repo', 'me/macrl-tiny', {'repo_type': 'model', 'private': None, 'exist_ok': True})
    assert calls[1] == ('create_branch', 'me/macrl-tiny', 'dev', True)
    _, repo, revision, ops = calls[2]
    assert (repo, revision) == ('me/macrl-tiny', 'dev')
    added = {op.path_in_repo: op for op in ops if isinstance(op, huggingface_hub.CommitOperationAdd)}
    deleted = [op.path_in_repo for op in ops if isinstance(op, huggingface_hub.CommitOperationDelete)]
    assert sorted(added) == sorted(f.name for f in folder.iterdir() if f.name != 'notes.txt')
    assert deleted == ['pretrain.safetensors']  # an earlier push's file; .gitattributes is the Hub's own
    uploaded = added['README.md'].path_or_fileobj.getvalue().decode() if hasattr(
        added['README.md'].path_or_fileobj, 'getvalue') else bytes(added['README.md'].path_or_fileobj).decode()
    # the card's loading code names the repo and branch it went to, in what was uploaded and in the folder
    assert "'hf-hub:me/macrl-tiny@dev'" in uploaded and 'hf-hub:macrl-hub/' not in uploaded
    assert (folder / 'README.md').read_text() == uploaded
    (tmp_path / 'half').mkdir()
    (tmp_path / 'half' / 'config.json').write_text('{}')
    calls.clear()
    with pytest.raises(ValueError, match=r"missing \['model.safetensors', 'README.md'\]"):
        push(str(tmp_path / 'half'), 'me/x')
    assert calls == []


def test_model_source_of_every_spec_rebuilds_the_architecture(exported, tmp_path):
    """`macrl eval finetune --out` writes a config.json from model_source(--model): for a name, a checkpoint, a model
    folder and an hf-hub: id it must name an architecture + args that rebuild the same network."""
    from macrl_hub.evaluate import model_source
    folder, model = exported
    code = ('import json\nfrom macrl_hub.evaluate import model_source\n'
            f'print(json.dumps(model_source("hf-hub:test-org/{NAME}")))\n')
    with HubServer({f'test-org/{NAME}': folder}) as hub:
        out = _run(code, {'HF_ENDPOINT': hub.url, 'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_DISABLE_TELEMETRY': '1'})
    specs = [tuple(json.loads(out.strip().splitlines()[-1])), model_source(str(folder)), model_source(NAME),
             model_source(str(folder.parent.parent / 'checkpoint.pth'))]
    want = {k: v.shape for k, v in model.encoder.state_dict().items()}
    for arch, args in specs:
        got = timm.create_model(arch, num_classes=0, **{k: v for k, v in args.items() if k != 'num_classes'})
        assert {k: v.shape for k, v in got.state_dict().items()} == want, arch


@pytest.mark.parametrize('arch,model_args', [
    *[(a, {'depth': 1}) for a in sorted(__import__('macrl_hub.models', fromlist=['MACRL_ARCHS']).MACRL_ARCHS)],
    ('vit_tiny_patch16_224', {'img_size': 32, 'patch_size': 4, 'depth': 1}),  # `macrl train --model vit_*`
    ('vit_tiny_r_s16_p8_224', {'depth': 1}),  # hybrid (CNN stem): a fine-tune's `--out` folder of one
])
def test_every_architecture_exports_a_folder_plain_timm_loads(arch, model_args, tmp_path):
    """config.json names a stock timm ViT that rebuilds the encoder exactly (512-d: not timm's ViT-Medium, whose
    LayerScale config.json cannot turn off); plain timm's `local-dir:` then loads the weights, strict."""
    from macrl_hub.export import write_model_files
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=0, **model_args).eval()
    folder = tmp_path / f'{arch}.x'
    config = write_model_files(model, folder, arch, model_args, 'x')
    assert not config['architecture'].startswith('macrl')
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    x = torch.randn(2, 3, model.patch_embed.img_size[0], model.patch_embed.img_size[1])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # config.json states the input size of the model it rebuilds (an img_size override included), for any reader
    assert tuple(config['pretrained_cfg']['input_size']) == tuple(x.shape[1:])


def test_export_of_a_stock_timm_vit_writes_a_complete_folder(tmp_path, monkeypatch):
    """A run of `macrl train --model vit_tiny_patch16_224 --model-args ...` exports under its own (stock) name, its
    card describing the trained geometry; and a failed export leaves nothing half-written behind."""
    from macrl_hub import MACRL
    from macrl_hub.config import TrainConfig
    from macrl_hub.train import _save
    cfg = TrainConfig(model='vit_tiny_patch16_224', model_args='{"img_size": 32, "patch_size": 4, "depth": 1}',
                      bank_size=64, proj_hidden_dim=32, out=str(tmp_path / 'myrun'))
    enc = timm.create_model(cfg.model, num_classes=0, **cfg.encoder_kwargs())
    model = MACRL(enc, **cfg.macrl_kwargs())
    _save(tmp_path / 'checkpoint.pth', model, torch.optim.AdamW(model.parameters()),
          torch.amp.GradScaler('cpu', enabled=False), cfg, 1, 1.0, 'fp32')
    folder = export(str(tmp_path / 'checkpoint.pth'), 'vit_tiny_patch16_224.mine', str(tmp_path / 'cards'))
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'vit_tiny_patch16_224' and config['model_args']['patch_size'] == 4
    card = (folder / 'README.md').read_text()
    assert '192-d, 1 layers, 3 heads, patch 4, 32x32 input' in card
    assert 'Features are the class token after the final LayerNorm' in card  # a stock ViT pools its class token
    # loading code that works for a name macrl_hub does not declare: no plugin short name, no torch.hub entry
    assert "timm.create_model('hf-hub:<your-hf-user-or-org>/vit_tiny_patch16_224.mine'" in card
    assert "local-dir:path/to/vit_tiny_patch16_224.mine" in card
    assert 'import macrl_hub' not in card and 'torch.hub.load' not in card
    # the user's model, not ours: trained *with* macrl-hub; no Hub dataset made up from the tag; no local paths
    assert 'with [macrl-hub](' in card and 'by [macrl-hub](' not in card
    from huggingface_hub import ModelCard
    assert ModelCard.load(folder / 'README.md').data.datasets is None
    assert '--out runs/myrun' in card and str(tmp_path) not in card
    from macrl_hub.card import public_out_arg
    assert public_out_arg("macrl train --out /home/me/run1/ --x 1") == 'macrl train --out runs/run1 --x 1'
    assert public_out_arg("macrl train --out '/home/my dir/run 1'") == "macrl train --out 'runs/run 1'"
    assert public_out_arg('macrl train --out runs/x --x 1') == 'macrl train --out runs/x --x 1'  # relative: as is
    named = export(str(tmp_path / 'checkpoint.pth'), 'vit_tiny_patch16_224.named', str(tmp_path / 'named'),
                   repo_id='me/tiny-mine', license='cc-by-nc-4.0')
    assert "timm.create_model('hf-hub:me/tiny-mine'" in (named / 'README.md').read_text()
    # the weights' license (e.g. the training data's terms) reaches the card's metadata and config.json
    assert ModelCard.load(named / 'README.md').data.license == 'cc-by-nc-4.0'
    assert json.loads((named / 'config.json').read_text())['pretrained_cfg']['license'] == 'cc-by-nc-4.0'
    assert ModelCard.load(folder / 'README.md').data.license == config['pretrained_cfg']['license'] == 'apache-2.0'
    with pytest.raises(ValueError, match="--license 'CC BY-NC 4.0' is not a Hugging Face Hub license id"):
        export(str(tmp_path / 'checkpoint.pth'), 'vit_tiny_patch16_224.bad', str(tmp_path / 'cards'),
               license='CC BY-NC 4.0')
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    assert config['pretrained_cfg']['input_size'] == [3, 32, 32]  # not the stock 224
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.encoder.eval()(x))
    # neither the stock cfg's AugReg .npz loader (timm would call it on our safetensors file), paper or preprocessing
    pcfg = config['pretrained_cfg']
    assert pcfg['custom_load'] is False and pcfg['paper_ids'] == 'arXiv:2211.06012' and pcfg['crop_pct'] == 1.0
    via_file = timm.create_model('vit_tiny_patch16_224', pretrained=True, num_classes=0, **config['model_args'],
                                 pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors'), **pcfg))
    assert torch.equal(via_file.eval()(x), loaded(x))
    with pytest.raises(FileNotFoundError):  # an eval JSON that is not there: nothing written
        export(str(tmp_path / 'checkpoint.pth'), 'vit_tiny_patch16_224.other', str(tmp_path / 'cards'),
               [str(tmp_path / 'missing.json')])

    def card_fails(*args, **kwargs):  # a failure after the weights and config.json are written
        raise RuntimeError('disk full')
    monkeypatch.setattr('macrl_hub.card.write_model_card', card_fails)
    with pytest.raises(RuntimeError, match='disk full'):
        export(str(tmp_path / 'checkpoint.pth'), 'vit_tiny_patch16_224.other', str(tmp_path / 'cards'))
    assert sorted(p.name for p in (tmp_path / 'cards').iterdir()) == ['vit_tiny_patch16_224.mine']


def test_plain_timm_preprocessing_from_config_json_is_macrls_pixel_for_pixel(tmp_path):
    """What `macrl eval`/`macrl train` feed an encoder (load_dataset: shorter side to the input size, centre crop)
    is what timm's resolve_data_config + create_transform make from the exported config.json, so a card's numbers
    hold for a plain-timm user: images of odd sizes, up- and downscaled, through both."""
    import numpy as np
    from PIL import Image
    from macrl_hub.data import load_dataset
    from macrl_hub.export import write_model_files
    model = timm.create_model('vit_tiny_patch16_224', num_classes=0, img_size=32, patch_size=4, depth=1)
    write_model_files(model, tmp_path / 'm.x', 'vit_tiny_patch16_224', {'img_size': 32, 'patch_size': 4, 'depth': 1},
                      'x')
    loaded = timm.create_model(f'local-dir:{tmp_path / "m.x"}', pretrained=True)
    cfg = timm.data.resolve_data_config({}, model=loaded)
    transform = timm.data.create_transform(**cfg)
    rng = np.random.default_rng(0)
    (tmp_path / 'data' / 'train' / 'c').mkdir(parents=True)
    shapes = [(50, 70), (71, 64), (33, 200), (90, 97), (21, 29), (31, 32)]  # (h, w): odd offsets, upscaling too
    for i, (h, w) in enumerate(shapes):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        img.save(tmp_path / 'data' / 'train' / 'c' / f'{i}.png')
    ours = load_dataset(str(tmp_path / 'data'), 'train', size=32, progress=False).images.float() / 255
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ('mean', 'std'))
    theirs = torch.stack([transform(Image.open(tmp_path / 'data' / 'train' / 'c' / f'{i}.png').convert('RGB'))
                          for i in range(len(shapes))])
    assert torch.allclose(theirs, (ours - mean) / std, atol=1e-5)


def test_a_model_fine_tuned_in_user_code_saves_as_a_folder_plain_timm_loads(tmp_path):
    """save_for_timm: a macrl_vit_* model created with overrides and trained in the user's own code becomes a
    folder that a fresh interpreter without macrl_hub loads with timm alone: same outputs, sizes, labels."""
    from macrl_hub.export import save_for_timm
    torch.manual_seed(0)
    model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1, img_size=48, num_classes=3, global_pool='max',
                              dynamic_img_size=True)
    with torch.no_grad():
        for p in model.parameters():  # "fine-tuned": no longer an init timm could reproduce
            p.add_(torch.randn_like(p))
    names = ['cat', 'dog', 'owl']
    config = save_for_timm(model.eval(), str(tmp_path / 'mine'), label_names=names)
    assert config['architecture'] == 'vit_tiny_patch16_224' and 'label_names' not in model.pretrained_cfg
    x = torch.randn(2, 3, 48, 48)
    torch.save(x, tmp_path / 'x.pt')
    code = ('import sys, json, torch, timm\n'
            f'm = timm.create_model("local-dir:{tmp_path / "mine"}", pretrained=True).eval()\n'
            'assert "macrl_hub" not in sys.modules\n'
            'cfg = timm.data.resolve_data_config({}, model=m)\n'
            'assert m(torch.randn(1, 3, 32, 40)).shape == (1, 3)  # dynamic_img_size carried\n'
            f'torch.save([m(torch.load({str(tmp_path / "x.pt")!r})), cfg["input_size"], '
            f'm.pretrained_cfg["label_names"]], {str(tmp_path / "out.pt")!r})\n')
    _run(code, {})
    y, size, labels = torch.load(tmp_path / 'out.pt')
    with torch.no_grad():
        assert torch.equal(y, model(x))
    assert tuple(size) == (3, 48, 48) and labels == names
    with pytest.raises(ValueError, match='2 label_names for a model with 3 classes'):
        save_for_timm(model, str(tmp_path / 'other'), label_names=['a', 'b'])
    with pytest.raises(ValueError, match='features_only wrapper'):
        save_for_timm(timm.create_model('macrl_vit_tiny_p4_cifar', depth=1, features_only=True, out_indices=(0,)),
                      str(tmp_path / 'f'))


def test_save_for_timm_carries_a_grayscale_or_non_square_fine_tune(tmp_path):
    """in_chans=1 and img_size=(32, 64) fine-tunes save and rebuild in plain timm with the same outputs (they were
    refused: the geometry recorded neither the channels nor the width)."""
    from macrl_hub.export import save_for_timm
    for i, kw in enumerate((dict(in_chans=1), dict(img_size=(32, 64)))):
        torch.manual_seed(0)
        model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1, num_classes=2, **kw).eval()
        config = save_for_timm(model, str(tmp_path / f'm{i}'))
        size = tuple(config['pretrained_cfg']['input_size'])
        x = torch.randn(2, *size)
        torch.save(x, tmp_path / f'x{i}.pt')
        _run('import sys, torch, timm\n'
             f'm = timm.create_model("local-dir:{tmp_path / f"m{i}"}", pretrained=True).eval()\n'
             'assert "macrl_hub" not in sys.modules\n'
             f'torch.save(m(torch.load({str(tmp_path / f"x{i}.pt")!r})), {str(tmp_path / f"y{i}.pt")!r})\n', {})
        with torch.no_grad():
            assert torch.equal(torch.load(tmp_path / f'y{i}.pt'), model(x)), kw
        assert size == ((1, 32, 32) if i == 0 else (3, 32, 64))
        assert len(config['pretrained_cfg']['mean']) == size[0]  # one mean per channel the model takes


def test_save_for_timm_takes_a_model_loaded_by_its_stock_name(tmp_path):
    """A published encoder loaded the plain-timm way (`local-dir:`/`hf-hub:`: a stock vit_tiny_patch16_224 built with
    config.json's model_args) and fine-tuned saves too: the geometry read off the model includes what the stock
    name's defaults differ in (no class token, fc_norm); it was refused ('would not rebuild ... cls_token')."""
    from macrl_hub.export import save_for_timm
    src = ROOT / 'model_cards' / 'macrl_vit_tiny_p4_cifar.cifar10'
    model = timm.create_model(f'local-dir:{src}', pretrained=True, num_classes=3)
    assert model.pretrained_cfg['architecture'] == 'vit_tiny_patch16_224' and model.cls_token is None
    config = save_for_timm(model, str(tmp_path / 'mine'), label_names=['a', 'b', 'c'])
    assert config['model_args']['class_token'] is False and config['model_args']['fc_norm'] is True
    again = timm.create_model(f'local-dir:{tmp_path / "mine"}', pretrained=True)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_for_timm_carries_register_tokens_and_no_embed_class(tmp_path):
    """A stock ViT with register tokens and position embeddings only on the patches (timm's *_reg4_* models) saves
    and rebuilds in plain timm with the same outputs."""
    from macrl_hub.export import save_for_timm
    torch.manual_seed(0)
    model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=1, reg_tokens=4,
                              no_embed_class=True, num_classes=2).eval()
    config = save_for_timm(model, str(tmp_path / 'reg'))
    assert config['model_args']['reg_tokens'] == 4 and config['model_args']['no_embed_class'] is True
    again = timm.create_model(f'local-dir:{tmp_path / "reg"}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_push_points_every_hub_id_of_a_card_at_its_repo():
    """push rewrites each quoted 'hf-hub:<id>' of the card's code, whatever an older export put there (an id with
    spaces was skipped, so the pushed card's code named a repo that cannot exist)."""
    from macrl_hub.push import _point_card_at
    text = ("m = timm.create_model('hf-hub:my org/tiny model', pretrained=True)\n"
            "n = timm.create_model('hf-hub:macrl-hub/x.cifar10', pretrained=True)  # 'not an id'\n")
    assert _point_card_at(text, 'me/tiny@dev') == text.replace('my org/tiny model', 'me/tiny@dev').replace(
        'macrl-hub/x.cifar10', 'me/tiny@dev')
