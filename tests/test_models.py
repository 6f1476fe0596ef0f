import subprocess
import sys

import pytest
import timm
import torch

import macrl_hub  # noqa: F401
from macrl_hub.models import MACRL_ARCHS, _timm_cfgs, architecture_args
from macrl_hub.pretrained import PretrainedWeightsError, list_planned, list_published


def test_registered():
    assert set(timm.list_models('macrl_*')) == set(MACRL_ARCHS)
    tags = timm.list_pretrained('macrl_vit_tiny_p4_cifar*')
    assert 'macrl_vit_tiny_p4_cifar.cifar10' in tags and 'macrl_vit_tiny_p4_cifar.cifar10_lin' in tags


def test_timm_lists_exactly_the_published_tags():
    assert timm.list_pretrained('macrl_*') == list_published()
    assert not set(list_planned()) & set(timm.list_models('macrl_*', include_tags=True))


def test_a_tag_is_registered_once_it_has_weights():
    """_timm_cfgs on a table where one planned tag gains its sha256: it becomes a (weighted, default-first) cfg."""
    table = {'a.cifar10': None, 'a.cifar100': None, 'b.cifar10': 'sha', 'b.cifar10_lin': None}
    cfgs = _timm_cfgs(table, ['a', 'b', 'c'])
    assert list(cfgs) == ['b.cifar10', 'a', 'c']  # an arch without weights: one weightless cfg, its bare name
    assert cfgs['b.cifar10']['hf_hub_id'] and not cfgs['a'].get('hf_hub_id')
    assert cfgs['a']['mean'] == timm.get_pretrained_cfg('macrl_vit_tiny_p4_cifar.cifar10').mean  # first planned's
    cfgs = _timm_cfgs(dict(table, **{'b.cifar10_lin': 'sha2', 'a.cifar100': 'sha3'}), ['a', 'b', 'c'])
    assert list(cfgs) == ['a.cifar100', 'b.cifar10', 'b.cifar10_lin', 'c']
    assert cfgs['a.cifar100']['mean'] != cfgs['b.cifar10']['mean']  # each tag keeps its own preprocessing


@pytest.mark.parametrize('spec,kw,name', [
    ('macrl_vit_medium_p4_cifar', {}, 'macrl_vit_medium_p4_cifar.cifar10'),  # an arch with no weights at all
    ('macrl_vit_medium_p4_cifar.cifar100', {}, 'macrl_vit_medium_p4_cifar.cifar100'),
    ('macrl_vit_tiny_p4_cifar', dict(pretrained_cfg='cifar100'), 'macrl_vit_tiny_p4_cifar.cifar100'),
])
def test_planned_tag_says_which_weights_exist(spec, kw, name, monkeypatch):
    monkeypatch.setitem(macrl_hub.PUBLISHED, name, None)
    with pytest.raises(PretrainedWeightsError, match=f'no weights are published for .{name}. yet') as info:
        timm.create_model(spec, pretrained=True, **kw)
    assert all(n in str(info.value) for n in list_published())
    assert isinstance(timm.create_model(spec.split('.')[0], pretrained=False), timm.models.VisionTransformer)


@pytest.mark.parametrize('arch', sorted(MACRL_ARCHS))
def test_every_arch_builds_and_trains(arch):
    m = timm.create_model(arch)
    a = MACRL_ARCHS[arch]
    assert isinstance(m, timm.models.VisionTransformer)
    assert m.num_features == a['embed_dim'] and len(m.blocks) == a['depth'] and m.num_classes == 0
    assert m.global_pool == 'avg' and m.cls_token is None and not isinstance(m.fc_norm, torch.nn.Identity)
    x = torch.randn(2, 3, a['img_size'], a['img_size'], requires_grad=True)
    y = m(x)
    assert y.shape == (2, a['embed_dim'])
    y.sum().backward()
    assert x.grad is not None and m.patch_embed.proj.weight.grad is not None
    cfg = timm.data.resolve_data_config({}, model=m)
    assert cfg['input_size'] == (3, a['img_size'], a['img_size'])


