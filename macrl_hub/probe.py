"""Linear probe: frozen encoder, BatchNorm1d(affine=False) + Linear (MAE's recipe), on cached features.

The BatchNorm is folded into the linear layer afterwards (`fold_head`), so the result is a plain timm
classifier head on the encoder's pre-logits: `model.head.load_state_dict(fold_head(probe))`.
"""
import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['LinearProbe', 'train_linear_probe', 'lr_factor', 'fold_head', 'accuracy']


class LinearProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, D) features -> (B, num_classes) logits."""
        return self.fc(self.bn(x))


def fold_head(probe: LinearProbe) -> Dict[str, Tensor]:
    """BN (eval statistics) + Linear -> one Linear's {'weight', 'bias'}, exactly equal in eval mode."""
    scale = 1.0 / torch.sqrt(probe.bn.running_var + probe.bn.eps)  # (D,)
    w = probe.fc.weight * scale  # (C, D)
    b = probe.fc.bias - w @ probe.bn.running_mean
    return {'weight': w.detach().clone(), 'bias': b.detach().clone()}


@torch.no_grad()
def accuracy(logits: Tensor, labels: Tensor) -> float:
    return 100.0 * int((logits.argmax(dim=1) == labels).sum()) / len(labels)  # exact (float32's mean is not)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The probe's lr at `step` of `total`, as a fraction of its peak: linear from 0 over `warmup` steps, then a half
    cosine to 0 over the rest (MAE's schedule; warmup 0: a cosine from the first step)."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_linear_probe(
        train_feats: Union[Tensor, Callable[[Tensor], Tensor]],
        train_labels: Tensor,
        num_classes: int,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 0.1,
        weight_decay: float = 0.0,
        optimizer: str = 'sgd',
        seed: int = 0,
        test: Optional[Tuple[Tensor, Tensor]] = None,
        warmup_epochs: float = 0.0,
) -> Tuple[LinearProbe, Dict[str, float]]:
    """Train on cached features (no augmentation), or on `train_feats(idx)`: a function returning fresh (B, D)
    features of the train images `idx` (e.g. of an augmented view). lr is scaled by batch_size / 256 (MAE), rises
    linearly over `warmup_epochs`, then decays on a half cosine over the remaining steps (MAE's schedule; without
    warmup, a cosine from the first step)."""
    torch.manual_seed(seed)
    feats = train_feats if callable(train_feats) else train_feats.__getitem__
    dim = feats(torch.zeros(1, dtype=torch.long)).shape[1] if callable(train_feats) else train_feats.shape[1]
    probe = LinearProbe(dim, num_classes)
    eff_lr = lr * batch_size / 256
    if optimizer == 'sgd':
        opt = torch.optim.SGD(probe.parameters(), lr=eff_lr, momentum=0.9, weight_decay=weight_decay)
    elif optimizer == 'adamw':
        opt = torch.optim.AdamW(probe.parameters(), lr=eff_lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    n = train_labels.shape[0]
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    warm = int(warmup_epochs * steps_per_epoch)
    if warm > total // 2:
        raise ValueError(f'{warmup_epochs:g} warmup epochs leave no decay in a {epochs}-epoch probe: at most half '
                         f'the probe warms up (--warmup-epochs {epochs / 2:g} or less, or more --epochs)')
    g = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        probe.train()
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            for group in opt.param_groups:
                group['lr'] = eff_lr * lr_factor(step, total, warm)
            loss = F.cross_entropy(probe(feats(idx)), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    probe.eval()
    stats = {} if callable(train_feats) else {'train_top1': accuracy(probe(train_feats), train_labels)}
    if test is not None:
        stats['test_top1'] = accuracy(probe(test[0]), test[1])
    return probe, stats
