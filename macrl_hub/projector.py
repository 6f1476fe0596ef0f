"""Projector: the paper's two-layer MLP head with LayerNorm (no BatchNorm, no predictor)."""
from torch import Tensor, nn

__all__ = ['Projector']


class Projector(nn.Module):
    """Linear -> LayerNorm -> GELU -> Linear (Sec. 3: "We place Layer Normalization instead of Batch
    Normalization in the projector head ... By default, the projected dimension is 512")."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, D) pooled features -> (B, out_dim), not normalised."""
        return self.fc2(self.act(self.norm(self.fc1(x))))