def test_an_img_size_override_is_what_timm_preprocessing_sizes_for():
    """`img_size=64` (timm resamples the position embedding of the 32 px weights): timm's own data config and
    transform then make 64 px inputs, which the model takes (timm's stock ViTs keep saying their cfg's size)."""
    from PIL import Image
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2, img_size=64).eval()
    cfg = timm.data.resolve_data_config({}, model=m)
    assert cfg['input_size'] == (3, 64, 64) and cfg['mean'] == timm.create_model('macrl_vit_tiny_p4_cifar',
                                                                                   depth=1).pretrained_cfg['mean']
    x = timm.data.create_transform(**cfg)(Image.new('RGB', (32, 32))).unsqueeze(0)
    assert m(x).shape == (1, 192)


def test_the_cfg_follows_the_model_built_and_leaves_a_users_overlay_alone():
    """Every features_only wrapper drops the handed-over weights from its cfgs (FeatureHookNet's .body kept the whole
    checkpoint: +43 MB per pickled ViT-S/4) and the fx one says the size it was built for; a user's
    pretrained_cfg_overlay input_size stands; in_chans=1 gets one mean and std; a model resized after creation
    names the timm call that sizes for it."""
    for cls in ('getter', 'hook', 'fx'):
        m = timm.create_model('macrl_vit_tiny_p4_cifar.cifar10', pretrained=True, features_only=True,
                              feature_cls=cls, img_size=64, out_indices=(-1,))
        cfgs = [c for mod in m.modules() for c in (getattr(mod, 'pretrained_cfg', None),) if isinstance(c, dict)]
        assert cfgs and all('state_dict' not in c for c in cfgs), cls
        assert timm.data.resolve_data_config({}, model=m)['input_size'] == (3, 64, 64), cls
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1, dynamic_img_size=True,
                          pretrained_cfg_overlay=dict(input_size=(3, 48, 48)))
    assert m.pretrained_cfg['input_size'] == (3, 48, 48)
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1, in_chans=1)
    cfg = timm.data.resolve_data_config({}, model=m)
    assert cfg['input_size'] == (1, 32, 32) and len(cfg['mean']) == len(cfg['std']) == 1
    with pytest.raises(ValueError, match=r"grayscale model: read images with PIL's .convert\('L'\)"):
        m(torch.randn(1, 3, 32, 32))
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1)
    m.set_input_size(img_size=64)
    with pytest.raises(ValueError, match=r'expects input \(B, 3, 64, 64\).*resolve_(input|model)_data_config'):
        m(torch.randn(1, 3, 32, 32))


def test_classifier_tag_builds_its_head():
    m = timm.create_model('macrl_vit_tiny_p4_cifar.cifar10_lin')
    assert m.num_classes == 10 and m.pretrained_cfg['label_names'][0] == 'airplane'
    assert timm.create_model('macrl_vit_tiny_p4_cifar').num_classes == 0
    assert timm.create_model('macrl_vit_tiny_p4_cifar.cifar10_lin', num_classes=0).num_classes == 0


def test_timm_features_api():
    m = timm.create_model('macrl_vit_tiny_p4_cifar', num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 10)
    tokens = m.forward_features(x)
    assert tokens.shape == (2, 64, 192)
    # the feature is the mean of the patch tokens, then fc_norm
    assert torch.allclose(m.forward_head(tokens, pre_logits=True), m.fc_norm(tokens.mean(1)), atol=1e-5)
    inter = m.forward_intermediates(x, indices=2, intermediates_only=True)
    assert len(inter) == 2 and inter[0].shape == (2, 192, 8, 8)
    m.reset_classifier(5)
    assert m(x).shape == (2, 5)
    m.set_grad_checkpointing(True)
    assert m(x).shape == (2, 5)
    assert 'blocks' in str(m.group_matcher())
    f = timm.create_model('macrl_vit_tiny_p4_cifar', features_only=True, out_indices=(-1,))
    assert f(x)[0].shape == (2, 192, 8, 8)


