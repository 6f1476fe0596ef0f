"""MACRL: the pretraining wrapper around any timm Vision Transformer (Algorithm 1 of the paper).

    x1, x2 = aug(x), aug(x)                  # view 1 stronger (solarization), view 2 weaker
    z1, z2 = e_q(x1, m1), e_q(x2, m2)        # encoder on randomly masked tokens
    q1, q2 = p_q(z1), p_q(z2)                # projector on pooled features (see `pooling` below)
    w1, w2 = e_k(x1, m0), e_k(x2, m0)        # momentum encoder on the unmasked views
    k1, k2 = p_k(w1), p_k(w2)
    cl_loss = ctr(q1, k2) + ctr(q2, k1)      # InfoNCE with a memory bank of negatives
    mim_loss = rec(d(z1), x1) + rec(d(z2), x2)  # shared light decoder, L1
    loss = alpha * cl_loss + mim_loss

`objective='mae'` keeps only the reconstruction (no momentum branch), `objective='moco'` only the
contrastive part on unmasked views (MoCo v3 with a bank), so the paper's baselines share this code.
The wrapped `encoder` stays a timm model: `encoder.state_dict()` loads into `timm.create_model(arch, num_classes=0)`
(the wrapper removes the encoder's classifier, in place: the pretraining feature is the pre-logits).

Using it from your own loop:
- Pooling follows the encoder's `global_pool`: 'avg' (the paper's token average) for every macrl_vit_*; a stock timm
  ViT pools its class token by default, so build it with `global_pool='avg'` for the paper's pooling.
- Each forward in train mode enqueues its keys into the memory bank; an extra pass over a batch (logging,
  validation) takes `enqueue=False` or `.eval()`, else the batch's keys become negatives of its own positives.
- `model.no_weight_decay()` names the parameters AdamW should not decay (timm's `create_optimizer_v2` reads it);
  `model.set_grad_checkpointing()` checkpoints the main branch's blocks.
- Under DDP: every rank needs the same batch size (keys are all-gathered), its own masks (pass `generator` or
  `mask_noise` per rank, or seed ranks differently), `broadcast_buffers=False` (else the whole bank is broadcast at
  every forward) and `ddp.module.update_momentum(m)` after each optimizer step. `macrl train` does all of this.

Choices where the paper is silent or ambiguous (each an argument; see README "Design choices"):
- `rec_on='masked'`: the text says the loss covers visible tokens; MAE uses masked ones. Measured with
  the same naive recipe (ViT-Ti/4, 15 CPU-min, CIFAR-10 kNN): visible 35.0%, masked 38.6%, random 32.2%.
- `bank_size=16384`: k1 and k2 are both enqueued, 100,000 keys per CIFAR-10 epoch, so 16,384 is ~0.16 epoch
  of keys and the paper's 65,536 ~0.66 epoch. With per-epoch reshuffling a bank of r epochs still holds a
  sample's own keys from the previous epoch (contrasted as negatives) for ~r^2/2 of samples: ~21% at 65,536,
  ~1% at 16,384.
- `alpha=0.1`: "the contrastive loss is scaled down by a factor of alpha (e.g., 10)".
- `in_batch_negatives=True`: the other keys of the batch are negatives too (MoCo v3), besides the bank.
- `temperature=0.2` (MoCo v2/v3), projector hidden 2048, momentum 0.99 -> 1 (cosine, BYOL).
- `views='both'`: the paper contradicts itself. Algorithm 1, Figure 2 and "a symmetric loss is imposed for the
  two different augmented views in both branches" feed both views to both branches (masked in the main branch,
  unmasked in the momentum branch). Its introduction gives the stronger view (masked) to the main branch and the
  weaker one (unmasked) to the momentum branch only: `views='asymmetric'` is that reading: q1 from x1 alone,
  k2 from x2 alone, loss ctr(q1, k2) + rec(d(z1), x1), half the encoder work per step.
- `pos_embed='learned'`: the encoder's position embedding is timm's ViT's, learned. The paper's encoder "is adapted
  from MAE", whose embedding is a fixed 2-D sin-cos code: `pos_embed='sincos'` (`--recipe paper`) sets that and
  freezes it (`fix_sincos_pos_embed`). Weights and plain timm loading are the same either way.

Speed, not method: `model.momentum_dtype = torch.bfloat16` runs the momentum branch (no gradients) on a bf16 cast
of its fp32 EMA weights, taken afresh at every call, so the whole key forward (residual stream, LayerNorms,
activations) is bf16 instead of autocast's fp32 residual stream with a cast at every matmul. The EMA itself,
the checkpoint and the state dict stay fp32. `macrl train` turns it on where it measured faster (CPU with bf16
precision; see macrl_hub/runtime.py resolve_momentum_dtype). `model.momentum_chunk = n` runs it on n views at a
time (the same keys up to rounding; it keeps no activations, so a chunk's stay in cache): `macrl train` sets it on
CPU in fp32 (resolve_momentum_chunk).
"""
import copy
import itertools
from typing import Dict, Optional, Set

