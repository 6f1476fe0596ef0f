"""macrl_hub.runtime: freed activations stay mapped (no page faults on the next step's allocations)."""
import subprocess
import sys

import pytest

PROBE = r'''
import sys, torch
from macrl_hub.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = rss_mb()
x = torch.ones(256 * 2**20 // 4)  # 256 MB, touched
del x
print(rss_mb() - base)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc tuning is Linux-only')
@pytest.mark.parametrize('mode,kept', [('keep', True), ('stock', False)])
def test_freed_memory_stays_mapped_only_when_asked(mode, kept):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True)
    retained_mb = float(out.stdout.strip().splitlines()[-1])
    if kept:
        assert retained_mb > 200, f'heap gave back {256 - retained_mb:.0f} MB despite keep_freed_memory()'
    else:
        assert retained_mb < 50, f'stock malloc kept {retained_mb:.0f} MB: the test cannot tell the settings apart'


# --- attention kernel choice ---------------------------------------------------------------------------------------
import timm  # noqa: E402
import torch  # noqa: E402

import macrl_hub  # noqa: E402,F401
from macrl_hub.runtime import attention_kernel, choose_attention  # noqa: E402

CPU = torch.device('cpu')


def _flags(model):
    return [m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn')]


def _tiny():
    return timm.create_model('macrl_vit_tiny_p4_cifar', depth=2)


@pytest.mark.parametrize('device,precision,want', [('cpu', 'bf16', 'explicit'), ('cpu', 'fp32', 'fused'),
                                                   ('cuda', 'bf16', 'fused')])
def test_auto_attention_is_explicit_exactly_on_cpu_bf16(monkeypatch, device, precision, want):
    monkeypatch.delenv('TIMM_FUSED_ATTN', raising=False)
    model = _tiny()
    assert all(_flags(model)) and len(_flags(model)) == 2  # timm's default in this process: fused
    assert choose_attention(model, torch.device(device), precision) == want
    assert _flags(model) == [want == 'fused'] * 2


def test_auto_attention_leaves_a_user_set_env_alone(monkeypatch):
    monkeypatch.setenv('TIMM_FUSED_ATTN', '1')
    model = _tiny()
    assert choose_attention(model, CPU, 'bf16') == 'fused' and all(_flags(model))


def test_forced_attention_modes_and_bad_mode():
    model = _tiny()
    assert choose_attention(model, CPU, 'fp32', 'explicit') == 'explicit' and not any(_flags(model))
    assert choose_attention(model, CPU, 'bf16', 'fused') == 'fused' and all(_flags(model))
    with pytest.raises(ValueError, match="unknown attention mode 'flash'"):
        choose_attention(model, CPU, 'fp32', 'flash')


def test_both_kernels_compute_the_same_function_and_the_context_restores_flags():
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model.forward_features(x)
        with attention_kernel(model, CPU, 'fp32', 'explicit') as kernel:
            assert kernel == 'explicit' and not any(_flags(model))
            out = model.forward_features(x)
    assert all(_flags(model)), 'attention_kernel did not restore the model\'s own flags'
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('objective,want', [('macrl', ['encoder.blocks', 'decoder', 'momentum_encoder.blocks']),
                                            ('mae', ['encoder.blocks', 'decoder']),
                                            ('moco', ['encoder.blocks', 'momentum_encoder.blocks'])])
def test_compile_blocks_compiles_the_flop_heavy_parts_in_place(objective, want, monkeypatch):
    """`macrl train --compile` and benchmarks/train_step.py --compile: which modules get torch.compile'd (recorded,
    not compiled: a real compile takes minutes on 2 cores), in place so checkpoint keys keep their names."""
    import torch
    from conftest import tiny_macrl
    from macrl_hub.runtime import compile_blocks
    model = tiny_macrl(objective)
    names = {id(m): n for n, m in model.named_modules()}
    compiled = []
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda self, *a, **k: compiled.append(names[id(self)]))
    keys = list(model.state_dict())
    compile_blocks(model)
    assert compiled == want
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize('given,device,steps,want', [
    (None, 'cuda', 1000, True), (None, 'cuda', 999, False),  # auto: CUDA runs long enough to repay compiling
    (None, 'cpu', 10 ** 6, False),                               # auto: never on CPU (measured: no gain)
    (True, 'cpu', 1, True), (False, 'cuda', 10 ** 6, False)])    # given: as given
def test_compile_auto_only_where_it_was_measured_to_pay(given, device, steps, want):
    import torch
    from macrl_hub.runtime import resolve_compile
    assert resolve_compile(given, torch.device(device), steps) is want


@pytest.mark.parametrize('given,device,precision,want', [
    (None, 'cpu', 'bf16', 'bfloat16'), (None, 'cpu', 'fp32', None),  # auto: CPU in bf16 only (measured faster)
    (None, 'cuda', 'bf16', None), (None, 'cuda', 'fp16', None),       # auto: never on CUDA (unmeasured)
    (True, 'cpu', 'fp32', 'bfloat16'), (False, 'cpu', 'bf16', None)])  # given: as given
def test_momentum_bf16_auto_only_on_cpu_in_bf16(given, device, precision, want):
    import torch
    from macrl_hub.runtime import resolve_momentum_dtype
    got = resolve_momentum_dtype(given, torch.device(device), precision)
    assert got == (getattr(torch, want) if want else None)


@pytest.mark.parametrize('arch,objective,device,precision,want', [
    ('macrl_vit_tiny_p4_cifar', 'macrl', 'cpu', 'fp32', 48),   # 48 x 64 tokens x 192: the measured best
    ('macrl_vit_small_p4_cifar', 'macrl', 'cpu', 'fp32', 24),  # twice as wide: half the views
    ('macrl_vit_tiny_p4_cifar', 'moco', 'cpu', 'fp32', 48),
    ('macrl_vit_tiny_p4_cifar', 'macrl', 'cpu', 'bf16', None),  # measured no faster in bf16
    ('macrl_vit_tiny_p4_cifar', 'macrl', 'cuda', 'fp32', None),
    ('macrl_vit_tiny_p4_cifar', 'mae', 'cpu', 'fp32', None)])  # no momentum branch
def test_momentum_chunk_auto_on_cpu_in_fp32_sized_to_the_residual_stream(arch, objective, device, precision, want):
    import timm
    import torch
    from macrl_hub import MACRL
    from macrl_hub.runtime import resolve_momentum_chunk
    with torch.device('meta'):  # shapes only
        model = MACRL(timm.create_model(arch), objective=objective)
    assert resolve_momentum_chunk(model, torch.device(device), precision) == want


def test_compile_flag_is_three_way_and_reaches_the_trainer(monkeypatch, tmp_path):
    """`macrl train` without --compile is auto (None), and the trainer decides from the steps this invocation runs;
    --momentum-bf16 likewise three-way, and what the trainer resolves is what the momentum branch runs in."""
    import argparse
    import dataclasses
    import torch
    from PIL import Image
    from macrl_hub import train as train_mod
    from macrl_hub.config import TrainConfig, add_dataclass_args, config_from_args
    p = argparse.ArgumentParser()
    add_dataclass_args(p)
    assert [config_from_args(p.parse_args(a)).compile for a in ([], ['--compile'], ['--no-compile'])] == \
        [None, True, False]
    assert [config_from_args(p.parse_args(a)).momentum_bf16
            for a in ([], ['--momentum-bf16'], ['--no-momentum-bf16'])] == [None, True, False]
    seen, compiled, mom, used = [], [], [], []
    monkeypatch.setattr(train_mod, 'resolve_momentum_dtype',
                        lambda f, d, p: mom.append((f, d.type, p)) or torch.bfloat16)
    real = train_mod.MACRL.forward_momentum
    monkeypatch.setattr(train_mod.MACRL, 'forward_momentum', lambda self, x: used.append(self.momentum_dtype)
                        or chunks.append(self.momentum_chunk) or real(self, x))
    chunks = []
    monkeypatch.setattr(train_mod, 'resolve_momentum_chunk', lambda m, d, p: 5)
    monkeypatch.setattr(train_mod, 'resolve_compile', lambda c, d, s: seen.append((c, d.type, s)) or c is None)
    monkeypatch.setattr(train_mod, 'compile_blocks', lambda m: compiled.append(type(m).__name__))
    data = tmp_path / 'data' / 'train'
    for c in ('a', 'b'):
        (data / c).mkdir(parents=True)
        for i in range(16):
            Image.new('RGB', (32, 32), (i * 8, 0, 0) if c == 'a' else (0, i * 8, 0)).save(data / c / f'{i}.png')
    cfg = TrainConfig(model='macrl_vit_tiny_p4_cifar', model_args='{"depth": 1, "embed_dim": 32, "num_heads": 2}',
                      data=str(tmp_path / 'data'), out=str(tmp_path / 'run'), epochs=10, max_steps=3, batch_size=8,
                      decoder_dim=32, proj_hidden_dim=64, proj_dim=16, bank_size=64, progress=False, threads=1,
                      precision='fp32', knn_every=0)
    train_mod.train(cfg)
    assert seen == [(None, 'cpu', 3)] and compiled == ['MACRL']  # 3 steps planned of 40; the stub said compile
    assert mom == [(None, 'cpu', 'fp32')] and used == [torch.bfloat16] * 3  # the stub said bf16: every step ran it
    assert chunks == [None] * 3  # compiled: no chunks (each chunk size would be another graph)
    chunks.clear()
    train_mod.train(dataclasses.replace(cfg, out=str(tmp_path / 'run2'), compile=False))
    assert chunks == [5] * 3  # eager: the resolved chunk, every step


@pytest.mark.parametrize('amx,avx,precision,want', [
    (True, True, 'bf16', 'tiny_img_per_s>=200'),
    (False, False, 'fp32', 'tiny_share_of_fp32_peak>=0.6'),
    (False, True, 'fp32', 'tiny_share_of_fp32_peak>=0.6'),  # AVX512-BF16 where `auto` measured fp32 faster
    (False, True, 'bf16', 'note'),
    (False, False, 'bf16', 'note'),
])
def test_train_step_bars_judge_the_precision_the_cpu_runs(amx, avx, precision, want):
    """benchmarks/train_step.py's `bars` line: the fp32 bar (>= 60% of the fp32 peak) wherever the step runs fp32
    without AMX, including an AVX512-BF16 CPU on which bf16 measured slower."""
    import torch
    from conftest import load_script
    bars = load_script('benchmarks/train_step.py').bars
    row = dict(arch='macrl_vit_tiny_p4_cifar', objective='macrl', img_per_s=65.0, share_of_peak=0.59, compiled=False)
    out = bars([row], dict(amx_bf16=amx, avx512_bf16=avx), precision, torch.device('cpu'), 256)
    assert want in out, out
    if want.startswith('tiny_share'):
        assert out[want] == [0.59, False]
    notes = {(False, False, 'bf16'): 'without native support', (False, True, 'bf16'): 'AVX512-BF16 without AMX'}
    if (amx, avx, precision) in notes:
        assert notes[amx, avx, precision] in out['note']
    small = dict(row, arch='macrl_vit_small_p4_cifar')  # no ViT-Ti row: said, not mislabelled
    assert 'not measured' in bars([small], dict(amx_bf16=False, avx512_bf16=avx), 'fp32', torch.device('cpu'),
                                  256)['note']


def test_feature_extraction_batches_a_vit_in_cache_sized_chunks_on_cpu_fp32():
    """extract_features without batch_size: a ViT on CPU in fp32 in views_per_chunk batches (forward only, like the
    key branch), the same features as 512 at a time; any other encoder, or bf16, keeps 512."""
    import timm
    import torch
    from macrl_hub.features import extract_features
    from macrl_hub.runtime import views_per_chunk
    torch.manual_seed(0)
    vit = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1)
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    sizes = []
    hook = vit.patch_embed.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    chunked = extract_features(vit, images, precision='fp32', progress=False)
    assert sizes == [48, 48, 4]
    sizes.clear()
    whole = extract_features(vit, images, precision='fp32', progress=False, batch_size=512)
    hook.remove()
    assert sizes == [100] and torch.allclose(chunked, whole, atol=1e-5)
    assert views_per_chunk(vit, torch.device('cpu'), 'bf16') is None
    assert views_per_chunk(timm.create_model('resnet10t'), torch.device('cpu'), 'fp32') is None
