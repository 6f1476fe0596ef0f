"""Algorithm 1 of the paper, pinned line by line on tiny models (CPU, fp32):

    x1, x2 = aug(x), aug(x)                      # view 1 stronger (solarization), view 2 weaker
    z1, z2 = e_q(x1, m1), e_q(x2, m2)            # each view its own random mask
    q1, q2 = p_q(z1), p_q(z2)
    w1, w2 = e_k(x1, m0), e_k(x2, m0)            # momentum branch, no mask
    k1, k2 = p_k(w1), p_k(w2)
    cl_loss = ctr(q1, k2) + ctr(q2, k1)          # crossed pairs; negatives: the bank before this step
    x_1, x_2 = d(z1), d(z2)                      # decoder unshuffles the visible tokens
    mim_loss = rec(x_1, x1) + rec(x_2, x2)       # each view against its own pixels
    return cl_loss * alpha + mim_loss
"""
import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F

from macrl_hub.config import TrainConfig
from macrl_hub.losses import info_nce, reconstruction_loss
from macrl_hub.masking import num_keep, patchify, random_masking
from macrl_hub.momentum import cosine_momentum
from macrl_hub.train import build_macrl, read_log, train
from macrl_hub.transforms import PairAugment

from conftest import ROOT, tiny_macrl
from test_train import TINY, _cfg, small_folder  # noqa: F401  (small_folder is a fixture)


def _views(B: int = 4, size: int = 32):
    return torch.randn(B, 3, size, size), torch.randn(B, 3, size, size)


def _masks(model, noise: torch.Tensor):
    """The (ids_keep, ids_restore, mask) that `model.forward` draws from `mask_noise`."""
    return random_masking(noise.shape[0], model.num_patches, model.mask_ratio, noise=noise)


# -- z1, z2 = e_q(x1, m1), e_q(x2, m2) ------------------------------------------------------------
def test_each_view_gets_its_own_mask():
    model = tiny_macrl()
    B, L = 3, model.num_patches
    keep = num_keep(L, model.mask_ratio)
    seen = []
    orig = model.forward_encoder

    def spy(x, ids_keep):
        seen.append((x, ids_keep))
        return orig(x, ids_keep)

    model.forward_encoder = spy
    x1, x2 = _views(B)
    noise1, noise2 = torch.rand(B, L), torch.rand(B, L)
    model(x1, x2, mask_noise=torch.cat([noise1, noise2]))
    (x, ids_keep), = seen  # one masked pass for both views
    assert torch.equal(x[:B], x1) and torch.equal(x[B:], x2)  # rows: view 1, then view 2
    assert torch.equal(ids_keep[:B], noise1.argsort(dim=1)[:, :keep])  # noise rows 0..B-1 mask view 1
    assert torch.equal(ids_keep[B:], noise2.argsort(dim=1)[:, :keep])  # noise rows B..2B-1 mask view 2
    for a, b in zip(ids_keep[:B], ids_keep[B:]):
        assert set(a.tolist()) != set(b.tolist())  # m1 != m2 for the same image
    seen.clear()
    model(x1, x2, generator=torch.Generator().manual_seed(0))  # drawn masks: also one per view
    (_, ids_keep), = seen
    for a, b in zip(ids_keep[:B], ids_keep[B:]):
        assert set(a.tolist()) != set(b.tolist())


# -- the model's mask_ratio is the one the main branch and the reconstruction loss use --------------------
@pytest.mark.parametrize('mask_ratio,visible', [(0.6, 25), (0.9, 6)])  # int(64 * (1 - ratio)): 25.6 -> 25, 6.4 -> 6
def test_mask_ratio_of_the_model_reaches_the_encoder_and_the_loss(mask_ratio, visible):
    model = tiny_macrl(mask_ratio=mask_ratio)
    B, L = 2, model.num_patches
    seen_keep, seen_mask = [], []
    enc, mim = model.forward_encoder, model.forward_loss_mim
    model.forward_encoder = lambda x, ids: (seen_keep.append(ids), enc(x, ids))[1]
    model.forward_loss_mim = lambda imgs, pred, mask: (seen_mask.append(mask), mim(imgs, pred, mask))[1]
    with torch.no_grad():
        model(*_views(B), mask_noise=torch.rand(2 * B, L))
        model(*_views(B), generator=torch.Generator().manual_seed(0))
    for ids_keep, mask in zip(seen_keep, seen_mask):
        assert ids_keep.shape == (2 * B, visible)
        assert torch.all(mask.sum(1) == L - visible)  # masked patches, what 'masked' reconstruction scores


