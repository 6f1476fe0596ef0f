import pytest
import timm
import torch

from macrl_hub import MACRL
from macrl_hub.masking import patchify
from macrl_hub.transforms import PairAugment
from macrl_hub.models import CIFAR10_MEAN, CIFAR10_STD

from conftest import tiny_encoder, tiny_macrl


def _views(B=4, size=32):
    return torch.randn(B, 3, size, size), torch.randn(B, 3, size, size)


def _grad_owners(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n.split('.')[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_macrl_losses_and_gradients():
    model = tiny_macrl()
    out = model(*_views())
    assert set(out) == {'loss', 'loss_cl', 'loss_mim'}
    assert torch.allclose(out['loss'], 0.1 * out['loss_cl'] + out['loss_mim'])
    assert _grad_owners(model, out['loss']) == {'encoder', 'decoder', 'projector'}
    # nothing trainable in the momentum branch
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    assert not any(p.requires_grad for p in model.momentum_projector.parameters())


def test_each_loss_reaches_exactly_its_parameters():
    model = tiny_macrl()
    out = model(*_views())
    assert _grad_owners(model, out['loss_mim']) == {'encoder', 'decoder'}
    out = model(*_views())
    assert _grad_owners(model, out['loss_cl']) == {'encoder', 'projector'}


def test_mae_objective():
    model = tiny_macrl('mae')
    assert model.momentum_encoder is None and model.projector is None and model.bank is None
    out = model(*_views())
    assert set(out) == {'loss', 'loss_mim'} and torch.equal(out['loss'], out['loss_mim'])
    assert _grad_owners(model, out['loss']) == {'encoder', 'decoder'}


def test_moco_objective_has_no_mask_and_no_decoder():
    model = tiny_macrl('moco', mask_ratio=0.9)
    assert model.decoder is None and model.mask_ratio == 0.0
    seen = []
    orig = model.forward_encoder

    def spy(x, ids):
        seen.append(ids)
        return orig(x, ids)

    model.forward_encoder = spy
    out = model(*_views())
    assert seen == [None]
    assert set(out) == {'loss', 'loss_cl'} and torch.equal(out['loss'], out['loss_cl'])
    assert _grad_owners(model, out['loss']) == {'encoder', 'projector'}


def test_masked_branch_sees_only_visible_tokens():
    model = tiny_macrl(mask_ratio=0.75)
    tokens = []
    model.encoder.blocks.register_forward_hook(lambda m, i, o: tokens.append(o.shape[1]))
    model.momentum_encoder.blocks.register_forward_hook(lambda m, i, o: tokens.append(o.shape[1]))
    model(*_views())
    assert tokens == [16, 64]  # 64 patches, 25% visible


def test_bank_fills_and_momentum_update():
    model = tiny_macrl(bank_size=20)
    model(*_views(4))
    assert int(model.bank.filled) == 8  # k1 and k2 of 4 samples
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    model.update_momentum(0.9)
    for b, p, o in zip(before, model.momentum_encoder.parameters(), model.encoder.parameters()):
        assert torch.allclose(p, 0.9 * b + 0.1 * o, atol=1e-6)
    model.eval()
    model(*_views(4))
    assert int(model.bank.filled) == 8  # evaluation does not enqueue


def test_momentum_branch_in_chunks_gives_the_whole_batch_keys_chunk_by_chunk():
    """MACRL.momentum_chunk (what `macrl train` sets on CPU in fp32): the key branch runs on that many views at a
    time, every view once and in order, and the keys are the whole batch's up to rounding (fp32; bf16 with
    momentum_dtype)."""
    from macrl_hub import macrl as macrl_mod
    torch.manual_seed(0)
    model = tiny_macrl()
    x = torch.randn(10, 3, 32, 32)
    sizes = []
    real = macrl_mod._KeyBranch.forward
    macrl_mod._KeyBranch.forward = lambda self, c: sizes.append(c.shape[0]) or real(self, c)
    try:
        for dt, tol in ((None, 1e-6), (torch.bfloat16, 2e-2)):  # bf16: 8 significant bits, as in the test below
            model.momentum_dtype, model.momentum_chunk = dt, None
            whole = model.forward_momentum(x)
            model.momentum_chunk = 3
            sizes.clear()
            chunked = model.forward_momentum(x)
            assert sizes == [3, 3, 3, 1], dt
            assert chunked.shape == whole.shape and (chunked - whole).abs().max() < tol, dt
            assert (chunked * whole).sum(1).min() > 0.9995, dt
    finally:
        macrl_mod._KeyBranch.forward = real


def test_momentum_dtype_runs_the_key_branch_on_a_fresh_bf16_cast_of_the_fp32_ema():
    """MACRL.momentum_dtype (what `macrl train` sets on CPU in bf16): the key forward sees bf16 weights and
    activations, the EMA weights and the state dict stay fp32 and untouched, the keys follow the fp32 path within
    bf16 precision, and the cast is taken at every call (an EMA update shows at once: no stale copy)."""
    torch.manual_seed(0)
    model = tiny_macrl()
    x = torch.randn(8, 3, 32, 32)
    seen = []
    hook = model.momentum_encoder.blocks[0].mlp.fc1.register_forward_pre_hook(
        lambda m, args: seen.append((m.weight.dtype, args[0].dtype)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model.forward_momentum(x)  # fp32 weights, fp32 input
    model.momentum_dtype = torch.bfloat16
    keys = model.forward_momentum(x)
    hook.remove()
    assert seen == [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)]
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in state.items())
    # unit keys; bf16 keeps 8 significant bits (relative rounding 2^-9 per op): a few 1e-3 after two blocks
    assert keys.dtype == torch.float32 and keys.shape == ref.shape
    assert (keys - ref).abs().max() < 2e-2 and (keys * ref).sum(1).min() > 0.9995
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.update_momentum(0.0)  # e_k <- e_q: new weights the bf16 path must see at its next call
    keys2 = model.forward_momentum(x)
    model.momentum_dtype = None
    ref2 = model.forward_momentum(x)
    assert (keys2 * ref).sum(1).min() < 0.99, 'the update did not change the keys: the test cannot tell'
    assert (keys2 * ref2).sum(1).min() > 0.9995
    model.momentum_dtype = torch.bfloat16  # the whole step, under bf16 autocast as the trainer runs it
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(*_views(4))
    out['loss'].backward()
    assert torch.isfinite(out['loss']) and model.projector.fc1.weight.grad is not None


@pytest.mark.parametrize('objective', ['macrl', 'mae'])
@pytest.mark.parametrize('rec_on', ['visible', 'all'])
def test_mask_ratio_zero_reconstructs_every_token_in_place(objective, rec_on):
    """No mask: the encoder sees all 64 tokens and the decoder predicts each at its own position; with no token
    masked, 'visible' and 'all' are the same L1 over every patch of each view."""
    model = tiny_macrl(objective, mask_ratio=0.0, rec_on=rec_on)
    tokens = []
    model.encoder.blocks.register_forward_hook(lambda m, i, o: tokens.append(o.shape[1]))
    x1, x2 = _views(2)
    out = model(x1, x2)
    assert tokens == [64]
    with torch.no_grad():
        pred = model.decoder(model.forward_encoder(torch.cat([x1, x2]), None), torch.arange(64).expand(4, 64))
    target = patchify(torch.cat([x1, x2]), 4)
    expected = sum((p - t).abs().mean() for p, t in zip(pred.chunk(2), target.chunk(2)))
    assert torch.allclose(out['loss_mim'], expected, rtol=1e-6), (out['loss_mim'], expected)
    assert {'encoder', 'decoder'} <= _grad_owners(model, out['loss'])


def test_wraps_other_timm_vits():
    enc = timm.create_model('vit_small_patch16_224', img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=2,
                            num_classes=1000)
    model = MACRL(enc, decoder_dim=32, proj_hidden_dim=32, proj_dim=16, bank_size=32)
    assert model.encoder.num_classes == 0 and model.encoder.num_prefix_tokens == 1  # class token kept visible
    out = model(*_views(2))
    out['loss'].backward()
    assert enc.cls_token.grad is not None
    timm.create_model('vit_small_patch16_224', img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=2,
                      num_classes=0).load_state_dict(model.encoder.state_dict())


def test_encoder_state_dict_loads_into_timm():
    model = tiny_macrl()
    fresh = tiny_encoder()
    fresh.load_state_dict(model.encoder.state_dict())  # strict


def test_freeze_patch_embed():
    model = tiny_macrl(freeze_patch_embed=True)
    assert not any(p.requires_grad for p in model.encoder.patch_embed.parameters())
    assert 'patch_embed' not in {n.split('.')[1] for n, p in model.named_parameters() if p.requires_grad
                                 and n.startswith('encoder.')}


@pytest.mark.parametrize('kwargs,match', [
    (dict(objective='simclr'), 'unknown objective'),
    (dict(mask_ratio=1.0), 'mask_ratio'),
    (dict(mask_ratio=-0.2), 'mask_ratio'),
    (dict(mask_ratio=0.0), "mask_ratio=0 masks no tokens, so objective='macrl' with rec_on='masked' has nothing"),
    (dict(objective='mae', mask_ratio=0.0), "objective='mae' with rec_on='masked'"),
    (dict(rec_loss='l3'), 'rec_loss'),
    (dict(rec_on='half'), 'rec_on'),
    (dict(bank_size=-5), 'memory bank size'),
    (dict(temperature=0.0), 'temperature'),
    (dict(alpha=-1.0), 'alpha weighs the contrastive loss and must be >= 0'),
    (dict(bank_size=0, in_batch_negatives=False), 'leaves InfoNCE no negatives'),
    (dict(objective='moco', bank_size=0, in_batch_negatives=False), 'leaves InfoNCE no negatives'),
    (dict(objective='moco', mask_ratio=1.5), 'mask_ratio'),  # checked, though MoCo masks nothing
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_macrl(**kwargs)


def test_bad_views():
    model = tiny_macrl()
    with pytest.raises(ValueError, match=r'takes \(B, 3, 32, 32\)'):
        model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match='differ in shape'):
        model(torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32))
    with pytest.raises(ValueError, match='must be a'):
        model(torch.randn(3, 32, 32), torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='timm VisionTransformer'):
        MACRL(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r'x1 is torch.uint8; MACRL takes float views'):  # any encoder, not only ours
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r'momentum must be in \[0, 1\]'):
        model.update_momentum(1.5)


def test_wrapped_moco_records_the_mask_ratio_it_uses():
    assert tiny_macrl('moco', mask_ratio=0.9).config['mask_ratio'] == 0.0


@pytest.mark.parametrize('build,match', [
    (lambda: timm.create_model('vit_medium_patch16_rope_reg1_gap_256', img_size=32, depth=1, embed_dim=64,
                               num_heads=2), 'blocks are a ModuleList'),
    (lambda: tiny_encoder(global_pool=''), "global_pool=''"),
    (lambda: tiny_encoder(patch_size=(4, 8)), r'patch_size \(4, 8\) is not square'),
    (lambda: tiny_encoder(patch_drop_rate=0.5), 'patch_drop_rate=0.5'),
])
def test_encoders_it_cannot_wrap_are_named_up_front(build, match):
    """Each failed in the first step with torch's error (an Eva/RoPE ViT: tuple indices; global_pool='': t() expects
    <= 2 dims; a non-square patch: size mismatch), or silently (patch dropout in the momentum branch)."""
    with pytest.raises(ValueError, match=match):
        MACRL(build(), decoder_dim=32, proj_hidden_dim=32, proj_dim=16, bank_size=32)


def test_an_extra_pass_in_train_mode_can_leave_the_bank_alone():
    model = tiny_macrl().train()
    model(*_views(2))
    bank = model.bank.negatives().clone()
    with torch.no_grad():
        model(*_views(2), enqueue=False)
    assert torch.equal(model.bank.negatives(), bank)
    model(*_views(2))
    assert model.bank.negatives().shape[0] == bank.shape[0] + 4


def test_timm_optimizer_factory_decays_what_macrl_train_decays():
    """create_optimizer_v2 reads `no_weight_decay()`: without it the position embedding and the mask token (and a
    stock ViT's class token) were decayed."""
    from timm.optim import create_optimizer_v2
    from macrl_hub.train import _param_groups
    model = tiny_macrl()
    names = {id(p): n for n, p in model.named_parameters()}
    ours = [sorted(names[id(p)] for p in g['params']) for g in _param_groups(model, 0.05)]
    theirs = [sorted(names[id(p)] for p in g['params']) for g in create_optimizer_v2(model, 'adamw',
                                                                                        weight_decay=0.05).param_groups]
    assert ours == theirs
    assert {'encoder.pos_embed', 'decoder.mask_token'} <= set(ours[0])


def test_grad_checkpointing_is_honoured_with_the_same_gradients(monkeypatch):
    """encoder.set_grad_checkpointing() was ignored: the wrapper ran the blocks itself."""
    import macrl_hub.macrl as macrl_mod
    calls = []
    real = macrl_mod.checkpoint_seq
    monkeypatch.setattr(macrl_mod, 'checkpoint_seq', lambda *a, **k: calls.append(1) or real(*a, **k))
    x1, x2 = _views(2)
    noise = torch.rand(4, 64)
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = tiny_macrl()
        model.set_grad_checkpointing(on)
        model(x1, x2, mask_noise=noise)['loss'].backward()
        grads.append(model.encoder.blocks[0].attn.qkv.weight.grad)
    assert len(calls) == 1 and not model.momentum_encoder.grad_checkpointing
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_few_steps_on_real_cifar_lower_the_loss(cifar_test):
    """MACRL on 256 real CIFAR-10 images: after 25 AdamW steps the loss on fixed views is lower."""
    torch.manual_seed(0)
    model = tiny_macrl(bank_size=0, mask_ratio=0.75)
    aug = PairAugment(32, CIFAR10_MEAN, CIFAR10_STD)
    x1, x2 = aug(cifar_test.images[:256], torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)

    def loss_at_fixed_masks():
        with torch.no_grad():
            return {k: float(v) for k, v in model(x1, x2, generator=torch.Generator().manual_seed(123)).items()}

    start = loss_at_fixed_masks()
    for step in range(25):
        out = model(x1, x2, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
        model.update_momentum(0.9)
    end = loss_at_fixed_masks()
    assert end['loss'] < 0.8 * start['loss'], (start, end)
    assert end['loss_mim'] < start['loss_mim'] and end['loss_cl'] < start['loss_cl'], (start, end)


def test_readme_pretraining_example_runs_as_written():
    """README "Pretraining with MACRL": its Python block, as it stands, trains (the encoder moves, the bank fills)."""
    import re
    from conftest import ROOT
    text = (ROOT / 'README.md').read_text()
    code = re.search(r'```python\n(.*?)```', text[text.index('## Pretraining with MACRL'):], re.S).group(1)
    ns = {}
    exec(compile(code, 'README.md', 'exec'), ns)
    model = ns['model']
    assert torch.isfinite(ns['losses']['loss']) and int(model.bank.filled) == 2 * 2 * 8
    # the EMA copy starts equal to the encoder: they differ only once optimizer steps have moved the encoder
    assert not torch.equal(model.encoder.blocks[0].attn.qkv.weight, model.momentum_encoder.blocks[0].attn.qkv.weight)


def test_sincos_pos_embed_is_maes_fixed_code_and_stays_fixed():
    """pos_embed='sincos' (--recipe paper): the encoder's position embedding is the 2-D sin-cos code of each patch,
    row-major, zero at an embedded class token, frozen: no optimizer group holds it, a training step leaves it, and
    the momentum encoder has the same. 'learned' (default) keeps timm's trainable one."""
    import timm
    from timm.layers import build_sincos2d_pos_embed
    from macrl_hub import MACRL
    from macrl_hub.train import _param_groups
    enc = timm.create_model('macrl_vit_tiny_p4_cifar', depth=1)
    model = MACRL(enc, pos_embed='sincos', bank_size=64, proj_hidden_dim=32, proj_dim=16, decoder_dim=32)
    code = build_sincos2d_pos_embed([8, 8], 192)
    assert torch.equal(model.encoder.pos_embed[0], code) and not model.encoder.pos_embed.requires_grad
    assert torch.equal(model.momentum_encoder.pos_embed, model.encoder.pos_embed)
    held = {id(p) for g in _param_groups(model, 0.01) for p in g['params']}
    assert id(model.encoder.pos_embed) not in held
    opt = torch.optim.AdamW([p for g in _param_groups(model, 0.01) for p in g['params']], lr=1e-2)
    model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))['loss'].backward()
    opt.step()
    model.update_momentum(0.5)
    assert torch.equal(model.encoder.pos_embed[0], code) and torch.equal(model.momentum_encoder.pos_embed[0], code)
    stock = MACRL(timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=4, depth=1), pos_embed='sincos',
                  bank_size=64, proj_hidden_dim=32, proj_dim=16, decoder_dim=32)
    assert torch.equal(stock.encoder.pos_embed[0, 0], torch.zeros(192))  # the class token's slot
    assert torch.equal(stock.encoder.pos_embed[0, 1:], code)
    assert MACRL(timm.create_model('macrl_vit_tiny_p4_cifar', depth=1), bank_size=64).encoder.pos_embed.requires_grad
    with pytest.raises(ValueError, match="this encoder has none"):
        MACRL(timm.create_model('macrl_vit_tiny_p4_cifar', depth=1, pos_embed='none'), pos_embed='sincos')
    with pytest.raises(ValueError, match="unknown pos_embed 'fixed'"):
        MACRL(timm.create_model('macrl_vit_tiny_p4_cifar', depth=1), pos_embed='fixed')
