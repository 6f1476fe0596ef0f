import torch

from macrl_hub.probe import fold_head, train_linear_probe


def test_probe_learns_and_folds_exactly():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 3, generator=g)
    x = torch.randn(600, 8, generator=g) * 3 + 2
    y = (x @ w).argmax(1)
    probe, stats = train_linear_probe(x[:500], y[:500], 3, epochs=30, batch_size=100, test=(x[500:], y[500:]))
    assert stats['test_top1'] > 85
    head = fold_head(probe)
    lin = torch.nn.Linear(8, 3)
    lin.load_state_dict(head)
    with torch.no_grad():
        assert torch.allclose(lin(x), probe(x), atol=1e-4)
