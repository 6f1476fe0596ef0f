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


def test_random_init_is_random_whichever_the_spec(trained_ckpt, tmp_path):
    """`--random-init` (pretrained=False) with a checkpoint or a model folder: that architecture, untrained weights
    (it used to load the trained ones and record them as the chance-level reference)."""
    from macrl_hub.evaluate import save_model_folder
    folder = save_model_folder(load_encoder(str(trained_ckpt)), str(trained_ckpt), str(tmp_path / 'folder'), 'x')
    key = 'blocks.0.attn.qkv.weight'
    for spec in (str(trained_ckpt), str(folder)):
        trained, rand = load_encoder(spec).state_dict(), load_encoder(spec, pretrained=False).state_dict()
        assert trained.keys() == rand.keys() and len(load_encoder(spec, pretrained=False).blocks) == 2, spec
        assert not torch.equal(trained[key], rand[key]), spec


def test_eval_cli_prints_one_json_line(trained_ckpt, small_folder, capsys, tmp_path):
    knn = eval_main(['knn', '--model', str(trained_ckpt), '--data', str(small_folder), '--k', '5', '20',
                     '--json-out', str(tmp_path / 'knn.json')])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line) == knn == json.loads((tmp_path / 'knn.json').read_text())
    assert 0 <= knn['knn_top1_k5'] <= 100 and knn['n_train'] == 192 and knn['n_test'] == 64
    rec = eval_main(['linear', '--model', str(trained_ckpt), '--data', str(small_folder), '--epochs', '3',
                     '--save-head', str(tmp_path / 'head.safetensors')])
    assert 0 <= rec['linear_top1'] <= 100 and (tmp_path / 'head.safetensors').is_file()
    both = eval_main(['knn+linear', '--model', str(trained_ckpt), '--data', str(small_folder), '--k', '5', '20',
                      '--epochs', '3'])
    assert both['linear_top1'] == rec['linear_top1']  # one extraction gives the same numbers as two
    assert both['knn_top1_k5'] == knn['knn_top1_k5'] and both['knn_top1_k20'] == knn['knn_top1_k20']


def test_a_k_above_the_bank_size_is_recorded_and_shown_on_the_card(trained_ckpt, small_folder, tmp_path, capsys):
    """k=200 on a 192-image bank votes over the whole bank: same number as k=192, and the record and the card say
    so (the key keeps its name, which cards and results.py parse)."""
    from macrl_hub.export import export
    rec = eval_main(['knn', '--model', str(trained_ckpt), '--data', str(small_folder), '--k', '20', '200',
                     '--json-out', str(tmp_path / 'knn.json'), '--precision', 'fp32'])
    assert rec['knn_k_capped'] == {'200': 192} and 'k=200 uses all 192' in capsys.readouterr().err
    whole = eval_main(['knn', '--model', str(trained_ckpt), '--data', str(small_folder), '--k', '192',
                       '--precision', 'fp32'])
    assert rec['knn_top1_k200'] == whole['knn_top1_k192'] and 'knn_k_capped' not in whole
    arch = torch.load(trained_ckpt, weights_only=True)['arch']
    card = (export(str(trained_ckpt), f'{arch}.mine', str(tmp_path / 'cards'), [str(tmp_path / 'knn.json')])
            / 'README.md').read_text()
    row200, row20 = [next(l for l in card.splitlines() if l.startswith(f'| kNN top-1 (k={k})')) for k in (200, 20)]
    assert '(k capped at 192, the whole bank)' in row200 and 'capped' not in row20