def test_encoder_state_dict_roundtrip_into_plain_timm():
    ours = timm.create_model('macrl_vit_small_p4_cifar').eval()
    args = architecture_args('macrl_vit_small_p4_cifar')
    plain = timm.models.VisionTransformer(**args).eval()
    plain.load_state_dict(ours.state_dict())  # strict: same keys, same shapes
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(ours(x), plain(x))


def test_plain_timm_in_a_fresh_process_matches():
    """A Python that never imports macrl_hub rebuilds the model from architecture_args alone."""
    ours = timm.create_model('macrl_vit_tiny_p4_cifar').eval()
    code = (
        'import sys, torch, timm, json\n'
        'assert "macrl_hub" not in sys.modules\n'
        'args = json.loads(sys.argv[1])\n'
        'm = timm.models.VisionTransformer(**args)\n'
        'print(sorted(m.state_dict().keys()) == json.loads(sys.argv[2]))\n'
    )
    import json
    out = subprocess.run([sys.executable, '-c', code, json.dumps(architecture_args('macrl_vit_tiny_p4_cifar')),
                          json.dumps(sorted(ours.state_dict().keys()))], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'True'


def _image(arch: str, batch: int = 2) -> torch.Tensor:
    size = MACRL_ARCHS[arch]['img_size']
    return torch.randn(batch, 3, size, size)


@pytest.mark.parametrize('arch', sorted(MACRL_ARCHS))
def test_every_arch_scripts_and_exports(arch):
    """TorchScript and torch.export (batch dimension dynamic) give the eager outputs. Two blocks, as for ONNX below:
    what differs between archs (patch size, width, heads, input size) is all there; depth only repeats blocks."""
    m = timm.create_model(arch, depth=2).eval()
    x, x3 = _image(arch), _image(arch, 3)
    with torch.no_grad():
        ref, ref3 = m(x), m(x3)
        scripted = torch.jit.script(m)
        assert torch.allclose(scripted(x), ref, atol=1e-5)
        assert torch.allclose(scripted.forward_features(x), m.forward_features(x), atol=1e-5)
        exported = torch.export.export(m, (x,), dynamic_shapes={'x': {0: torch.export.Dim('batch')}})
        assert torch.allclose(exported.module()(x), ref, atol=1e-5)
        assert torch.allclose(exported.module()(x3), ref3, atol=1e-5)
    with pytest.raises(ValueError, match='expects input'):  # scripting leaves the eager model's check in place
        m(_image(arch)[:, :, :-1])


@pytest.mark.parametrize('arch', sorted(MACRL_ARCHS))
def test_every_arch_exports_to_onnx(arch, tmp_path):
    """torch.onnx.export (dynamo exporter, dynamic batch) runs in onnxruntime with the eager outputs."""
    import onnxruntime
    m = timm.create_model(arch, depth=2).eval()
    x, x3 = _image(arch), _image(arch, 3)
    path = tmp_path / f'{arch}.onnx'
    torch.onnx.export(m, (x,), str(path), dynamo=True, input_names=['image'], output_names=['features'],
                      dynamic_shapes={'x': {0: torch.export.Dim('batch')}}, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        ref3 = m(x3)
    out = session.run(['features'], {'image': x3.numpy()})[0]
    assert torch.allclose(torch.from_numpy(out), ref3, atol=1e-4)


def test_legacy_onnx_exporter(tmp_path):
    """The TorchScript-based exporter (dynamo=False) traces through the input check too."""
    import onnxruntime
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2).eval()
    x = _image('macrl_vit_tiny_p4_cifar')
    path = tmp_path / 'tiny.onnx'
    torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=['image'], output_names=['features'],
                      dynamic_axes={'image': {0: 'batch'}, 'features': {0: 'batch'}})
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x3 = _image('macrl_vit_tiny_p4_cifar', 3)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(session.run(['features'], {'image': x3.numpy()})[0]), m(x3), atol=1e-4)