# -- q = p_q(avg-pool(z)), k = p_k(avg-pool(w)): token-averaged features, no class token ------------------
def test_queries_and_keys_average_the_tokens():
    model = tiny_macrl().eval()
    B, L = 3, model.num_patches
    keep = num_keep(L, model.mask_ratio)
    x = torch.randn(B, 3, 32, 32)
    ids_keep = torch.rand(B, L).argsort(dim=1)[:, :keep]
    with torch.no_grad():
        latent = model.forward_encoder(x, ids_keep)  # (B, L_keep, D), no prefix tokens
        q = model.project(latent)
        w = model.momentum_encoder.forward_features(x)  # (B, L, D)
        k = model.forward_momentum(x)
        torch.testing.assert_close(q, F.normalize(model.projector(model.encoder.fc_norm(latent.mean(1))), dim=1),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(k, F.normalize(model.momentum_projector(model.momentum_encoder.fc_norm(w.mean(1))),
                                                  dim=1), rtol=1e-5, atol=1e-6)
        # the same visible set in another order: the same query (a pooled feature, not the first token's)
        q_flipped = model.project(model.forward_encoder(x, ids_keep.flip(1)))
        assert not torch.allclose(latent[:, 0], model.forward_encoder(x, ids_keep.flip(1))[:, 0], atol=1e-3)
    torch.testing.assert_close(q_flipped, q, rtol=0, atol=1e-5)


# -- cl_loss = ctr(q1, k2) + ctr(q2, k1), negatives from the bank -----------------------------------
@pytest.mark.parametrize('in_batch_negatives', [True, False])
def test_contrastive_loss_by_hand_and_bank_after_the_loss(in_batch_negatives):
    model = tiny_macrl(bank_size=64, in_batch_negatives=in_batch_negatives)
    model.bank.enqueue(F.normalize(torch.randn(40, 16), dim=1))
    bank_before = model.bank.negatives().clone()  # (40, proj_dim): the negatives this step must use
    B = 4
    x1, x2 = _views(B)
    noise = torch.rand(2 * B, model.num_patches)
    x = torch.cat([x1, x2])
    with torch.no_grad():
        q1, q2 = model.project(model.forward_encoder(x, _masks(model, noise)[0])).chunk(2)  # (B, proj_dim) each
        k1, k2 = model.forward_momentum(x).chunk(2)

    def ctr(q, k):
        return info_nce(q, k, bank_before, model.temperature, in_batch_negatives)

    expected = ctr(q1, k2) + ctr(q2, k1)
    assert not torch.allclose(expected, ctr(q1, k1) + ctr(q2, k2), rtol=1e-3)  # the pairing shows in the value
    out = model(x1, x2, mask_noise=noise)
    torch.testing.assert_close(out['loss_cl'], expected, rtol=1e-6, atol=0)
    # enqueued after the loss: k1 then k2 behind the old keys, the old keys untouched
    assert int(model.bank.filled) == 40 + 2 * B
    assert torch.equal(model.bank.bank[:40], bank_before)
    torch.testing.assert_close(model.bank.bank[40:40 + 2 * B], torch.cat([k1, k2]), rtol=1e-6, atol=1e-7)


# -- views='asymmetric' (the paper's introduction): x1 masked -> main, x2 unmasked -> momentum --------------
def test_asymmetric_views_by_hand():
    model = tiny_macrl(bank_size=64, views='asymmetric')
    model.bank.enqueue(F.normalize(torch.randn(40, 16), dim=1))
    bank_before = model.bank.negatives().clone()
    B = 4
    x1, x2 = _views(B)
    noise = torch.rand(B, model.num_patches)
    seen_q, seen_k = [], []
    enc, mom = model.forward_encoder, model.forward_momentum
    model.forward_encoder = lambda x, ids: (seen_q.append(x), enc(x, ids))[1]
    model.forward_momentum = lambda x: (seen_k.append(x), mom(x))[1]
    with torch.no_grad():
        ids_keep, ids_restore, mask = _masks(model, noise)
        latent = enc(x1, ids_keep)
        q1, k2 = model.project(latent), mom(x2)
        expected_cl = info_nce(q1, k2, bank_before, model.temperature, model.in_batch_negatives)
        expected_mim = reconstruction_loss(model.forward_decoder(latent, ids_restore), patchify(x1, model.patch_size),
                                           mask, model.rec_loss, model.rec_on, model.norm_pix_loss)
    out = model(x1, x2, mask_noise=noise)
    (xq,), (xk,) = seen_q, seen_k
    assert torch.equal(xq, x1) and torch.equal(xk, x2)  # the strong view only in the main branch, the weak one only in the momentum branch
    torch.testing.assert_close(out['loss_cl'], expected_cl, rtol=1e-6, atol=0)
    torch.testing.assert_close(out['loss_mim'], expected_mim, rtol=1e-6, atol=0)
    torch.testing.assert_close(out['loss'], expected_mim + model.alpha * expected_cl, rtol=1e-6, atol=0)
    assert int(model.bank.filled) == 40 + B  # k2 enqueued after the loss, nothing else
    torch.testing.assert_close(model.bank.bank[40:40 + B], k2, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="unknown views 'strong'"):
        tiny_macrl(views='strong')


# -- x_1 = d(z1): the decoder puts every token back in its place -----------------------------------
def test_prediction_does_not_depend_on_the_order_of_visible_tokens():
    model = tiny_macrl('mae').eval()
    B, L = 2, model.num_patches
    keep = num_keep(L, model.mask_ratio)
    noise_a = torch.rand(B, L)
    ids_a, restore_a, mask_a = _masks(model, noise_a)
    # the same visible and masked sets, each group in reverse order
    shuffle_a = noise_a.argsort(dim=1)
    shuffle_b = torch.cat([shuffle_a[:, :keep].flip(1), shuffle_a[:, keep:].flip(1)], dim=1)
    noise_b = torch.empty(B, L).scatter_(1, shuffle_b, torch.linspace(0, 1, L).expand(B, L))
    ids_b, restore_b, mask_b = _masks(model, noise_b)
    assert torch.equal(mask_a, mask_b) and not torch.equal(ids_a, ids_b)
    x = torch.randn(B, 3, 32, 32)
    with torch.no_grad():
        pred_a = model.forward_decoder(model.forward_encoder(x, ids_a), restore_a)  # (B, L, p*p*C)
        pred_b = model.forward_decoder(model.forward_encoder(x, ids_b), restore_b)
        ids_c, restore_c, _ = _masks(model, torch.rand(B, L))
        pred_c = model.forward_decoder(model.forward_encoder(x, ids_c), restore_c)
    torch.testing.assert_close(pred_a, pred_b, rtol=0, atol=1e-5)  # position by position
    assert not torch.allclose(pred_a, pred_c, atol=1e-3)  # another visible set does change the prediction
    # the decoder's position embedding tells the mask tokens apart: without it every masked position of an image
    # would get one and the same prediction (identical mask tokens, attention blind to order)
    masked = pred_a[mask_a.bool()].view(B, L - keep, -1)  # (B, masked, p*p*C)
    assert (masked[:, 1:] - masked[:, :1]).abs().amax(dim=-1).min() > 1e-4


def test_decoder_positions_follow_patchify_order_on_a_non_square_grid():
    """Token r * W + c (patchify's row-major order) carries the code of (r, c): timm's sin-cos layout is
    [sin(row), sin(col), cos(row), cos(col)], each dim/4 wide. reverse_coord=True built the codes in W-major order,
    which on a 3x5 grid put (0, 3)'s code next to (0, 0)'s and (0, 4)'s (square grids come out the same)."""
    from conftest import tiny_encoder
    from macrl_hub import MACRL
    model = MACRL(tiny_encoder(img_size=(12, 20)), objective='mae', decoder_dim=32)
    H, W = model.grid_size
    assert (H, W) == (3, 5)
    pos = model.decoder.pos_embed[0].view(H, W, 32)
    q = 32 // 4
    rows, cols = pos[..., :q], pos[..., q:2 * q]  # sin(row * bands), sin(col * bands)
    assert torch.equal(rows, rows[:, :1].expand_as(rows)) and torch.equal(cols, cols[:1].expand_as(cols))
    assert len({tuple(r[0].tolist()) for r in rows}) == H and len({tuple(c.tolist()) for c in cols[0]}) == W
    x = torch.randn(2, 3, 12, 20)
    assert torch.isfinite(model(x, x)['loss'])


# -- mim_loss = rec(x_1, x1) + rec(x_2, x2) ---------------------------------------------------------
def test_each_view_is_reconstructed_against_its_own_pixels():
    model = tiny_macrl('mae')
    B, P = 2, model.patch_size
    x1 = torch.randn(B, 3, 32, 32)
    x2 = 3.0 + 2.0 * torch.randn(B, 3, 32, 32)  # pixels far from view 1's
    x = torch.cat([x1, x2])
    noise = torch.rand(2 * B, model.num_patches)
    ids_keep, ids_restore, mask = _masks(model, noise)
    m1, m2 = mask.chunk(2)

    def rec(pred_v, img, mask_v):
        return reconstruction_loss(pred_v, patchify(img, P), mask_v, model.rec_loss, model.rec_on)

    # a prediction close to each view's own pixels: small loss against its own view, large against the other
    near = patchify(x, P) + 0.1 * torch.randn(2 * B, model.num_patches, P * P * 3)  # (2B, L, p*p*C)
    n1, n2 = near.chunk(2)
    own, swapped = rec(n1, x1, m1) + rec(n2, x2, m2), rec(n1, x2, m1) + rec(n2, x1, m2)
    assert float(own) < 0.1 * float(swapped)
    torch.testing.assert_close(model.forward_loss_mim(x, near, mask), own, rtol=1e-6, atol=0)
    # and the forward pass scores the decoder's prediction the same way
    with torch.no_grad():
        pred = model.forward_decoder(model.forward_encoder(x, ids_keep), ids_restore)  # (2B, L, p*p*C)
        p1, p2 = pred.chunk(2)
        torch.testing.assert_close(model(x1, x2, mask_noise=noise)['loss_mim'], rec(p1, x1, m1) + rec(p2, x2, m2),
                                   rtol=1e-6, atol=0)


# -- e_k, p_k: exponential moving averages of e_q, p_q ---------------------------------------------
def test_momentum_update_of_encoder_and_projector():
    model = tiny_macrl()
    with torch.no_grad():  # online != momentum, so the update shows
        for p in list(model.encoder.parameters()) + list(model.projector.parameters()):
            p.add_(torch.randn_like(p))
    pairs = [(model.encoder, model.momentum_encoder), (model.projector, model.momentum_projector)]
    old = [[t.clone() for t in target.parameters()] for _, target in pairs]
    online_before = [[o.clone() for o in online.parameters()] for online, _ in pairs]
    m = 0.9
    model.update_momentum(m)
    for (online, target), olds, ons in zip(pairs, old, online_before):
        names = [n for n, _ in target.named_parameters()]
        assert names == [n for n, _ in online.named_parameters()] and names
        for name, o, o_before, t, t_old in zip(names, online.parameters(), ons, target.parameters(), olds):
            torch.testing.assert_close(t, m * t_old + (1 - m) * o, rtol=1e-6, atol=1e-6, msg=name)
            assert torch.equal(o, o_before), name  # the online branch is not touched
            assert not t.requires_grad, name


# -- loss = alpha * cl_loss + mim_loss, alpha from the trainer's config ----------------------------
@pytest.mark.parametrize('alpha', [0.1, 1.0])
def test_alpha_from_the_train_config_weights_the_contrastive_loss(alpha):
    cfg = TrainConfig(model='macrl_vit_tiny_p4_cifar', model_args=TINY, decoder_dim=32, proj_hidden_dim=64,
                      proj_dim=16, bank_size=64, alpha=alpha)
    model = build_macrl(cfg)
    assert model.alpha == alpha and model.config['alpha'] == alpha
    with torch.no_grad():
        out = model(*_views(2), mask_noise=torch.rand(4, model.num_patches))
    assert float(out['loss_cl']) > 0 and float(out['loss_mim']) > 0
    torch.testing.assert_close(out['loss'], alpha * out['loss_cl'] + out['loss_mim'], rtol=1e-6, atol=0)


# -- the encoders -----------------------------------------------------------------------------------
#: README.md "Models": architecture -> (dim, depth, heads, input, patch)
README_ARCHITECTURES = {
    'macrl_vit_tiny_p4_cifar': (192, 12, 3, 32, 4),
    'macrl_vit_small_p4_cifar': (384, 12, 6, 32, 4),
    'macrl_vit_medium_p4_cifar': (512, 12, 4, 32, 4),
    'macrl_vit_medium_p8_64': (512, 12, 4, 64, 8),
    'macrl_vit_medium_d4_p16_224': (512, 4, 4, 224, 16),
}


def test_readme_architecture_table_matches_the_models():
    row = re.compile(r'\| `(macrl_vit_\w+)` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|')
    readme = {m[1]: tuple(int(v) for v in m.groups()[1:])
              for m in map(row.match, (ROOT / 'README.md').read_text().splitlines()) if m}
    assert readme == README_ARCHITECTURES
    assert set(timm.list_models('macrl_*')) == set(README_ARCHITECTURES)  # every registered arch is listed
    for arch, expected in README_ARCHITECTURES.items():
        with torch.device('meta'):  # structure only: no memory, no init
            model = timm.create_model(arch)
        heads = {blk.attn.num_heads for blk in model.blocks}
        assert len(heads) == 1, (arch, heads)
        assert model.patch_embed.img_size[0] == model.patch_embed.img_size[1], arch
        got = (model.embed_dim, len(model.blocks), heads.pop(), model.patch_embed.img_size[0],
               model.patch_embed.patch_size[0])
        assert got == expected, arch
        assert model.num_features == model.embed_dim, arch


# -- the trainer's schedules and saved settings -----------------------------------------------------
def test_trainer_lr_momentum_and_saved_macrl_config(small_folder, tmp_path):  # noqa: F811
    """192 images / batch 32 = 6 steps per epoch, 2 epochs = 12 steps, warmup 0.5 epoch = 3 steps."""
    out = tmp_path / 'run'
    cfg = _cfg(small_folder, out, max_steps=5, momentum=0.9, alpha=0.5, mask_ratio=0.6, temperature=0.3)
    train(cfg)
    rows = [r for r in read_log(out / 'log.jsonl') if 'lr' in r]
    assert [r['step'] for r in rows] == [1, 2, 3, 4, 5]  # row `step` holds the lr of optimizer step step - 1
    peak = cfg.blr * cfg.batch_size / 256
    total, warmup = 12, 3
    expected = [peak * (s + 1) / warmup for s in range(warmup)]  # linear warmup, ends at blr * batch / 256
    expected += [peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) for s in (3, 4)]
    assert rows[warmup - 1]['lr'] == pytest.approx(peak, rel=1e-12)
    assert [r['lr'] for r in rows] == pytest.approx(expected, rel=1e-12)
    assert [r['momentum'] for r in rows] == pytest.approx([cosine_momentum(s, total, 0.9) for s in range(5)], rel=1e-12)
    assert rows[0]['momentum'] == 0.9 and rows[-1]['momentum'] > rows[0]['momentum']
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert all(g['lr'] == pytest.approx(expected[-1], rel=1e-12) for g in ck['optimizer']['param_groups'])
    for key, value in dict(alpha=0.5, mask_ratio=0.6, temperature=0.3).items():
        assert ck['macrl'][key] == value and ck['config'][key] == value, key


