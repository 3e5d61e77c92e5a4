"""The engine against analytic values, an exact-Hessian reference, and the plain optimizer."""

import copy
import math

import numpy as np
import pytest
import torch

from hidlr_hf import HiDLR, HiDLRError
from toy_problems import mse, regression, two_linears

SIZES = [4, 5, 6]


def quadratic(cross: bool, seed: int = 0):
    """L(w) = 1/2 (w - w*)^T H (w - w*) with groups of SIZES; H block-diagonal across groups unless ``cross``."""
    g = torch.Generator().manual_seed(seed)
    n = sum(SIZES)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    H = M @ M.T / n + torch.eye(n, dtype=torch.float64)
    if not cross:
        mask = torch.zeros(n, n, dtype=torch.bool)
        start = 0
        for m in SIZES:
            mask[start : start + m, start : start + m] = True
            start += m
        H = torch.where(mask, H, torch.zeros_like(H))
    wstar = torch.randn(n, generator=g, dtype=torch.float64)
    params = [torch.nn.Parameter(torch.randn(m, generator=g, dtype=torch.float64)) for m in SIZES]

    def loss():
        e = torch.cat(list(params)) - wstar
        return 0.5 * e @ H @ e

    return params, H, loss


def analytic_b_A(G, d, H):
    """b_k = G_k . d_k and A_jk = d_j . H_jk d_k, by blocks."""
    bounds = np.cumsum([0] + SIZES)
    blocks = [slice(bounds[k], bounds[k + 1]) for k in range(len(SIZES))]
    b = torch.stack([G[s] @ d[s] for s in blocks])
    A = torch.stack([torch.stack([d[sj] @ H[sj, sk] @ d[sk] for sk in blocks]) for sj in blocks])
    return b, A


def rel_err(x, y):
    return float((x - y).abs().max() / y.abs().max())


