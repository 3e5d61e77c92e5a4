"""The rate control's mechanisms on small problems whose right answer is known (docs/METHOD.md section 5).

- A quadratic started 1e4 below its target reaches it within 3 rounds (probe-scale growth, verified jumps).
- A pretrained body with a fresh head, started at a destructive rate: the body stays put while the head trains alone,
  then its rate is cut in the first calibration rounds, and the features survive where plain Adam ruins them.
- An MLP trained from scratch with Adam, started anywhere in a 1e5-wide range of rates: Hi-DLR ends no worse than
  Adam at that starting rate and never diverges.
- Started near a maximum, where the curvature along every step is negative, the saddle-free rule raises a rate 300x
  too small and reaches the minimum; without it, the rate never moves.
- The head phase holds the body still at rate 0 while AdamW's moments warm up (gradients dropped for other optimizers).
"""

import math

import pytest
import torch

from hidlr_hf import HiDLR
from hidlr_hf.core import defaults


def test_quadratic_far_below_reaches_the_target_within_three_rounds():
    # SGD on 1/2 sum h w^2 with h = 1 and 25 per group: the one-step optimum of a pure-curvature group is 1 / h, so
    # the rule's target is 1 / (horizon h) exactly.
    gen = torch.Generator().manual_seed(0)
    curvature = [1.0, 25.0]
    w = [torch.nn.Parameter(torch.randn(10, generator=gen, dtype=torch.float64)) for _ in curvature]

    def loss():
        return sum(0.5 * h * (p * p).sum() for h, p in zip(curvature, w))

    target = [1.0 / (defaults.HORIZON * h) for h in curvature]
    start = target[0] * 1e-4
    opt = torch.optim.SGD([{"params": [p], "lr": start} for p in w])
    hidlr = HiDLR(opt, every=1, ratio_limit=0.0)
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        hidlr.step(loss)
    assert hidlr.base_rates == pytest.approx(target, rel=1e-6)
    assert hidlr.last_estimate.verified is None  # arrived: no jump proposed any more
    assert hidlr.history[0]["verified"] is True  # the first round jumped, confirmed by one extra forward pass


@pytest.mark.parametrize("saddle_free", [True, False])
def test_negative_curvature_near_a_maximum_raises_the_rate(saddle_free):
    # sum(1 - cos w) from w = 3 (near the maximum at pi): the curvature cos(w) along the step is negative. With it at
    # its magnitude the target is about 1 / (horizon |cos w|) = 0.03, 300x the start; w escapes and reaches 0.
    w = torch.nn.Parameter(torch.full((10,), 3.0, dtype=torch.float64))

    def loss():
        return (1.0 - torch.cos(w)).sum()

    opt = torch.optim.SGD([w], lr=1e-4)
    hidlr = HiDLR(opt, every=1, saddle_free=saddle_free)
    start = loss().item()
    for _ in range(300):
        opt.zero_grad()
        loss().backward()
        hidlr.step(loss)
    if saddle_free:
        assert loss().item() < 1e-3 * start
        # About 1 / (h cos 0) at the minimum; the last steady rounds hold it once the slope there, shrinking towards
        # zero, is within its own spread across rounds (the noise hold).
        assert hidlr.base_rates[0] == pytest.approx(1.0 / defaults.HORIZON, rel=0.2)
    else:
        assert hidlr.base_rates == [1e-4] and loss().item() > start - 0.01  # 300 steps of 1.4e-5 each
        assert hidlr.last_estimate.verdict == ["no_curvature"]


def _classification(n=4096, d=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen)
    V = torch.randn(d, 16, generator=gen) / math.sqrt(d)
    y = (torch.tanh(X @ V) @ torch.randn(16, generator=gen) > 0).long()
    return X[:3072], y[:3072], X[3072:], y[3072:]


def _body():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh())