def test_bad_model_specs(tmp_path):
    with pytest.raises(ValueError, match='unknown model'):
        load_encoder('vit_does_not_exist')
    with pytest.raises(ValueError, match='not found'):
        load_encoder(str(tmp_path / 'missing.pth'))
    bad = tmp_path / 'other.pth'
    torch.save({'weights': torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match='not a `macrl train` checkpoint'):
        load_encoder(str(bad))


def test_finetune_cli_learns_and_uses_layer_decay(trained_ckpt, small_folder, capsys):
    """192 images, 4 epochs: the mean train loss falls epoch over epoch (the whole model is trained with timm's
    layer-decayed AdamW groups), and the test accuracy is reported on the 64 test images."""
    rec = eval_main(['finetune', '--model', str(trained_ckpt), '--data', str(small_folder), '--epochs', '4',
                     '--batch-size', '32', '--lr', '3e-3', '--warmup-epochs', '1', '--threads', '1'])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == rec
    losses = rec['train_loss_per_epoch']
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.05, losses
    assert 0 <= rec['finetune_top1'] <= 100 and rec['n_test'] == 64 and rec['layer_decay'] == 0.75


def test_finetune_resumes_bit_for_bit_and_saves_a_loadable_classifier(trained_ckpt, small_folder, tmp_path,
                                                                     monkeypatch):
    """`--out` keeps finetune.pth after every epoch: a run killed in its third epoch, resumed with --resume, ends
    with the uninterrupted run's weights and numbers; the fine-tuned classifier folder classifies as reported."""
    from macrl_hub import weights
    from macrl_hub.weights import load_safetensors
    args = ['finetune', '--model', str(trained_ckpt), '--data', str(small_folder), '--epochs', '3',
            '--batch-size', '32', '--lr', '3e-3', '--warmup-epochs', '1']
    a, b = tmp_path / 'a', tmp_path / 'b'
    full = eval_main(args + ['--out', str(a)])
    saves, real_save = [], weights.atomic_torch_save

    def killed_in_third_epoch(obj, path):
        saves.append(path)
        if len(saves) == 3:
            raise KeyboardInterrupt('killed')
        real_save(obj, path)
    monkeypatch.setattr(weights, 'atomic_torch_save', killed_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        eval_main(args + ['--out', str(b)])
    monkeypatch.undo()
    assert torch.load(b / 'finetune.pth', weights_only=True)['epoch'] == 2 and not (b / 'model.safetensors').exists()
    with pytest.raises(FileExistsError, match='--resume'):  # never overwritten by a fresh run
        eval_main(args + ['--out', str(b)])
    with pytest.raises(ValueError, match=r'lr \(checkpoint 0.003, now 0.001\)'):
        eval_main(args[:-4] + ['--lr', '1e-3', '--warmup-epochs', '1', '--out', str(b), '--resume'])
    with pytest.raises(ValueError, match='other weights'):  # a fine-tune of another encoder is not continued
        eval_main(['finetune', '--model', 'macrl_vit_tiny_p4_cifar', '--random-init'] + args[3:] + ['--out', str(b),
                                                                                                  '--resume'])
    resumed = eval_main(args + ['--out', str(b), '--resume'])
    assert resumed['train_loss_per_epoch'] == full['train_loss_per_epoch']
    assert resumed['finetune_top1'] == full['finetune_top1']
    sa, sb = load_safetensors(a / 'model.safetensors'), load_safetensors(b / 'model.safetensors')
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    shipped = eval_main(['classify', '--model', str(b), '--data', str(small_folder)])
    assert shipped['classify_top1'] == full['finetune_top1'] and shipped['label_names'] == full['label_names']
    with pytest.raises(SystemExit):
        eval_main(['knn', '--model', str(trained_ckpt), '--data', str(small_folder), '--out', str(b)])


def test_finetune_layer_decay_scales_early_layers_down(trained_ckpt):
    from timm.optim import create_optimizer_v2
    enc = load_encoder(str(trained_ckpt))
    enc.reset_classifier(10)
    opt = create_optimizer_v2(enc, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scale = {id(p): g['lr_scale'] for g in opt.param_groups for p in g['params']}
    first, last, head = (scale[id(enc.blocks[0].attn.qkv.weight)], scale[id(enc.blocks[-1].attn.qkv.weight)],
                         scale[id(enc.head.weight)])
    assert first < last < head == 1.0, (first, last, head)


def test_classify_a_lin_folder_gives_the_probe_accuracy(trained_ckpt, small_folder, tmp_path):
    """`macrl eval classify` on an exported *_lin folder (encoder + folded probe head) reproduces the linear probe's
    test top-1, so a classifier tag's card number can be checked as the model ships."""
    from macrl_hub.evaluate import eval_classify
    from macrl_hub.export import export
    probe = eval_main(['linear', '--model', str(trained_ckpt), '--data', str(small_folder), '--epochs', '5',
                       '--save-head', str(tmp_path / 'head.safetensors'), '--precision', 'fp32'])
    arch = torch.load(trained_ckpt, weights_only=True)['arch']
    folder = export(str(trained_ckpt), f'{arch}.tiny_lin', str(tmp_path / 'cards'), head=str(tmp_path / 'head.safetensors'))
    rec = eval_main(['classify', '--model', str(folder), '--data', str(small_folder), '--precision', 'fp32'])
    assert rec['n_test'] == 64 and rec['label_names'] == probe['label_names']
    assert abs(rec['classify_top1'] - probe['linear_top1']) <= 100 / 64 + 1e-6  # at most one image (fp rounding)
    with pytest.raises(ValueError, match='no classifier head'):
        eval_classify(load_encoder(str(trained_ckpt)), str(small_folder))
    with pytest.raises(ValueError, match='classifies into 3 classes'):
        eval_classify(load_encoder(str(trained_ckpt), num_classes=3), str(small_folder))


def test_eval_protocol_paper_fills_the_papers_settings_and_flags_win(trained_ckpt, small_folder, monkeypatch,
                                                                      capsys):
    """`--protocol paper`: the paper's CIFAR probe (AdamW, wd 0, random resized crop + flip, 200 epochs, warmup) and
    fine-tune (wd 0.01, 200 epochs); `paper-subsets` its ImageNet-subset epochs (probe 1,000, fine-tune 400); values
    typed here from the paper, not read from recipes.py."""
    import macrl_hub.evaluate as ev
    base = ['--model', str(trained_ckpt), '--data', str(small_folder), '--precision', 'fp32']
    fast = eval_main(['linear', *base, '--epochs', '2'])
    assert (fast['probe_optimizer'], fast['probe_weight_decay'], fast['probe_augment']) == ('sgd', 0.0, False)
    assert 'probe_warmup_epochs' not in fast  # cosine from the first step, as every published card's probe
    calls = []
    orig = ev._augmented_features

    def spy(*a, **kw):
        feats = orig(*a, **kw)
        return lambda idx: (lambda f: (calls.append((idx.clone(), f)), f)[1])(feats(idx))
    monkeypatch.setattr(ev, '_augmented_features', spy)
    with pytest.raises(SystemExit):  # the paper's 10 warmup epochs in a 2-epoch probe: refused before any work
        eval_main(['linear', *base, '--protocol', 'paper', '--epochs', '2'])
    assert '--warmup-epochs 10 leaves no decay in a 2-epoch probe' in capsys.readouterr().err
    paper = eval_main(['linear', *base, '--protocol', 'paper', '--epochs', '2', '--warmup-epochs', '1'])
    assert (paper['probe_optimizer'], paper['probe_weight_decay'], paper['probe_augment'], paper['probe_lr']) == \
        ('adamw', 0.0, True, 0.1)
    assert paper['probe_epochs'] == 2  # the flag given wins over the protocol's 200
    assert paper['probe_warmup_epochs'] == 1  # the flag given; the protocol's own is 10 (below)
    assert sum(len(i) for i, _ in calls) >= 2 * 192  # each epoch drew augmented features of all 192 images
    seen = {}  # image -> its features per draw: fresh crops each epoch, not one augmented copy reused
    for idx, f in calls:
        for i, row in zip(idx.tolist(), f):
            seen.setdefault(i, []).append(row)
    assert all(len(v) >= 2 for v in seen.values()) and len(seen) == 192
    assert all(not torch.equal(v[0], v[1]) for v in seen.values())
    assert paper['linear_top1'] != fast['linear_top1'] or paper['linear_train_top1'] != fast['linear_train_top1']
    captured = {}
    monkeypatch.setattr(ev, 'eval_finetune', lambda model, data, **kw: captured.update(kw) or
                        {'finetune_top1': 0.0, 'label_names': []})
    eval_main(['finetune', *base, '--protocol', 'paper', '--lr', '1e-4'])
    assert (captured['epochs'], captured['weight_decay'], captured['lr']) == (200, 0.01, 1e-4)
    eval_main(['finetune', *base])
    assert (captured['epochs'], captured['weight_decay'], captured['lr']) == (100, 0.05, 1.5e-3)
    # Sec. 4.2, the ImageNet subsets: "fine-tuned for 400 epochs, and linear probed for 1,000 epochs"
    eval_main(['finetune', *base, '--protocol', 'paper-subsets'])
    assert (captured['epochs'], captured['weight_decay'], captured['lr']) == (400, 0.01, 1.5e-3)
    monkeypatch.setattr(ev, 'eval_linear', lambda model, data, **kw: captured.update(kw) or
                        {'linear_top1': 0.0, 'label_names': []})
    eval_main(['linear', *base, '--protocol', 'paper-subsets'])
    assert (captured['epochs'], captured['optimizer'], captured['augment'], captured['warmup_epochs']) == \
        (1000, 'adamw', True, 10)


def test_features_follow_an_img_size_override():
    """`--model-args '{"img_size": 48}'`: features are taken at 48 px (the cfg still says 32; eval used to feed 32 and
    fail on the model's input check)."""
    import timm
    from macrl_hub.features import data_config, extract_features
    model = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1, img_size=48)
    assert data_config(model)[0] == 48
    feats = extract_features(model, torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), progress=False,
                             precision='fp32')
    assert feats.shape == (4, 192)


def test_fp16_finetune_scales_its_loss_and_keeps_the_scale_in_its_checkpoint(trained_ckpt, small_folder, tmp_path,
                                                                              monkeypatch):
    """fp16 (a GPU without bf16, or --precision fp16) fine-tunes through a GradScaler, as pretraining does: without
    one, small gradients underflow to zero. The scale is saved with finetune.pth for --resume."""
    scaled = []
    real = torch.amp.GradScaler.scale

    def spy(self, loss):
        scaled.append(self.is_enabled())
        return real(self, loss)
    monkeypatch.setattr(torch.amp.GradScaler, 'scale', spy)
    eval_main(['finetune', '--model', str(trained_ckpt), '--data', str(small_folder), '--epochs', '1',
               '--batch-size', '32', '--precision', 'fp16', '--n-train', '64', '--out', str(tmp_path / 'ft')])
    assert scaled and all(scaled)
    assert torch.load(tmp_path / 'ft' / 'finetune.pth', weights_only=True)['scaler']['scale'] > 0


def test_export_puts_on_a_card_only_numbers_measured_on_its_weights(trained_ckpt, small_folder, tmp_path):
    """An eval record names the weights it measured; `macrl export` refused nothing: a record of another run, or of
    an untrained encoder (--random-init), went on the card (metadata and table) as this model's numbers."""
    from macrl_hub.export import export
    other = tmp_path / 'other'
    train(_cfg(small_folder, other, max_steps=1, seed=5))
    args = ['knn', '--data', str(small_folder), '--n-test', '32', '--k', '20']
    half = tmp_path / 'cards' / 'macrl_vit_tiny_p4_cifar.half'
    runs = {'ours': ['--model', str(trained_ckpt)], 'fp16': ['--model', str(half)],
            'other': ['--model', str(other / 'checkpoint.pth')],
            'random': ['--model', str(trained_ckpt), '--random-init']}
    export(str(trained_ckpt), 'macrl_vit_tiny_p4_cifar.half', str(tmp_path / 'cards'), fp16=True)
    for name, spec in runs.items():
        eval_main(args + spec + ['--json-out', str(tmp_path / f'{name}.json')])
    record = json.loads((tmp_path / 'ours.json').read_text())
    assert len(record['weights_sha256']) == 64
    # this checkpoint's numbers, measured on it or on its fp16 export, go on its card (fp32 or fp16)
    for fp16 in (False, True):
        folder = export(str(trained_ckpt), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / f'ok{fp16}'),
                        [str(tmp_path / 'ours.json'), str(tmp_path / 'fp16.json')], fp16=fp16)
        assert f"{record['knn_top1_k20']:.2f}" in (folder / 'README.md').read_text()
    # an fp16 copy of the checkpoint (gpu_job.py packs runs so) takes the record measured on the fp32 one
    ck = torch.load(trained_ckpt, weights_only=True)
    ck['model'] = {k: v.half() if v.is_floating_point() else v for k, v in ck['model'].items()}
    torch.save(ck, tmp_path / 'half.pth')
    export(str(tmp_path / 'half.pth'), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / 'okhalf'),
           [str(tmp_path / 'ours.json')])
    with pytest.raises(ValueError, match=r'other.json measured other weights .* than this checkpoint'):
        export(str(trained_ckpt), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / 'bad'), [str(tmp_path / 'other.json')])
    with pytest.raises(ValueError, match=r'random.json measured an untrained encoder'):
        export(str(trained_ckpt), 'macrl_vit_tiny_p4_cifar.mine', str(tmp_path / 'bad'),
               [str(tmp_path / 'random.json')])
    assert not (tmp_path / 'bad').exists()