@pytest.mark.parametrize("design,cross,tol", [("axis", True, 1e-6), ("full", True, 1e-6), ("random", False, 1e-3)])
def test_quadratic_matches_analytic(design, cross, tol):
    params, H, loss = quadratic(cross)
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, [0.1, 0.05, 0.2])])
    hidlr = HiDLR(opt, design=design, every=1)
    loss().backward()
    G = torch.cat([p.grad for p in params]).clone()
    est = hidlr.step(loss)
    b, A = analytic_b_A(G, G, H)  # plain SGD: the direction d is the gradient
    assert est.status == "ok"
    assert rel_err(est.b, b) < tol
    assert rel_err(est.A.diagonal(), A.diagonal()) < tol
    if design == "full":
        assert rel_err(est.A, A) < tol
        assert torch.allclose(est.optimal_rate, torch.linalg.solve(A, b), rtol=1e-6)
    else:
        off = ~torch.eye(3, dtype=torch.bool)
        assert torch.isnan(est.A[off]).all()  # not measured by axis / random
        assert torch.allclose(est.optimal_rate, b / A.diagonal(), rtol=max(tol, 1e-9) * 10)
    gain = b**2 / (2 * A.diagonal())
    assert torch.allclose(est.influence, gain / torch.tensor(SIZES, dtype=torch.float64), rtol=max(tol, 1e-9) * 10)
    # One more forward pass when the round proposed a jump and verified it.
    assert est.forward_passes == {"axis": 7, "full": 10, "random": 13}[design] + (est.verified is not None)


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _hvp_reference(model, loss_fn, direction):
    """Exact b and A from torch.func: gradient and Hessian-vector products (reverse over reverse), float64."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    base = {n: p.detach().clone() for n, p in model.named_parameters()}

    def f(trainable):
        merged = dict(base)
        merged.update(trainable)
        return loss_fn(torch.func.functional_call(model, merged, ()))

    w = {n: base[n] for n in names}
    G = torch.func.grad(f)(w)
    def hvp(v):
        def dot(trainable):
            g = torch.func.grad(f)(trainable)
            return sum((g[n] * v[n]).sum() for n in g)

        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            return torch.func.grad(dot)(w)

    return names, G, hvp


def _check_against_reference(model, make_groups, loss_fn, rtol_b, rtol_A):
    model = model.double()
    opt = torch.optim.AdamW(make_groups(model), weight_decay=0.01)
    named = dict(model.named_parameters())
    # Warm the optimizer so the direction is Adam's, not the first step's sign(g).
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model()).backward()
        opt.step()
    opt.zero_grad()
    loss_fn(model()).backward()
    # The optimizer's own direction, from a copy stepped at unit rate.
    twin = copy.deepcopy((model, opt))
    t_model, t_opt = twin
    for p, q in zip(model.parameters(), t_model.parameters()):
        q.grad = p.grad.clone()
    for g in t_opt.param_groups:
        g["lr"] = 1.0
    before = {n: p.detach().clone() for n, p in t_model.named_parameters()}
    t_opt.step()
    d = {n: before[n] - p.detach() for n, p in t_model.named_parameters()}

    hidlr = HiDLR(opt, design="full", every=1, model=model, noise_tolerance=0.0)
    names, G, hvp = _hvp_reference(model, loss_fn, d)
    est = hidlr.step(lambda: loss_fn(model()))
    assert est.status == "ok"
    K = hidlr.num_groups
    group_of = {}
    for k, indices in enumerate(hidlr.param_group_indices):
        for i in indices:
            for p in opt.param_groups[i]["params"]:
                group_of[next(n for n, q in named.items() if q is p)] = k
    b = torch.zeros(K, dtype=torch.float64)
    for n in names:
        b[group_of[n]] += (G[n] * d[n]).sum()
    A = torch.zeros(K, K, dtype=torch.float64)
    for k in range(K):
        vk = {n: d[n] if group_of[n] == k else torch.zeros_like(d[n]) for n in names}
        Hv = hvp(vk)
        for j in range(K):
            A[j, k] = sum((d[n] * Hv[n]).sum() for n in names if group_of[n] == j)
    assert rel_err(est.b, b) < rtol_b, (est.b, b)
    assert rel_err(est.A, A) < rtol_A, (est.A, A)


def test_mlp_against_exact_hessian():
    torch.manual_seed(0)
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self):
            return self.net(x.to(self.net[0].weight.dtype))

    def groups(m):
        return [
            {"params": [m.net[0].weight], "lr": 3e-4},
            {"params": [m.net[0].bias, m.net[2].bias], "lr": 3e-4},
            {"params": [m.net[2].weight], "lr": 6e-4},
        ]

    # Tolerances: central differences carry third-order terms, relative size O((lr |d|)^2).
    _check_against_reference(Wrapped(), groups, lambda out: torch.nn.functional.cross_entropy(out, y), 1e-4, 1e-3)


def test_tiny_transformer_against_exact_hessian():
    torch.manual_seed(1)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    head = torch.nn.Linear(16, 2)
    x = torch.randn(8, 5, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.head = layer, head

        def forward(self):
            return self.head(self.layer(x).mean(dim=1))

    def groups(m):
        attn = [p for n, p in m.layer.named_parameters() if n.startswith("self_attn")]
        mlp = [p for n, p in m.layer.named_parameters() if n.startswith("linear")]
        norm = [p for n, p in m.layer.named_parameters() if n.startswith("norm")]
        return [
            {"params": attn, "lr": 1e-4},
            {"params": mlp, "lr": 1e-4},
            {"params": norm, "lr": 1e-4},
            {"params": list(m.head.parameters()), "lr": 1e-4},
        ]

    # Eval mode would take the fused fast path, whose numerics differ from the reference's.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _check_against_reference(Tiny(), groups, lambda out: torch.nn.functional.cross_entropy(out, y), 1e-3, 1e-2)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def test_no_probe_due_is_bit_identical_to_plain_optimizer():
    X, y = regression()
    runs = []
    for use_hidlr in (False, True):
        a, b = two_linears()
        opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
        hidlr = HiDLR(opt, every=1) if use_hidlr else None
        for i in range(20):
            opt.zero_grad()
            mse(a, b, X[i * 8 : i * 8 + 8], y[i * 8 : i * 8 + 8]).backward()
            hidlr.step() if use_hidlr else opt.step()  # no closure: no probe is ever run
        runs.append(([p.detach().clone() for p in (*a.parameters(), *b.parameters())], opt.state_dict()))
    for p, q in zip(runs[0][0], runs[1][0]):
        assert torch.equal(p, q)
    for s, t in zip(runs[0][1]["state"].values(), runs[1][1]["state"].values()):
        for key in s:
            assert torch.equal(torch.as_tensor(s[key]), torch.as_tensor(t[key]))


def test_between_rounds_steps_are_plain_optimizer_steps():
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
    hidlr = HiDLR(opt, every=50)
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    assert hidlr.step(lambda: mse(a, b, X[100:132], y[100:132])) is not None
    twin_a, twin_b, twin_opt = copy.deepcopy((a, b, opt))
    for i in range(1, 20):
        for m_a, m_b, o, h in ((a, b, opt, hidlr), (twin_a, twin_b, twin_opt, None)):
            o.zero_grad()
            mse(m_a, m_b, X[i * 8 : i * 8 + 8], y[i * 8 : i * 8 + 8]).backward()
            if h is None:
                o.step()
            else:
                assert not h.probe_due
                assert h.step(lambda: mse(m_a, m_b, X[100:132], y[100:132])) is None
    for p, q in zip((*a.parameters(), *b.parameters()), (*twin_a.parameters(), *twin_b.parameters())):
        assert torch.equal(p, q)


def test_probe_step_advances_adam_state_exactly_once():
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.Adam([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
    twin_a, twin_b, twin_opt = copy.deepcopy((a, b, opt))
    hidlr = HiDLR(opt, every=1)
    for i in range(5):
        for m_a, m_b, o in ((a, b, opt), (twin_a, twin_b, twin_opt)):
            o.zero_grad()
            mse(m_a, m_b, X[:8], y[:8]).backward()
        # The twin takes a plain step from the same parameters and state with the rates now in force.
        for g, h in zip(twin_opt.param_groups, opt.param_groups):
            g["lr"] = h["lr"]
        twin_opt.step()
        hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
        for p, q in zip((*a.parameters(), *b.parameters()), (*twin_a.parameters(), *twin_b.parameters())):
            s, t = opt.state[p], twin_opt.state[q]
            assert float(s["step"]) == float(t["step"]) == i + 1
            assert torch.equal(s["exp_avg"], t["exp_avg"])
            assert torch.equal(s["exp_avg_sq"], t["exp_avg_sq"])
        # Re-align the twin's parameters with the Hi-DLR run for the next comparison.
        with torch.no_grad():
            for p, q in zip((*a.parameters(), *b.parameters()), (*twin_a.parameters(), *twin_b.parameters())):
                q.copy_(p)


def test_step_taken_on_probe_step_uses_new_rates():
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.SGD([{"params": a.parameters(), "lr": 1e-3}, {"params": b.parameters(), "lr": 1e-3}])
    hidlr = HiDLR(opt, every=1)
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    grads = [p.grad.clone() for p in (*a.parameters(), *b.parameters())]
    est = hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
    assert est.rate[0] != 1e-3 and est.rate[1] != 1e-3
    lrs = [float(est.rate[0])] * 1 + [float(est.rate[1])] * 2
    for p, w, g, lr in zip((*a.parameters(), *b.parameters()), before, grads, lrs):
        assert torch.allclose(p.detach(), w - lr * g, rtol=0, atol=1e-7)


def test_direction_in_grads_same_trajectory_and_grads_hold_the_direction():
    """Holding d in the spent gradient buffers changes nothing but where d lives; with it off, .grad is untouched."""
    X, y = regression()
    runs = {}
    for in_grads in (True, False):
        a, b = two_linears()
        opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
        hidlr = HiDLR(opt, every=1, direction_in_grads=in_grads)
        rates = []
        for i in range(6):
            opt.zero_grad()
            mse(a, b, X[i * 8 : i * 8 + 8], y[i * 8 : i * 8 + 8]).backward()
            before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
            grads = [p.grad.clone() for p in (*a.parameters(), *b.parameters())]
            est = hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
            assert est is not None and est.status == "ok"
            if in_grads:
                # p = w - lr * d with d now in .grad (the step is taken from the snapshot, so this holds to rounding)
                lrs = [float(est.rate[0])] + [float(est.rate[1])] * 2
                for p, w, g, lr in zip((*a.parameters(), *b.parameters()), before, grads, lrs):
                    assert torch.allclose(p.detach(), w - lr * p.grad, rtol=0, atol=1e-6)
                    assert not torch.equal(p.grad, g)  # AdamW's direction is not the gradient
            else:
                for p, g in zip((*a.parameters(), *b.parameters()), grads):
                    assert torch.equal(p.grad, g)
            rates.append(est.rate.clone())
        runs[in_grads] = ([p.detach().clone() for p in (*a.parameters(), *b.parameters())], rates)
    for p, q in zip(runs[True][0], runs[False][0]):
        assert torch.equal(p, q)
    for r, s in zip(runs[True][1], runs[False][1]):
        assert torch.equal(r, s)


def _run_from(lr, steps=200, seed=0, **kwargs):
    """Rates at step 20, and the full-data loss at the end, of SGD with Hi-DLR on a noisy linear regression."""
    X, y = regression(seed, n=4096)
    a, b = two_linears()
    opt = torch.optim.SGD([{"params": a.parameters(), "lr": lr}, {"params": b.parameters(), "lr": lr}])
    hidlr = HiDLR(opt, every=1, **kwargs)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(X), (32,), generator=g)
        probe = torch.randint(0, len(X), (64,), generator=g)
        opt.zero_grad()
        mse(a, b, X[idx], y[idx]).backward()
        hidlr.step(lambda: mse(a, b, X[probe], y[probe]))
        if step == 20:
            early = list(hidlr.base_rates)
    with torch.no_grad():
        return early, float(mse(a, b, X, y))


def test_start_rate_does_not_matter_on_convex_problem():
    # Starts 1e5 apart reach the same rates within 20 steps and the same loss, at the noise floor (0.01). Horizon 8:
    # plain SGD on a quadratic keeps no momentum, and the default horizon (32, for Adam's correlated steps) would
    # reach the floor in 400 steps instead of 200.
    (low, low_loss), (high, high_loss) = _run_from(1e-7, horizon=8.0), _run_from(1e-2, horizon=8.0)
    for r_low, r_high in zip(low, high):
        assert 0.5 <= r_low / r_high <= 2.0, (low, high)
    assert low_loss < 0.0105 and high_loss < 0.0105
    # The two groups' curvatures differ by 16x, and so do their one-step optima: without a ratio limit the rates
    # differ by about 9x (the noise in b weighs more on the flat group); a limit of 1.5 around their geometric mean
    # holds them to 1.5^2 apart.
    free, _ = _run_from(1e-7, ratio_limit=0.0, horizon=8.0)
    assert free[0] / free[1] > 6
    held, _ = _run_from(1e-7, ratio_limit=1.5, horizon=8.0)
    assert held[0] / held[1] == pytest.approx(1.5**2, rel=1e-6)


def test_state_dict_round_trip_resumes_identically():
    X, y = regression()

    def run(steps, resume_at=None):
        a, b = two_linears()
        opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
        hidlr = HiDLR(opt, every="auto", calibration_rounds=3)
        for i in range(steps):
            if resume_at is not None and i == resume_at:
                saved = copy.deepcopy((a.state_dict(), b.state_dict(), opt.state_dict(), hidlr.state_dict()))
                a, b = two_linears()
                opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 5.0}, {"params": b.parameters(), "lr": 5.0}])
                hidlr = HiDLR(opt, every="auto", calibration_rounds=3)
                a.load_state_dict(saved[0])
                b.load_state_dict(saved[1])
                opt.load_state_dict(saved[2])
                hidlr.load_state_dict(saved[3])
            opt.zero_grad()
            mse(a, b, X[i * 8 % 200 : i * 8 % 200 + 8], y[i * 8 % 200 : i * 8 % 200 + 8]).backward()
            hidlr.step(lambda: mse(a, b, X[200:232], y[200:232]))
        return [p.detach().clone() for p in (*a.parameters(), *b.parameters())], hidlr.state_dict()

    straight, resumed = run(30), run(30, resume_at=13)
    for p, q in zip(straight[0], resumed[0]):
        assert torch.equal(p, q)
    for state in (straight[1], resumed[1]):
        state.pop("probe_seconds")  # wall-clock, the one thing allowed to differ
    assert straight[1] == resumed[1]
    assert [h["step"] for h in straight[1]["history"]] == [0, 1, 2, 4, 8, 16]


def test_tied_groups_share_one_rate_and_scheduler_multiplies():
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.AdamW(
        [
            {"params": [a.weight], "lr": 1e-2, "hidlr_group": "x", "weight_decay": 0.1},
            {"params": [b.weight], "lr": 1e-2, "hidlr_group": "x", "weight_decay": 0.1},
            {"params": [b.bias], "lr": 1e-2, "hidlr_group": "x", "weight_decay": 0.0},
        ]
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    with pytest.raises(HiDLRError, match="lr_scheduler"):
        HiDLR(opt)
    hidlr = HiDLR(opt, every=1, lr_scheduler=sched)
    assert hidlr.group_names == ["x"]
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    est = hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
    sched.step()
    assert est.rate.shape == (1,)
    assert sched.base_lrs == [float(est.rate[0])] * 3
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 * float(est.rate[0])] * 3)


def test_bad_arguments():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1)
    for kwargs, match in (
        ({"design": "diagonal"}, "Unknown design"),
        ({"every": 0}, "positive integer"),
        ({"every": -3}, "positive integer"),
        ({"trust_region": 0.5}, "trust_region"),
        ({"smoothing": 2.0}, "smoothing"),
        ({"lr_min": 1.0, "lr_max": 0.1}, "lr_min"),
    ):
        with pytest.raises(HiDLRError, match=match):
            HiDLR(opt, **kwargs)


def test_frozen_group_is_not_probed_and_keeps_zero_rate():
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 0.0}, {"params": b.parameters(), "lr": 1e-2}])
    hidlr = HiDLR(opt, every=1)
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    w = a.weight.detach().clone()
    est = hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
    assert est.verdict[0] == "inactive" and math.isnan(float(est.b[0]))
    assert est.rate[0] == 0.0 and torch.equal(a.weight, w)
    assert est.forward_passes == 3