@pytest.fixture(scope="module")
def pretrained():
    """A body trained on the task with a throwaway head (93.5% test accuracy), and the data."""
    X, y, Xt, yt = _classification()
    body, head = _body(), torch.nn.Linear(64, 2)
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], 1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(600):
        idx = torch.randint(0, len(X), (32,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(body(X[idx])), y[idx]).backward()
        opt.step()
    return {k: v.clone() for k, v in body.state_dict().items()}, (X, y, Xt, yt)


def _train(model, opt, engine, X, y, loss, steps, gen):
    """``steps`` steps on random batches of 32 rows, each with its own probe batch; plain ``opt.step()`` when
    ``engine`` is None, else Hi-DLR's step."""
    for _ in range(steps):
        idx, probe = torch.randint(0, len(X), (32,), generator=gen), torch.randint(0, len(X), (32,), generator=gen)
        opt.zero_grad()
        loss(model(X[idx]), y[idx]).backward()
        if engine is None:
            opt.step()
        else:
            engine.step(lambda: loss(model(X[probe]), y[probe]))


def _finetune(pretrained, lr, hidlr, steps=300):
    state, (X, y, Xt, yt) = pretrained
    body = _body()
    body.load_state_dict(state)
    torch.manual_seed(5)
    model = torch.nn.Sequential(body, torch.nn.Linear(64, 2))  # a fresh head
    opt = torch.optim.Adam([{"params": list(body.parameters()), "lr": lr, "hidlr_group": "body"},
                            {"params": list(model[1].parameters()), "lr": lr, "hidlr_group": "head"}])
    engine = HiDLR(opt, model=model, head_groups=["head"], total_steps=steps) if hidlr else None
    _train(model, opt, engine, X, y, torch.nn.functional.cross_entropy, steps, torch.Generator().manual_seed(2))
    with torch.no_grad():
        accuracy = float((model(Xt).argmax(1) == yt).float().mean())
    return accuracy, engine


def test_fresh_head_at_a_destructive_rate_cuts_the_body_rate_and_keeps_the_features(pretrained, one_thread):
    lr = 0.3
    adam, _ = _finetune(pretrained, lr, hidlr=False)
    accuracy, engine = _finetune(pretrained, lr, hidlr=True)
    history = engine.history
    head_rounds = [h for h in history if h["phase"] == "head"]
    calibration = [h for h in history if h["phase"] == "calibration"]
    assert head_rounds and all(h["rates"][0] == lr for h in head_rounds)  # the body waits while the head trains
    body_rates = [h["rates"][0] for h in calibration[:3]]
    assert body_rates[0] < lr and body_rates[2] < lr / 20  # cut in the first calibration rounds
    assert adam < 0.85  # plain Adam at this rate ruins the pretrained features ...
    assert accuracy > 0.92  # ... Hi-DLR keeps them (the body alone reached 0.935 before the head was replaced)


@pytest.fixture
def one_thread():
    """Small models run fastest on one thread (and do not fight other processes for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp_problem(seed):
    """A small regression (a random tanh network plus noise), 3,072 training and 1,024 test rows."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(4096, 20, generator=gen)
    W1, W2 = torch.randn(20, 32, generator=gen) / math.sqrt(20), torch.randn(32, 1, generator=gen) / math.sqrt(32)
    y = torch.tanh(X @ W1) @ W2 + 0.1 * torch.randn(4096, 1, generator=gen)
    return X[:3072], y[:3072], X[3072:], y[3072:]


def _mlp(lr, beta1=0.9):
    """A 3-layer ReLU MLP (seeded) and Adam at ``lr`` with one group per layer."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(20, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 1)]
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    opt = torch.optim.Adam([{"params": list(m.parameters()), "lr": lr, "hidlr_group": f"layer{i}"}
                            for i, m in enumerate(layers)], betas=(beta1, 0.999))
    return model, opt


def _mlp_test_loss(problem, lr, beta1, hidlr, steps=600):
    """Test MSE of a 3-layer MLP trained from scratch with Adam at ``lr`` (one group per layer), with or without
    Hi-DLR, on the same batches and probe batches."""
    X, y, Xt, yt = problem
    model, opt = _mlp(lr, beta1)
    engine = HiDLR(opt, model=model, total_steps=steps) if hidlr else None
    _train(model, opt, engine, X, y, torch.nn.functional.mse_loss, steps, torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(Xt), yt))


def _ratios(lr, beta1, seeds=range(5)):
    """Hi-DLR's test loss over plain Adam's, both started at ``lr``, for each data seed."""
    ratios = []
    for seed in seeds:
        problem = _mlp_problem(seed)
        hidlr = _mlp_test_loss(problem, lr, beta1, hidlr=True)
        assert math.isfinite(hidlr), (lr, seed)
        ratios.append(hidlr / _mlp_test_loss(problem, lr, beta1, hidlr=False))
    return ratios


@pytest.mark.parametrize("beta1", [0.9, 0.0])
def test_mlp_from_scratch_any_start_up_to_0_1_no_worse_than_adam(beta1, one_thread):
    # Five data seeds, because one seed's ratio is trajectory noise: at Adam's best rate here (1e-2) it ranged 0.78 ..
    # 1.09 (beta1 0.9) and 0.82 .. 1.17 (beta1 0) over these seeds, with the rule of 2026-12-06 and before it alike.
    for lr in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        ratios = _ratios(lr, beta1)
        assert sum(ratios) / len(ratios) <= 1.0 and max(ratios) <= 1.2, (lr, ratios)


@pytest.mark.parametrize("beta1", [0.9, 0.0])
def test_mlp_from_scratch_started_at_1_no_worse_than_adam(beta1, one_thread):
    # Until moves down stood without confirmation (see the next test), data seeds 3 and 4 ended 2.5x and 4.3x above
    # Adam's test loss from this start (beta1 0.9; 1.3x on seed 3 with beta1 0).
    ratios = _ratios(1.0, beta1)
    assert max(ratios) <= 1.2, ratios


def test_a_failed_verification_keeps_the_moves_down(one_thread):
    """Started at 1.0, the first round proposes rates 100x lower for two layers and 23x lower for the third (uphill,
    held by the ratio limit). The proposal fails its verification (the uphill layer's predicted change is a rise), and
    the moves down stand anyway: clipped to the trust region (0.5), the next step raised the loss from 0.75 to 1.4e5."""
    X, y, _, _ = _mlp_problem(3)
    model, opt = _mlp(1.0)
    engine = HiDLR(opt, model=model, total_steps=600)
    gen, estimates = torch.Generator().manual_seed(1), []
    for _ in range(2):
        _train(model, opt, engine, X, y, torch.nn.functional.mse_loss, 1, gen)
        estimates.append(engine.last_estimate)
    first, second = estimates
    assert first.verified is False and first.verdict == ["accepted", "uphill", "accepted"]
    assert float(first.rate.max()) < 0.05  # every layer far below the trust region's 0.5
    assert second.loss < 2 * first.loss  # the next round's base point: the model was not wrecked


@pytest.mark.parametrize("optimizer", ["adamw", "adagrad"])
def test_head_phase_holds_the_body_still_and_warms_its_adam_state(optimizer):
    # The body steps at rate 0 during the head phase: its parameters stay bit for bit, AdamW's moments take in the
    # head phase's gradients, and its rate is back after every step. An optimizer outside torch's Adam family and
    # SGD (Adagrad here) has the body's gradients dropped instead: its state does not move either.
    torch.manual_seed(0)
    body, head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)
    model = torch.nn.Sequential(body, torch.nn.Tanh(), head)
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adagrad
    opt = cls([{"params": list(body.parameters()), "lr": 0.05, "hidlr_group": "body"},
               {"params": list(head.parameters()), "lr": 0.05, "hidlr_group": "head"}])
    engine = HiDLR(opt, model=model, head_groups=["head"], head_phase=3, every=1)
    X, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 2
    start = [p.detach().clone() for p in body.parameters()]
    head_start = [p.detach().clone() for p in head.parameters()]

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[:16]), y[:16]).backward()
        engine.step(lambda: torch.nn.functional.cross_entropy(model(X[16:48]), y[16:48]))

    for _ in range(3):
        step()
        assert opt.param_groups[0]["lr"] == 0.05  # the body's rate is back after the step
        assert all(torch.equal(p, w) for p, w in zip(body.parameters(), start))
    assert not all(torch.equal(p, w) for p, w in zip(head.parameters(), head_start))
    state = opt.state[body.weight]
    if optimizer == "adamw":
        assert float(state["step"]) == 3 and float(state["exp_avg"].abs().sum()) > 0
    else:
        assert float(state["step"]) == 0 and float(state["sum"].abs().sum()) == 0
    step()  # the head phase is over: the body moves
    assert not all(torch.equal(p, w) for p, w in zip(body.parameters(), start))