def test_model_specs_timm_ids_a_folders_model_safetensors_and_run_folders(trained_ckpt, tmp_path):
    """timm's `local-dir:` (and `hf-hub:`) ids reach timm (they were 'not found'); a model folder's own
    model.safetensors stands for the folder; a bare safetensors file and a training run's folder get errors that
    say what to pass instead (a KeyError and 'not found' before)."""
    import shutil
    from macrl_hub.evaluate import model_source, save_model_folder
    folder = save_model_folder(load_encoder(str(trained_ckpt)), str(trained_ckpt), str(tmp_path / 'folder'), 'x')
    want = load_encoder(str(folder)).state_dict()
    for spec in (f'local-dir:{folder}', str(folder / 'model.safetensors')):
        got = load_encoder(spec).state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), spec
        assert model_source(spec) == model_source(str(folder))
    shutil.copy(folder / 'model.safetensors', tmp_path / 'weights.safetensors')
    with pytest.raises(ValueError, match='a bare safetensors file does not say which architecture'):
        load_encoder(str(tmp_path / 'weights.safetensors'))
    with pytest.raises(ValueError, match=r'is a `macrl train` run folder, not a model folder: pass its checkpoint, '
                                         r'--model .*checkpoint.pth'):
        load_encoder(str(trained_ckpt.parent))
    with pytest.raises(ValueError, match='--model-args applies to a timm name'):
        load_encoder(str(trained_ckpt), model_args={'depth': 3})


