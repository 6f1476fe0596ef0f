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


def test_probe_lr_warms_up_linearly_then_follows_a_half_cosine(monkeypatch):
    """Every step's lr: 0 -> peak over the warmup steps, then a half cosine to 0 (the paper: "cosine annealing ...
    with warmup"); no warmup is the cosine from the first step that the cards' probes used."""
    import math
    import macrl_hub.probe as probe_mod
    assert [probe_mod.lr_factor(s, 10, 0) for s in (0, 5)] == [1.0, 0.5]  # the schedule before warmup existed
    seen = []

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]['lr'])
            return super().step(closure)
    monkeypatch.setattr(torch.optim, 'SGD', Spy)
    x, y = torch.randn(400, 4), torch.randint(0, 2, (400,))
    train_linear_probe(x, y, 2, epochs=10, batch_size=100, lr=0.1 * 256 / 100, warmup_epochs=2)  # peak 0.1
    steps = 40
    want = [0.1 * s / 8 for s in range(8)] + [0.05 * (1 + math.cos(math.pi * (s - 8) / (steps - 8)))
                                              for s in range(8, steps)]
    assert len(seen) == steps and all(abs(a - b) < 1e-12 for a, b in zip(seen, want)), seen


def test_a_warmup_longer_than_half_the_probe_is_refused():
    """Warmup past half the probe would leave the lr at its peak to the end, whatever the record said."""
    import pytest
    with pytest.raises(ValueError, match='2 warmup epochs leave no decay in a 3-epoch probe'):
        train_linear_probe(torch.randn(40, 4), torch.randint(0, 2, (40,)), 2, epochs=3, batch_size=10,
                           warmup_epochs=2)
