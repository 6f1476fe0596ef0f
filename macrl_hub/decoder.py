"""The light MACRL decoder: linear to 256-d, mask tokens, positions, one attention block, pixel head.

Paper, Sec. 3: "we utilize a 2-layer decoder, with one linear layer for matching the embedding space
between the encoder and decoder and one attention layer for reconstructing the masked samples ...
By default, the embedding dimension for the decoder is 256". Shared by both views.
"""
from typing import Tuple

import torch
from torch import Tensor, nn
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block

from .masking import gather_tokens

__all__ = ['MACRLDecoder']


class MACRLDecoder(nn.Module):
    def __init__(
            self,
            grid_size: Tuple[int, int],
            patch_size: int,
            encoder_dim: int,
            in_chans: int = 3,
            num_prefix_tokens: int = 0,
            dim: int = 256,
            depth: int = 1,
            num_heads: int = 1,
            mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_patches = grid_size[0] * grid_size[1]
        self.num_prefix_tokens = num_prefix_tokens
        # The encoder may end with an Identity norm (timm moves it to fc_norm when avg-pooling),
        # so the decoder normalises what it receives.
        self.norm_in = nn.LayerNorm(encoder_dim)
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # (L, dim) fixed as MAE, row-major like patchify: token r * W + c codes (r, c) (on square grids identical to
        # reverse_coord=True, which scrambles a non-square one)
        pos = build_sincos2d_pos_embed(list(grid_size), dim)
        self.register_buffer('pos_embed', pos.unsqueeze(0), persistent=False)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_size * patch_size * in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """latent: (B, P + L_keep, D_enc) encoder tokens, ids_restore: (B, L) -> (B, L, p*p*C) pixels."""
        x = self.embed(self.norm_in(latent[:, self.num_prefix_tokens:]))  # (B, L_keep, dim)
        B, n_vis, dim = x.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(B, self.num_patches - n_vis, dim)
        x = torch.cat([x, mask_tokens], dim=1)  # (B, L, dim) in shuffled order
        x = gather_tokens(x, ids_restore) + self.pos_embed.to(x.dtype)  # original order
        x = self.blocks(x)
        return self.pred(self.norm(x))  # (B, L, p*p*C)