def test_random_init_follows_the_seed_and_model_args_reach_timm(small_folder):
    """`--random-init` draws its weights from --seed: the chance-level reference is one number per seed (it changed
    on every run, and a random-init fine-tune could not be resumed). `--model-args` builds a timm name as
    timm.create_model would, and the record keeps them."""
    args = ['knn', '--model', 'macrl_vit_tiny_p4_cifar', '--random-init', '--data', str(small_folder), '--k', '5',
            '--model-args', '{"depth": 2, "embed_dim": 32, "num_heads": 2}', '--precision', 'fp32']
    a, b, c = (eval_main(args + ['--seed', s]) for s in ('3', '3', '4'))
    assert a['weights_sha256'] == b['weights_sha256'] != c['weights_sha256']
    assert a['knn_top1_k5'] == b['knn_top1_k5']
    assert a['model_args'] == {'depth': 2, 'embed_dim': 32, 'num_heads': 2}
    with pytest.raises(SystemExit):
        eval_main(args[:-4] + ['--model-args', '[2]'])


def test_bad_flags_and_unwritable_outputs_fail_before_any_work(small_folder, tmp_path, monkeypatch, capsys):
    """--k 0 / --temperature 0 (chance-level numbers, accepted before), and a --json-out or --save-head that cannot
    be written (it failed after the whole evaluation, losing the head and the record), are refused up front."""
    from macrl_hub import evaluate
    monkeypatch.setattr(evaluate, 'load_encoder', lambda *a, **k: pytest.fail('the evaluation started'))
    (tmp_path / 'a_file').write_text('')
    base = ['--model', 'macrl_vit_tiny_p4_cifar', '--data', str(small_folder)]
    for argv, msg in ((['knn', *base, '--k', '0'], '--k needs numbers >= 1'),
                      (['knn', *base, '--temperature', '0'], 'and --temperature a number > 0'),
                      (['knn', *base, '--json-out', str(tmp_path)], 'is a folder: give a file path in it'),
                      (['knn+linear', *base, '--save-head', str(tmp_path / 'a_file' / 'head.safetensors')],
                       'is a file, so nothing can be written below it')):
        with pytest.raises(SystemExit):
            eval_main(argv)
        assert msg in capsys.readouterr().err, argv
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            eval_main(['knn', *base, '--device', 'cuda'])
        assert 'no CUDA GPU torch can use' in capsys.readouterr().err


