"""The linearity requirement (docs/METHOD.md section 2): optimizers whose step is not linear in the learning rate
are refused, by name or by the one-time check, without damage; linear ones are accepted."""

import pytest
import torch
from toy_problems import mse, regression, two_linears

from hidlr_hf import HiDLR, HiDLRError


class _SquareLR(torch.optim.SGD):
    """Steps by lr**2 * grad: not linear in the learning rate."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] ** 2)


class _LrInState(torch.optim.SGD):
    """Linear displacement, but remembers the learning rate in its state."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["seen_lr"] = torch.tensor(group["lr"])
                    p.add_(p.grad, alpha=-group["lr"])


@pytest.mark.parametrize("cls", [_SquareLR, _LrInState])
def test_nonlinear_optimizer_refused_without_damage(cls):
    X, y = regression()
    a, b = two_linears()
    opt = cls([{"params": a.parameters(), "lr": 0.1}, {"params": b.parameters(), "lr": 0.1}])
    hidlr = HiDLR(opt, every=1)
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    with pytest.raises(HiDLRError, match="not linear in the learning rate"):
        hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
    for p, w in zip((*a.parameters(), *b.parameters()), before):
        assert torch.equal(p, w)
    assert not opt.state or all(not s for s in opt.state.values())
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]


def test_known_nonlinear_optimizers_refused_by_name():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(HiDLRError, match="Rprop"):
        HiDLR(torch.optim.Rprop([p]))
    from transformers.optimization import Adafactor

    with pytest.raises(HiDLRError, match="relative_step"):
        HiDLR(Adafactor([p], lr=None, relative_step=True))


def test_linear_optimizers_accepted():
    X, y = regression()
    for make in (
        lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, nesterov=True),
        lambda ps: torch.optim.Adagrad(ps, lr=0.01),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=False),
        lambda ps: torch.optim.NAdam(ps, lr=0.01),
    ):
        a, b = two_linears()
        opt = make([{"params": a.parameters()}, {"params": b.parameters()}])
        hidlr = HiDLR(opt, every=1)
        for _ in range(2):
            opt.zero_grad()
            mse(a, b, X[:8], y[:8]).backward()
            assert hidlr.step(lambda: mse(a, b, X[100:132], y[100:132])).status == "ok"


def test_linearity_check_steps_each_groups_smallest_tensors(monkeypatch):
    """The one-time check must not clone a big embedding's optimizer state when small members suffice."""
    import hidlr_hf.core.linearity as linearity

    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(40_000, 8), torch.nn.Linear(8, 1)  # 320k-element matrix led first in its group
    small = torch.nn.Parameter(0.01 * torch.randn(70_000))  # alone enough for the check (>= 65,536 elements)
    opt = torch.optim.AdamW([{"params": [emb.weight, small]}, {"params": head.parameters()}], lr=1e-3)
    ids = torch.randint(0, 40_000, (16,))

    def loss():
        return (head(emb(ids)) ** 2).mean() + (small**2).mean()

    cloned = []
    original = linearity.clone_state
    monkeypatch.setattr(linearity, "clone_state", lambda o, ps: cloned.append(sum(p.numel() for p in ps)) or original(o, ps))
    hidlr = HiDLR(opt, every=1)
    for _ in range(2):  # the second step has optimizer state, the first none
        opt.zero_grad()
        loss().backward()
        assert hidlr.step(loss).status == "ok"
    assert cloned and max(cloned) < emb.weight.numel()  # the embedding (320k elements) was never in the subset
    assert hidlr.linearity_checked


def test_non_finite_gradients_postpone_the_check_and_never_blame_the_optimizer():
    """An fp16 overflow or a bad batch on the very first step: the gradients say nothing about linearity."""
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
    hidlr = HiDLR(opt, every=1)

    def closure():
        return mse(a, b, X[100:132], y[100:132])

    # As under a GradScaler: the step with an overflowed gradient is skipped, and the check waits.
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    a.weight.grad[0, 0] = float("inf")
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    assert hidlr.pre_step()
    assert hidlr.post_step(closure, skipped=True) is None
    assert not hidlr.linearity_checked and not opt.state
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 3e-2]
    for p, w in zip((*a.parameters(), *b.parameters()), before):
        assert torch.equal(p, w)
    # Without a scaler the NaN gradient reaches the optimizer: the round is discarded, nothing is blamed.
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    b.bias.grad[0] = float("nan")
    assert hidlr.step(closure).status.startswith("discarded")
    assert not hidlr.linearity_checked
    # The next finite gradients are checked, and the rounds go on.
    a2, b2 = two_linears()
    opt2 = torch.optim.AdamW([{"params": a2.parameters(), "lr": 1e-2}, {"params": b2.parameters(), "lr": 3e-2}])
    hidlr2 = HiDLR(opt2, every=1)
    opt2.zero_grad()
    mse(a2, b2, X[:8], y[:8]).backward()
    a2.weight.grad[0, 1] = float("nan")
    hidlr2.pre_step()
    hidlr2.post_step(lambda: mse(a2, b2, X[100:132], y[100:132]), skipped=True)
    opt2.zero_grad()
    mse(a2, b2, X[:8], y[:8]).backward()
    assert hidlr2.step(lambda: mse(a2, b2, X[100:132], y[100:132])).status == "ok"
    assert hidlr2.linearity_checked
