"""`--precision auto` on every kind of machine (the CPU probes are monkeypatched, so each branch runs anywhere),
and the bf16 path itself, checked with bf16's tolerance rather than fp32's."""
import pytest
import torch

from conftest import tiny_macrl
from test_train import small_folder  # noqa: F401  (fixture)
from macrl_hub import precision as P
from macrl_hub.precision import autocast, resolve_precision


@pytest.mark.parametrize('amx, avx512_bf16, speedup, want', [
    (True, False, 0.5, 'bf16'), (True, True, 0.5, 'bf16'),  # Sapphire Rapids (AMX): bf16, unmeasured
    (False, True, 1.6, 'bf16'),  # AMD EPYC (AVX512-BF16): bf16 matmuls 1.5-3.5x fp32's
    (False, True, 0.5, 'fp32'),  # an Intel Xeon with AVX512-BF16, no AMX: bf16 at half fp32's rate
    (False, False, 9.0, 'fp32')])  # Cascade Lake (neither): emulated bf16, never measured
def test_auto_on_each_cpu_kind(monkeypatch, amx, avx512_bf16, speedup, want):
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(P, 'cpu_bf16_speedup', lambda: speedup)
    assert P.cpu_bf16_flags() == {'amx_bf16': amx, 'avx512_bf16': avx512_bf16}
    assert resolve_precision('auto', torch.device('cpu')) == want
    for given in ('fp32', 'bf16', 'fp16'):
        assert resolve_precision(given, torch.device('cpu')) == given  # an explicit choice is never overridden


def test_the_bf16_speedup_is_measured_once_per_thread_count(monkeypatch):
    """A real measurement (positive, finite), cached: resolve_precision runs in every train/eval start."""
    P._matmul_speedup.cache_clear()
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, 'mm', lambda a, b: calls.append(a.dtype) or real_mm(a, b))
    first = P.cpu_bf16_speedup(n=128)
    assert 0 < first < float('inf') and calls.count(torch.bfloat16) == calls.count(torch.float32) == 4
    assert P.cpu_bf16_speedup(n=128) == first and len(calls) == 8  # cached


def test_auto_without_the_private_probes(monkeypatch):
    """A torch without torch.cpu's private probes: auto falls back to fp32 instead of failing."""
    monkeypatch.delattr(torch.cpu, '_is_amx_tile_supported', raising=False)
    monkeypatch.delattr(torch.cpu, '_is_avx512_bf16_supported', raising=False)
    assert resolve_precision('auto', 'cpu') == 'fp32'


@pytest.mark.parametrize('native, emulated, want',
                         [(True, True, 'bf16'), (False, True, 'fp16'), (False, False, 'fp16')])
def test_auto_on_cuda(monkeypatch, native, emulated, want):
    """bf16 where the GPU has it natively; fp16 on a V100/T4, whose bf16 torch counts as supported (emulated)."""
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                        lambda including_emulation=True: native or (including_emulation and emulated))
    assert resolve_precision('auto', torch.device('cuda')) == want


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp16, fp32, got 'int8'"):
        resolve_precision('int8', torch.device('cpu'))


def test_autocast_dtypes():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with autocast(torch.device('cpu'), 'bf16'):
        assert (x @ w).dtype == torch.bfloat16
    with autocast(torch.device('cpu'), 'fp32'):
        assert (x @ w).dtype == torch.float32


def test_bf16_step_agrees_with_fp32_within_bf16_precision():
    """The same MACRL step in bf16 and fp32: losses within bf16's relative precision (8 bits of mantissa: 2^-8 per
    rounding, a few roundings deep), gradients pointing the same way. Catches a bf16 path that computes something
    else (e.g. a cast that drops a term), which tests pinned to fp32 cannot see."""
    torch.manual_seed(0)
    model = tiny_macrl(bank_size=0)
    x1, x2 = torch.randn(2, 8, 3, 32, 32).unbind(0)
    noise = torch.rand(16, model.num_patches)
    out, grads = {}, {}
    for prec in ('fp32', 'bf16'):
        model.zero_grad(set_to_none=True)
        with autocast(torch.device('cpu'), prec):
            losses = model(x1, x2, mask_noise=noise)
        losses['loss'].backward()
        out[prec] = {k: float(v) for k, v in losses.items()}
        grads[prec] = torch.cat([p.grad.flatten() for p in model.encoder.parameters() if p.grad is not None])
    for k in ('loss', 'loss_cl', 'loss_mim'):
        assert out['bf16'][k] == pytest.approx(out['fp32'][k], rel=3e-2), (k, out)
        assert out['bf16'][k] != out['fp32'][k]  # bf16 really ran (else this test checks nothing)
    cos = torch.nn.functional.cosine_similarity(grads['bf16'], grads['fp32'], dim=0)
    assert cos > 0.98, float(cos)


def test_bf16_training_resumes_bit_for_bit(small_folder, tmp_path):
    """The bf16 trainer path (whatever the CPU): finite losses, and resume is exact within one precision."""
    import json
    from test_train import _cfg
    from macrl_hub.train import train
    train(_cfg(small_folder, tmp_path / 'a', max_steps=4, precision='bf16'))
    train(_cfg(small_folder, tmp_path / 'b', max_steps=2, precision='bf16'))
    train(_cfg(small_folder, tmp_path / 'b', max_steps=2, precision='bf16', resume='auto'))
    a = torch.load(tmp_path / 'a' / 'checkpoint.pth', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'checkpoint.pth', weights_only=True)
    assert a['precision'] == 'bf16' and a['step'] == b['step'] == 4
    assert all(torch.equal(v, b['model'][k]) for k, v in a['model'].items())
    rows = [json.loads(x) for x in (tmp_path / 'a' / 'log.jsonl').read_text().splitlines() if '"lr"' in x]
    assert len(rows) == 4 and all(torch.isfinite(torch.tensor(r['loss'])) for r in rows)
    # and the main branch ran in bf16: the same first step in fp32 gives another reconstruction loss (main branch and
    # decoder only; the momentum branch has its own bf16 switch), by bf16's rounding only
    train(_cfg(small_folder, tmp_path / 'f', max_steps=1, precision='fp32'))
    fp32 = [json.loads(x) for x in (tmp_path / 'f' / 'log.jsonl').read_text().splitlines() if '"lr"' in x][0]
    mim, ref = rows[0]['loss_mim'], fp32['loss_mim']
    assert mim != ref and abs(mim - ref) < 0.02 * ref