def test_finetune_another_family_moved_data_and_the_warmup_it_ran(trained_ckpt, small_folder, tmp_path, capsys):
    """A non-ViT (a ResNet) fine-tuned with --out saves a folder that classifies as reported (it crashed after
    training, losing the number); the record is printed before the folder is written. A resume finds the data by
    its images, not by how --data is spelled (a moved folder continues; other images are refused). A warmup longer
    than half the run is capped, said, and recorded as run."""
    import shutil
    args = ['finetune', '--model', 'resnet10t', '--random-init', '--data', str(small_folder), '--epochs', '2',
            '--batch-size', '32', '--n-train', '64', '--precision', 'fp32', '--threads', '1', '--out',
            str(tmp_path / 'ft')]
    rec = eval_main(args)
    assert rec['warmup_epochs'] == 1.0 and '--warmup-epochs 5 is more than half of 2 epochs' in capsys.readouterr().err
    shipped = eval_main(['classify', '--model', str(tmp_path / 'ft'), '--data', str(small_folder), '--precision',
                         'fp32'])
    assert shipped['classify_top1'] == rec['finetune_top1']
    moved = tmp_path / 'moved'
    shutil.copytree(small_folder, moved)
    again = eval_main([a if a != str(small_folder) else str(moved) + '/' for a in args] + ['--resume'])
    assert again['finetune_top1'] == rec['finetune_top1']
    for f in list((moved / 'test').rglob('*.png'))[:3]:
        f.unlink()
    with pytest.raises(ValueError, match=r'n_test_images \(checkpoint 64, now 61\)'):
        eval_main([a if a != str(small_folder) else str(moved) for a in args] + ['--resume'])


