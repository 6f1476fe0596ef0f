import math

import torch
from torch import nn

from macrl_hub.momentum import cosine_momentum, update_momentum


def test_ema_math():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in target.parameters()]
    o = [p.detach().clone() for p in online.parameters()]
    update_momentum(online, target, 0.9)
    for p, a, b in zip(target.parameters(), t0, o):
        assert torch.allclose(p, 0.9 * a + 0.1 * b)
    update_momentum(online, target, 0.0)  # m = 0 copies
    for p, b in zip(target.parameters(), o):
        assert torch.allclose(p, b)


def test_cosine_schedule():
    assert cosine_momentum(0, 100, 0.99) == 0.99
    assert math.isclose(cosine_momentum(100, 100, 0.99), 1.0)
    assert math.isclose(cosine_momentum(50, 100, 0.99), 0.995)
    vals = [cosine_momentum(s, 100, 0.99) for s in range(101)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_the_momentum_branch_has_no_stochastic_depth():
    """An encoder built with drop_path_rate: the main branch keeps it, the momentum branch (the target, lower-variance
    by design) runs without it, in train mode too: two key passes on the same input agree."""
    import timm
    from macrl_hub import MACRL
    enc = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2, drop_path_rate=0.5)
    model = MACRL(enc, bank_size=64, proj_hidden_dim=32, proj_dim=16).train()
    assert model.encoder.blocks[1].drop_path1.drop_prob > 0
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_momentum(x), model.forward_momentum(x))


def test_the_momentum_branch_has_no_dropout_either():
    """timm's dropout rates (drop_rate, attn/proj/pos drop) stay in the main branch and are off in the momentum
    branch, train mode included: two key passes agree, two main-branch passes do not."""
    import timm
    from torch import nn
    from macrl_hub import MACRL
    enc = timm.create_model('macrl_vit_tiny_p4_cifar', depth=2, drop_rate=0.5, attn_drop_rate=0.5, proj_drop_rate=0.5,
                            pos_drop_rate=0.5)
    model = MACRL(enc, bank_size=64, proj_hidden_dim=32, proj_dim=16).train()
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.encoder.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_momentum(x), model.forward_momentum(x))
        assert not torch.equal(model.encoder.forward_features(x), model.encoder.forward_features(x))