import torch
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed
from timm.models import checkpoint_seq
from torch import Tensor, nn

from .decoder import MACRLDecoder
from .distributed import all_gather_nograd, rank
from .losses import REC_LOSSES, REC_ON, info_nce, reconstruction_loss
from .masking import check_mask_ratio, gather_tokens, patchify, random_masking
from .memory_bank import MemoryBank
from .momentum import update_momentum
from .projector import Projector

__all__ = ['MACRL', 'OBJECTIVES', 'VIEWS']

OBJECTIVES = ('macrl', 'mae', 'moco')
VIEWS = ('both', 'asymmetric')
POS_EMBEDS = ('learned', 'sincos')


class _KeyBranch(nn.Module):
    """e_k -> pre-logits (avg-pool, fc_norm) -> p_k as one module, so that torch.func.functional_call can run it on
    cast weights. Built per call around the wrapper's own modules: it owns nothing and is never in a state dict."""

    def __init__(self, encoder: nn.Module, projector: nn.Module):
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, proj_dim) unnormalised keys."""
        return self.projector(self.encoder.forward_head(self.encoder.forward_features(x), pre_logits=True))


def _without_dropout(module: nn.Module) -> nn.Module:
    """The momentum branch as a fixed target: stochastic depth and dropout off (the encoder's `drop_path_rate` is
    for the main branch; the paper wants the momentum branch lower-variance than the main one, as DINO's and iBOT's
    teachers have no drop path)."""
    for m in module.modules():
        if hasattr(m, 'drop_prob'):  # timm's DropPath
            m.drop_prob = 0.0
        elif isinstance(m, nn.Dropout):
            m.p = 0.0
    return module


def fix_sincos_pos_embed(encoder: nn.Module) -> None:
    """The encoder's position embedding fixed as in MAE: a 2-D sin-cos code of each patch's (row, column) (timm's
    `build_sincos2d_pos_embed`; MAE orders the same sines and cosines differently along the channels, which no
    layer of a freshly trained encoder can tell apart), row-major as timm flattens patches, zeros at embedded
    class/register tokens, frozen (requires_grad False). It stays a parameter of the encoder, so its weights and
    plain timm loading are unchanged."""
    pe = getattr(encoder, 'pos_embed', None)
    if not isinstance(pe, nn.Parameter):
        raise ValueError("pos_embed='sincos' fixes the encoder's position embedding, and this encoder has none "
                         "(built with pos_embed='none'); use pos_embed='learned'")
    grid = list(encoder.patch_embed.grid_size)
    code = build_sincos2d_pos_embed(grid, pe.shape[-1]).to(pe.dtype)  # (L, D)
    with torch.no_grad():
        pe.zero_()
        pe[:, pe.shape[1] - code.shape[0]:] = code
    pe.requires_grad_(False)


def _check_encoder(encoder: nn.Module) -> None:
    """ValueError naming what makes `encoder` one MACRL cannot wrap (before a cryptic error in the first step)."""
    name = type(encoder).__name__
    for attr in ('patch_embed', 'blocks', '_pos_embed', 'forward_head', 'num_prefix_tokens'):
        if not hasattr(encoder, attr):
            raise ValueError(f'MACRL wraps a timm VisionTransformer-like encoder; {name} has no {attr!r}')
    if not isinstance(encoder.blocks, nn.Sequential):  # Eva / RoPE ViTs: blocks take rotary embeddings too
        raise ValueError(f'MACRL runs the encoder\'s blocks as one sequence of tokens; {name}\'s blocks are a '
                         f'{type(encoder.blocks).__name__} (blocks that take more than tokens, e.g. rotary position '
                         f'embeddings) and are not supported: use a timm VisionTransformer')
    if not getattr(encoder, 'global_pool', 'avg'):
        raise ValueError("the encoder returns every token (global_pool=''); MACRL projects one feature per image: "
                         "build it with global_pool='avg' (the paper's) or 'token'")
    ps = tuple(encoder.patch_embed.patch_size)
    if ps[0] != ps[1]:
        raise ValueError(f'patch_size {ps} is not square; the reconstruction target takes square patches')
    if getattr(getattr(encoder, 'patch_drop', None), 'prob', 0.0):
        raise ValueError(f'the encoder drops patches itself (patch_drop_rate={encoder.patch_drop.prob}); MACRL masks '
                         'tokens with mask_ratio and its momentum branch must see every token: build the encoder '
                         'with patch_drop_rate=0')


class MACRL(nn.Module):
    def __init__(
            self,
            encoder: nn.Module,
            objective: str = 'macrl',
            mask_ratio: float = 0.75,
            decoder_dim: int = 256,
            decoder_depth: int = 1,
            decoder_heads: int = 1,
            rec_loss: str = 'l1',
            rec_on: str = 'masked',
            norm_pix_loss: bool = False,
            proj_hidden_dim: int = 2048,
            proj_dim: int = 512,
            bank_size: int = 16384,
            temperature: float = 0.2,
            alpha: float = 0.1,
            in_batch_negatives: bool = True,
            freeze_patch_embed: bool = False,
            views: str = 'both',
            pos_embed: str = 'learned',
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f'unknown objective {objective!r}; allowed: {OBJECTIVES}')
        if rec_loss not in REC_LOSSES:
            raise ValueError(f'unknown rec_loss {rec_loss!r}; allowed: {REC_LOSSES}')
        if rec_on not in REC_ON:
            raise ValueError(f'unknown rec_on {rec_on!r}; allowed: {REC_ON}')
        if views not in VIEWS:
            raise ValueError(f'unknown views {views!r}; allowed: {VIEWS}')
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f'unknown pos_embed {pos_embed!r}; allowed: {POS_EMBEDS}')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature!r}')
        if alpha < 0:
            raise ValueError(f'alpha weighs the contrastive loss and must be >= 0, got {alpha!r}')
        if objective != 'mae' and bank_size == 0 and not in_batch_negatives:
            raise ValueError('bank_size=0 with in_batch_negatives=False leaves InfoNCE no negatives: its loss is 0 '
                             'and the contrastive branch never learns; use a bank, in-batch negatives, or both')
        _check_encoder(encoder)
        if getattr(encoder, 'num_classes', 0):
            encoder.reset_classifier(0)  # the pretraining feature is the pre-logits, never a head
        self.objective = objective
        mask_ratio = check_mask_ratio(mask_ratio)  # MoCo's too: an out-of-range value is named, not ignored
        self.mask_ratio = mask_ratio if objective != 'moco' else 0.0  # MoCo: unmasked views
        if objective != 'moco' and self.mask_ratio == 0 and rec_on == 'masked':
            raise ValueError(f"mask_ratio=0 masks no tokens, so objective={objective!r} with rec_on='masked' has "
                             f"nothing to reconstruct; use mask_ratio > 0, or rec_on='visible' or 'all'")
        self.rec_loss, self.rec_on, self.norm_pix_loss = rec_loss, rec_on, norm_pix_loss
        self.temperature, self.alpha, self.in_batch_negatives = temperature, alpha, in_batch_negatives
        self.views = views
        #: None: the momentum branch runs on its fp32 weights (under the caller's autocast); a dtype (bf16): on a cast
        #: of them taken at each call (see the module docstring). Not a hyperparameter: not in `config`.
        self.momentum_dtype: Optional[torch.dtype] = None
        #: None: the momentum branch sees the whole batch at once; n: n views at a time (same keys up to fp32
        #: rounding; no activations are kept, so a chunk's stay in cache; see runtime.resolve_momentum_chunk).
        self.momentum_chunk: Optional[int] = None

        self.encoder = encoder
        pe = encoder.patch_embed
        self.patch_size = pe.patch_size[0]
        self.grid_size = tuple(pe.grid_size)
        self.in_chans = pe.proj.in_channels
        self.img_size = tuple(pe.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        dim = encoder.num_features
        if freeze_patch_embed:  # MoCo v3's stabiliser; the paper offers it but does not use it
            pe.requires_grad_(False)
        if pos_embed == 'sincos':  # MAE's encoder, which the paper's is "adapted from" (before the momentum copy)
            fix_sincos_pos_embed(encoder)

        self.decoder: Optional[MACRLDecoder] = None
        if objective in ('macrl', 'mae'):
            self.decoder = MACRLDecoder(
                self.grid_size, self.patch_size, dim, self.in_chans, encoder.num_prefix_tokens,
                dim=decoder_dim, depth=decoder_depth, num_heads=decoder_heads)
        self.projector = self.momentum_encoder = self.momentum_projector = self.bank = None
        if objective in ('macrl', 'moco'):
            self.projector = Projector(dim, proj_hidden_dim, proj_dim)
            self.momentum_encoder = _without_dropout(copy.deepcopy(encoder).requires_grad_(False))
            if hasattr(self.momentum_encoder, 'grad_checkpointing'):  # no gradients: nothing to recompute
                self.momentum_encoder.grad_checkpointing = False
            self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
            self.bank = MemoryBank(bank_size, proj_dim)
        self.config = dict(
            objective=objective, mask_ratio=self.mask_ratio, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
            decoder_heads=decoder_heads, rec_loss=rec_loss, rec_on=rec_on, norm_pix_loss=norm_pix_loss,
            proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim, bank_size=bank_size, temperature=temperature,
            alpha=alpha, in_batch_negatives=in_batch_negatives, freeze_patch_embed=freeze_patch_embed, views=views,
            pos_embed=pos_embed)

    # -- steps ------------------------------------------------------------------------------------
    def check_views(self, x1: Tensor, x2: Tensor) -> None:
        for name, x in (('x1', x1), ('x2', x2)):
            if not isinstance(x, Tensor) or x.ndim != 4:
                raise ValueError(f'{name} must be a (B, C, H, W) tensor, got shape {tuple(getattr(x, "shape", ()))}')
            if not x.is_floating_point():
                raise ValueError(f'{name} is {x.dtype}; MACRL takes float views, normalised with the encoder\'s '
                                 f'mean/std (macrl_hub.transforms.PairAugment makes both from uint8 images)')
            if x.shape[1] != self.in_chans or tuple(x.shape[2:]) != self.img_size:
                raise ValueError(f'{name} has shape {tuple(x.shape)}; this wrapper takes '
                                 f'(B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}) (its masks and '
                                 f'decoder are built for the encoder\'s img_size)')
        if x1.shape != x2.shape:
            raise ValueError(f'the two views differ in shape: {tuple(x1.shape)} vs {tuple(x2.shape)}')

    def forward_encoder(self, x: Tensor, ids_keep: Optional[Tensor]) -> Tensor:
        """x: (B, C, H, W), ids_keep: (B, L_keep) or None (no mask) -> (B, P + L_keep, D) tokens."""
        enc = self.encoder
        x = enc._pos_embed(enc.patch_embed(x))  # (B, P + L, D), P prefix (class/register) tokens
        if ids_keep is not None:
            P = enc.num_prefix_tokens
            x = torch.cat([x[:, :P], gather_tokens(x[:, P:], ids_keep)], dim=1)  # (B, P + L_keep, D)
        x = enc.norm_pre(x)
        if getattr(enc, 'grad_checkpointing', False) and torch.is_grad_enabled():
            x = checkpoint_seq(enc.blocks, x)  # timm's: recompute each block's activations in backward
        else:
            x = enc.blocks(x)
        return enc.norm(x)

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """latent: (B, P + L_keep, D) -> (B, L, p*p*C) predicted pixels."""
        return self.decoder(latent, ids_restore)

    def project(self, latent: Tensor) -> Tensor:
        """latent: (B, P + L_keep, D) -> (B, proj_dim) L2-normalised query (avg-pool, fc_norm, p_q)."""
        return F.normalize(self.projector(self.encoder.forward_head(latent, pre_logits=True)).float(), dim=1)

    @torch.no_grad()
    def forward_momentum(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) unmasked -> (B, proj_dim) L2-normalised keys from e_k, p_k (in `momentum_dtype` if set)."""
        branch = _KeyBranch(self.momentum_encoder, self.momentum_projector)
        run, dt = branch, self.momentum_dtype
        if dt is not None:  # the EMA weights stay fp32 in place; the forward sees a cast (~ms per step)
            weights = {n: t.to(dt) if t.is_floating_point() else t
                       for n, t in itertools.chain(branch.named_parameters(), branch.named_buffers())}
            x = x.to(dt)
            run = lambda c: torch.func.functional_call(branch, weights, (c,))  # noqa: E731
        chunks = x.split(self.momentum_chunk) if self.momentum_chunk else (x,)
        k = torch.cat([run(c) for c in chunks])  # (B, proj_dim)
        return F.normalize(k.float(), dim=1)

    def forward_loss_mim(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """imgs: (VB, C, H, W), pred: (VB, L, p*p*C), mask: (VB, L) -> rec(x_1, x1) + rec(x_2, x2)
        (V = 2 views; with views='asymmetric' V = 1: rec(x_1, x1))."""
        target = patchify(imgs, self.patch_size)
        v = 2 if self.views == 'both' else 1
        return sum(reconstruction_loss(p, t, m, self.rec_loss, self.rec_on, self.norm_pix_loss)
                   for p, t, m in zip(pred.chunk(v), target.chunk(v), mask.chunk(v)))

    def forward_loss_cl(self, q: Tensor, k: Tensor, enqueue: bool = True) -> Tensor:
        """q, k: (2B, proj_dim) for both views -> ctr(q1, k2) + ctr(q2, k1); enqueues k1, k2 if `enqueue`.
        With views='asymmetric': q = q1, k = k2, each (B, proj_dim) -> ctr(q1, k2); enqueues k2."""
        if self.views == 'asymmetric':
            k2 = all_gather_nograd(k)  # (world * B, proj_dim)
            neg = self.bank.negatives() if self.bank.size else None  # enqueue replaces the bank: no copy
            loss = info_nce(q, k2, neg, self.temperature, self.in_batch_negatives, rank() * q.shape[0])
            if enqueue:
                self.bank.enqueue(k2)
            return loss
        q1, q2 = q.chunk(2)
        k1, k2 = (all_gather_nograd(t) for t in k.chunk(2))  # (world * B, proj_dim), rank order
        offset = rank() * q1.shape[0]
        neg = self.bank.negatives() if self.bank.size else None  # enqueue replaces the bank: no copy
        loss = (info_nce(q1, k2, neg, self.temperature, self.in_batch_negatives, offset)
                + info_nce(q2, k1, neg, self.temperature, self.in_batch_negatives, offset))
        if enqueue:
            self.bank.enqueue(torch.cat([k1, k2]))
        return loss

    def forward(self, x1: Tensor, x2: Tensor, generator: Optional[torch.Generator] = None,
                mask_noise: Optional[Tensor] = None, enqueue: Optional[bool] = None) -> Dict[str, Tensor]:
        """x1 (stronger view), x2 (weaker view): (B, C, H, W) float, normalised -> named losses.

        The masks come from `mask_noise` (2B, L) if given (rows: view 1 then view 2; (B, L) with
        views='asymmetric'), else from `generator` (on x's device), else from the global RNG. The keys are
        enqueued into the memory bank when `enqueue` (default: in train mode); pass False for an extra pass.
        """
        self.check_views(x1, x2)
        both = self.views == 'both'
        x = torch.cat([x1, x2]) if both else x1  # main branch: (2B or B, C, H, W), one pass for both views
        ids_keep = ids_restore = mask = None
        if self.mask_ratio > 0:
            ids_keep, ids_restore, mask = random_masking(
                x.shape[0], self.num_patches, self.mask_ratio, x.device, generator, mask_noise)
        elif self.decoder is not None:  # no mask (rec_on 'visible'/'all'): every token in place, none masked
            ids_restore = torch.arange(self.num_patches, device=x.device).expand(x.shape[0], -1)  # (2B, L)
            mask = x.new_zeros(x.shape[0], self.num_patches, dtype=torch.float32)  # (2B, L)
        latent = self.forward_encoder(x, ids_keep)  # (2B, P + L_keep, D)
        out: Dict[str, Tensor] = {}
        loss = x.new_zeros((), dtype=torch.float32)
        if self.decoder is not None:
            out['loss_mim'] = self.forward_loss_mim(x, self.forward_decoder(latent, ids_restore), mask)
            loss = loss + out['loss_mim']
        if self.projector is not None:
            out['loss_cl'] = self.forward_loss_cl(self.project(latent), self.forward_momentum(x if both else x2),
                                                  self.training if enqueue is None else enqueue)
            loss = loss + (self.alpha if self.objective == 'macrl' else 1.0) * out['loss_cl']
        out['loss'] = loss
        return out

    def no_weight_decay(self) -> Set[str]:
        """Parameter names AdamW should not decay, timm's convention (its create_optimizer_v2 reads this): the
        encoder's own (position embedding, class/register tokens) and the decoder's mask token. Biases and norms are
        skipped by their shape (timm's `param_groups_weight_decay`)."""
        skip = {f'encoder.{n}' for n in getattr(self.encoder, 'no_weight_decay', lambda: set())()}
        return skip | ({'decoder.mask_token'} if self.decoder is not None else set())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the main branch's encoder blocks in backward (timm's checkpoint_seq): less memory, ~1/3 more
        compute. The momentum branch has no gradients and is never checkpointed."""
        self.encoder.set_grad_checkpointing(enable)

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """e_k <- m e_k + (1 - m) e_q and p_k likewise; call after each optimizer step."""
        if not 0.0 <= m <= 1.0:
            raise ValueError(f'momentum must be in [0, 1] (1 keeps the momentum branch fixed), got {m!r}')
        if self.momentum_encoder is not None:
            update_momentum(self.encoder, self.momentum_encoder, m)
            update_momentum(self.projector, self.momentum_projector, m)
