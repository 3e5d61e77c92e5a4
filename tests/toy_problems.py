"""Small problems shared by the engine tests: a two-group regression and an engine ready to probe."""

import torch

from hidlr_hf import HiDLR


def regression(seed=0, n=256):
    """A linear regression on 6 features; features 3-5 are scaled by 4 (16x the curvature)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    X[:, 3:] *= 4.0  # a second group with 16x the curvature
    w = torch.randn(6, 1, generator=g)
    y = X @ w + 0.1 * torch.randn(n, 1, generator=g)
    return X, y


def two_linears():
    """Two linear layers, one per feature half of :func:`regression`: two parameter groups."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1, bias=False), torch.nn.Linear(3, 1)
    return a, b


def mse(a, b, X, y):
    """The regression loss of :func:`two_linears` on rows ``X``."""
    return torch.nn.functional.mse_loss(a(X[:, :3]) + b(X[:, 3:]), y)


def fault_run(trust_region=2.0):
    """``(X, y, model, optimizer, engine)`` right after a backward pass: a probe round is due."""
    X, y = regression()
    a, b = two_linears()
    model = torch.nn.ModuleDict({"a": a, "b": b})
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
    hidlr = HiDLR(opt, every=1, model=model, trust_region=trust_region, jump_limit=max(trust_region, 1.0))
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    return X, y, model, opt, hidlr


def optimizer_state(opt):
    """A copy of every parameter's optimizer state, in param-group order (None where a parameter has none)."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            entry = opt.state.get(p)
            out.append(None if not entry else {k: v.clone() if torch.is_tensor(v) else v for k, v in entry.items()})
    return out


def assert_same_state(got, want):
    """Two :func:`optimizer_state` copies are equal bit for bit: the same keys, every tensor ``torch.equal``."""
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), i
        if a is None:
            continue
        assert sorted(a) == sorted(b), i
        for key in a:
            if torch.is_tensor(b[key]):
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (i, key)
            else:
                assert a[key] == b[key], (i, key)
