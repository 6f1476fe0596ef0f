import torch
import torch.nn.functional as F

from macrl_hub.knn import knn_accuracy, knn_predict


def test_knn_predict_weights_votes():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    q = F.normalize(torch.tensor([[1.0, 0.05]]), dim=1)
    scores = knn_predict(q, bank, labels, 2, k=2, t=0.1)
    sims = q @ bank.t()
    assert torch.allclose(scores[0, 0], (sims[0, 0] / 0.1).exp() + (sims[0, 1] / 0.1).exp())
    assert scores[0, 1] == 0


def test_knn_accuracy_on_separable_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 5
    ytr = torch.arange(400) % 4
    yte = torch.arange(100) % 4
    xtr = centers[ytr] + torch.randn(400, 16, generator=g)
    xte = centers[yte] + torch.randn(100, 16, generator=g)
    acc = knn_accuracy(xtr, ytr, xte, yte, 4, ks=(1, 20))
    assert acc[1] > 95 and acc[20] > 95
    acc_rand = knn_accuracy(torch.randn(400, 16), ytr, torch.randn(100, 16), yte, 4, ks=(20,))
    assert acc_rand[20] < 50


def test_knn_accuracy_depends_on_directions_only():
    """Features are L2-normalised first (cosine kNN): rescaling each feature by any positive factor changes nothing;
    without the normalisation large-norm bank entries would win every vote."""
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(200, 16, generator=g), torch.randn(50, 16, generator=g)
    yt, ye = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (50,), generator=g)
    scale = torch.rand(200, 1, generator=g) * 100 + 0.01
    a = knn_accuracy(train, yt, test, ye, 4, ks=(1, 20))
    b = knn_accuracy(train * scale, yt, test * 7.0, ye, 4, ks=(1, 20))
    assert a == b
