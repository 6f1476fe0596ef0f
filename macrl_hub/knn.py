"""Weighted kNN classification on L2-normalised features (InstDisc; solo-learn; lightly).

`knn_predict` is a pure tensor function: a test feature votes for the labels of its k nearest
training features, each vote weighted by exp(similarity / t).
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['knn_predict', 'knn_accuracy']


@torch.no_grad()
def knn_predict(
        feature: Tensor,
        bank: Tensor,
        bank_labels: Tensor,
        num_classes: int,
        k: int = 200,
        t: float = 0.07,
) -> Tensor:
    """feature: (B, D), bank: (N, D), both L2-normalised; bank_labels: (N,) -> (B, num_classes) scores.

    The weights are exp((s - s_max) / t), s_max each row's top similarity: the same votes up to a per-row factor (so
    the same prediction), finite at any t > 0. exp(s / t) itself overflows float32 once t < ~0.0113, every neighbour
    then weighs inf, and the prediction falls to class 0."""
    if k < 1 or not t > 0:
        raise ValueError(f'kNN needs k >= 1 and a temperature t > 0, got k={k}, t={t}')
    k = min(k, bank.shape[0])
    sim = feature @ bank.t()  # (B, N)
    sim_w, idx = sim.topk(k, dim=1)  # (B, k), sorted: column 0 is the row's largest
    labels = bank_labels[idx]  # (B, k)
    w = ((sim_w - sim_w[:, :1]) / t).exp()
    scores = torch.zeros(feature.shape[0], num_classes, device=feature.device, dtype=w.dtype)
    return scores.scatter_add_(1, labels, w)


@torch.no_grad()
def knn_accuracy(
        train_feats: Tensor,
        train_labels: Tensor,
        test_feats: Tensor,
        test_labels: Tensor,
        num_classes: int,
        ks: Sequence[int] = (20, 200),
        t: float = 0.07,
        chunk: int = 1024,
) -> Dict[int, float]:
    """Top-1 accuracy (%) of weighted kNN for each k; features are normalised here."""
    bank = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    correct = {k: 0 for k in ks}
    for i in range(0, test.shape[0], chunk):
        f = test[i:i + chunk]
        y = test_labels[i:i + chunk]
        for k in ks:
            pred = knn_predict(f, bank, train_labels, num_classes, k, t).argmax(dim=1)
            correct[k] += int((pred == y).sum())
    return {k: 100.0 * c / test.shape[0] for k, c in correct.items()}