def test_bad_input_is_a_value_error():
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2)
    fo = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2, features_only=True, out_indices=(-1,))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        m(torch.randn(3, 32, 32))  # (forward_intermediates unpacks x.shape itself before patch_embed sees it)
    for entry in (m, m.forward_features, lambda x: m.forward_intermediates(x, intermediates_only=True), fo):
        with pytest.raises(ValueError, match=r'expects input \(B, 3, 32, 32\), got \(1, 3, 64, 64\)'):
            entry(torch.randn(1, 3, 64, 64))
        with pytest.raises(ValueError, match=r'expected 3 input channels \(B, 3, H, W\), got \(1, 1, 32, 32\)$'):
            entry(torch.randn(1, 1, 32, 32))
        with pytest.raises(ValueError, match=r'got \(1, 32, 32, 3\); channels last\? x.permute\(0, 3, 1, 2\)'):
            entry(torch.randn(1, 32, 32, 3))
        with pytest.raises(ValueError, match=r'the input is torch.float16 but the model\'s weights are torch.float32'):
            entry(torch.randn(1, 3, 32, 32).half())
        with pytest.raises(ValueError, match=r'^expected a float image tensor .* got torch.uint8; [^\n]*$'):
            entry(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_other_precisions_pass_the_input_check():
    """The dtype check names a mismatch, not a precision: bf16 weights with bf16 input, and autocast (which casts
    the input inside the conv), run as on a stock timm ViT."""
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert m(x.bfloat16()).shape == (2, 192)
    assert m.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16


def test_fx_tracing_and_every_features_only_wrapper_work_as_on_timm_vits():
    """torch.fx (timm's create_feature_extractor, FX necks and quantization) traces through the input check, and
    features_only builds with each of timm's feature classes; the getter and hook wrappers still check input."""
    from timm.models import create_feature_extractor, get_graph_node_names
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    assert any(n.startswith('blocks.1.mlp') for n in get_graph_node_names(m)[1])
    fx = create_feature_extractor(m, {'blocks.1': 'b1'})
    assert torch.equal(fx(x)['b1'], m.forward_intermediates(x, indices=[1], output_fmt='NLC',
                                                          intermediates_only=True)[0])
    for cls, shape in (('getter', (2, 192, 8, 8)), ('hook', (2, 64, 192)), ('fx', (2, 64, 192))):  # as timm's ViTs
        fo = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2, features_only=True, feature_cls=cls,
                               out_indices=(-1,)).eval()
        assert [tuple(f.shape) for f in fo(x)] == [shape], cls
        if cls != 'fx':  # traced into a graph: timm's own checks only
            with pytest.raises(ValueError, match='expects input'):
                fo(torch.randn(1, 3, 64, 64))


def test_bad_input_with_dynamic_img_size():
    m = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2, dynamic_img_size=True)
    assert m(torch.randn(1, 3, 48, 64)).shape == (1, 192)  # any multiple of the patch size
    with pytest.raises(ValueError, match=r'expected 3 input channels \(B, 3, H, W\), got \(1, 1, 48, 64\)'):
        m.forward_features(torch.randn(1, 1, 48, 64))
    with pytest.raises(ValueError, match=r'multiples of the patch size \(4, 4\), got \(1, 3, 30, 32\)'):
        m.forward_features(torch.randn(1, 3, 30, 32))


def test_unknown_tag_and_arch():
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'imagenet'.*available: \['cifar10'"):
        timm.create_model('macrl_vit_tiny_p4_cifar.imagenet', pretrained=True)
    with pytest.raises(ValueError, match='unknown MACRL architecture'):
        architecture_args('macrl_vit_huge')
