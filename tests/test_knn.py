import torch
import torch.nn.functional as F

from macrl_hub.knn import knn_accuracy, knn_predict


def test_knn_predict_weights_votes():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    q = F.normalize(torch.tensor([[1.0, 0.05]]), dim=1)
    scores = knn_predict(q, bank, labels, 2, k=2, t=0.1)
    sims = q @ bank.t()
    votes = (sims[0, :2] / 0.1).exp()  # exp(s / t), up to the per-row factor exp(-s_max / t)
    assert torch.allclose(scores[0, 0], votes.sum() / votes.max())
    assert scores[0, 1] == 0


def test_a_small_temperature_tends_to_the_nearest_neighbour_and_bad_settings_are_refused():
    """exp(s / t) overflowed float32 below t ~ 0.0113: every vote inf, argmax class 0 (chance on 10 classes). Votes
    relative to each row's best stay finite, so a small t gives 1-NN's prediction, as the limit should."""
    import pytest
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(300, 16, generator=g), dim=1)
    test = F.normalize(torch.randn(80, 16, generator=g), dim=1)
    labels = torch.randint(0, 10, (300,), generator=g)
    one = knn_predict(test, bank, labels, 10, k=1).argmax(1)
    for t in (0.005, 0.001):
        scores = knn_predict(test, bank, labels, 10, k=200, t=t)
        assert torch.isfinite(scores).all() and torch.equal(scores.argmax(1), one)
    typical = knn_predict(test, bank, labels, 10, k=20, t=0.07)  # the same argmax as exp(s / t) where that is finite
    sims, idx = (test @ bank.t()).topk(20, dim=1)
    plain = torch.zeros(80, 10).scatter_add_(1, labels[idx], (sims / 0.07).exp())
    assert torch.equal(typical.argmax(1), plain.argmax(1))
    for k, t in ((0, 0.07), (-5, 0.07), (20, 0.0), (20, -0.07)):
        with pytest.raises(ValueError, match='kNN needs k >= 1 and a temperature t > 0'):
            knn_predict(test, bank, labels, 10, k=k, t=t)


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