def test_export_takes_only_a_head_probed_on_this_checkpoint(trained_ckpt, small_folder, tmp_path):
    """`macrl export --head` loads head.weight/head.bias only: a whole model's safetensors (whose tensors replaced the
    checkpoint's encoder, silently), a head of another width, and a head probed on other weights (its fingerprint,
    saved by --save-head) are refused, naming the file; so is a --repo-id the Hub would not take."""
    from macrl_hub.export import export
    from macrl_hub.weights import save_safetensors
    arch = torch.load(trained_ckpt, weights_only=True)['arch']
    head = tmp_path / 'head.safetensors'
    eval_main(['linear', '--model', str(trained_ckpt), '--data', str(small_folder), '--epochs', '1', '--save-head',
               str(head)])
    other = tmp_path / 'other'
    train(_cfg(small_folder, other, max_steps=1, seed=7))
    whole = export(str(trained_ckpt), f'{arch}.whole_lin', str(tmp_path / 'cards'), head=str(head))
    cards = str(tmp_path / 'cards')
    with pytest.raises(ValueError, match=r'is not a linear head \(head.weight \+ head.bias.*it holds \d+ tensors'):
        export(str(other / 'checkpoint.pth'), f'{arch}.a_lin', cards, head=str(whole / 'model.safetensors'))
    with pytest.raises(ValueError, match='was trained on other weights than this checkpoint'):
        export(str(other / 'checkpoint.pth'), f'{arch}.b_lin', cards, head=str(head))
    save_safetensors({'head.weight': torch.zeros(10, 7), 'head.bias': torch.zeros(10)}, tmp_path / 'narrow.safetensors')
    with pytest.raises(ValueError, match='takes 7-d features'):
        export(str(trained_ckpt), f'{arch}.c_lin', cards, head=str(tmp_path / 'narrow.safetensors'))
    for bad in ('my org/tiny model', 'https://huggingface.co/me/x', 'me'):
        with pytest.raises(ValueError, match='--repo-id must be <user or org>/<name>'):
            export(str(trained_ckpt), f'{arch}.d', cards, repo_id=bad)
    assert sorted(p.name for p in (tmp_path / 'cards').iterdir()) == [f'{arch}.whole_lin']  # nothing else written


def test_a_local_dir_fine_tune_keeps_its_model_args(tmp_path):
    """--model local-dir:<folder> --model-args: the saved folder is rebuilt with the folder's arguments and the
    overrides (model_source dropped the overrides: the save failed after the fine-tune, or lost dynamic_img_size)."""
    import timm
    from macrl_hub.evaluate import model_source, save_model_folder
    from macrl_hub.export import write_model_files
    src = tmp_path / 'src'
    write_model_files(timm.create_model('macrl_vit_tiny_p4_cifar', depth=1), src, 'macrl_vit_tiny_p4_cifar',
                      {'depth': 1}, 'x')
    spec, over = f'local-dir:{src}', {'img_size': 48}
    assert model_source(spec, over)[1]['img_size'] == 48 and model_source(spec, over)[1]['depth'] == 1
    model = load_encoder(spec, num_classes=3, model_args=over)
    save_model_folder(model, spec, str(tmp_path / 'ft'), 'finetuned', model_args=over)
    again = load_encoder(str(tmp_path / 'ft'))
    assert again.patch_embed.img_size == (48, 48) and again.num_classes == 3