# -- x1, x2 = aug(x), aug(x): solarization in the stronger view 1 only -------------------------------
def test_solarization_only_in_view_1():
    aug = PairAugment(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crop_scale=(1.0, 1.0), solarize_p=1.0)
    for view in (aug.view1, aug.view2):
        view.flip_p = view.jitter_p = view.gray_p = view.blur_p = 0.0
    # each channel of each image one grey level, so whatever crop the aspect-ratio jitter picks is the image
    levels = torch.tensor([30, 100, 127, 128, 200, 250], dtype=torch.uint8)
    x = levels[torch.arange(8 * 3) % 6].view(8, 3, 1, 1).expand(8, 3, 32, 32).contiguous()
    v1, v2 = aug(x, torch.Generator().manual_seed(0))
    f = x.float() / 255
    assert (f >= 0.5).any() and (f < 0.5).any()
    torch.testing.assert_close(v1, torch.where(f >= 0.5, 1.0 - f, f), rtol=0, atol=1e-5)  # solarised
    torch.testing.assert_close(v2, f, rtol=0, atol=1e-5)  # untouched


# -- fine-tuning: timm's layer-wise lr decay reaches eval_finetune's updates --------------------------------
@pytest.mark.parametrize('layer_decay', [0.5, 1.0])
def test_layer_decay_scales_per_block_updates_inside_eval_finetune(small_folder, layer_decay):  # noqa: F811
    """One AdamW step moves each weight by ~lr x its group's lr_scale (Adam's first step is sign-like), so the
    mean |update| of block 0 over block 1 is the decay (2 blocks: scales decay^2, decay^1, head 1)."""
    from conftest import tiny_encoder
    from macrl_hub.evaluate import eval_finetune
    torch.manual_seed(0)
    model = tiny_encoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eval_finetune(model, str(small_folder), epochs=1, batch_size=32, n_train=32, n_test=32, lr=1e-3,
                  weight_decay=0.0, layer_decay=layer_decay, warmup_epochs=0, precision='fp32',
                  device=torch.device('cpu'))
    after = model.state_dict()

    def step(prefix):
        return torch.cat([(after[k] - before[k]).abs().flatten() for k in before if k.startswith(prefix)
                          and after[k].dtype.is_floating_point]).mean().item()

    ratio = step('blocks.0.') / step('blocks.1.')
    assert ratio == pytest.approx(layer_decay, rel=0.1), f'block 0 / block 1 update ratio {ratio:.3f}'
