"""The engine under faults: NaN, Inf and raising probes, interrupts, random inputs; parameters and RNG streams
are restored exactly and rates stay finite and bounded (docs/METHOD.md section 4.2)."""

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_problems import fault_run, mse

from hidlr_hf import HiDLR


@pytest.mark.parametrize("fault", ["nan", "inf", "raise"])
def test_faulty_closure_restores_bit_exact(fault):
    # Reference: the same round with a trust region of 1, which measures but keeps every rate.
    X, y, model, opt, hidlr = fault_run(trust_region=1.0)
    hidlr.step(lambda: mse(model["a"], model["b"], X[100:132], y[100:132]))
    expected = [p.detach().clone() for p in model.parameters()]

    X, y, model, opt, hidlr = fault_run()
    calls = []

    def closure():
        calls.append(1)
        if len(calls) < 3:
            return mse(model["a"], model["b"], X[100:132], y[100:132])
        if fault == "raise":
            raise RuntimeError("probe batch failed")
        return torch.tensor(float("nan") if fault == "nan" else float("inf"))

    rates_before = list(hidlr.base_rates)
    est = hidlr.step(closure)
    assert est.status.startswith("discarded")
    assert hidlr.base_rates == rates_before
    assert hidlr.discarded_rounds == 1
    for p, q in zip(model.parameters(), expected):
        assert torch.equal(p, q)
    assert hidlr.probe_due  # retried at the next step


def test_keyboard_interrupt_completes_step_and_reraises():
    X, y, model, opt, hidlr = fault_run(trust_region=1.0)
    hidlr.step(lambda: mse(model["a"], model["b"], X[100:132], y[100:132]))
    expected = [p.detach().clone() for p in model.parameters()]
    X, y, model, opt, hidlr = fault_run()
    rates = list(hidlr.base_rates)

    def closure():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hidlr.step(closure)
    assert hidlr.base_rates == rates
    assert [g["lr"] for g in opt.param_groups] == rates
    for p, q in zip(model.parameters(), expected):
        assert torch.equal(p, q)


def test_rng_streams_and_model_mode_untouched():
    X, y, model, opt, hidlr = fault_run()
    model.train()
    model["b"].eval()  # a mixed state must come back as it was
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)

    def closure():
        assert not model.training and not model["a"].training
        torch.rand(100), random.random(), np.random.rand()  # a closure that consumes randomness
        return mse(model["a"], model["b"], X[100:132], y[100:132])

    assert hidlr.step(closure).status == "ok"
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0])  # torch's stream, as if the probes never ran
    assert after[1:] == expected[1:]  # Python's and NumPy's
    assert model.training and model["a"].training and not model["b"].training


def test_rng_stream_untouched_torch():
    X, y, model, opt, hidlr = fault_run()
    torch.manual_seed(9)
    reference = torch.rand(4)
    torch.manual_seed(9)
    hidlr.step(lambda: (torch.randn(50), mse(model["a"], model["b"], X[100:132], y[100:132]))[1])
    assert torch.equal(torch.rand(4), reference)


def _sgd_problem(sizes, lr):
    g = torch.Generator().manual_seed(sum(sizes))
    params = [torch.nn.Parameter(torch.randn(n, generator=g)) for n in sizes]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p in params])
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    return params, opt


LOSS_KINDS = st.sampled_from(["quadratic", "negative", "flat", "uphill", "tiny", "nan", "inf", "raise"])


LOSS_KINDS = st.sampled_from(["quadratic", "negative", "flat", "uphill", "tiny", "nan", "inf", "raise"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    kinds=st.lists(LOSS_KINDS, min_size=1, max_size=5),
    lr=st.floats(1e-7, 1e-1),
    design=st.sampled_from(["axis", "full", "random"]),
    fault_at=st.integers(0, 12),
)
def test_fuzz_rates_finite_bounded_and_parameters_exact(sizes, kinds, lr, design, fault_at):
    """Random group sizes, curvatures of any sign, uphill steps, tiny losses, NaN/Inf/raising probes."""
    params, opt = _sgd_problem(sizes, lr)
    hidlr = HiDLR(opt, design=design, every=1, lr_min=1e-8, lr_max=1.0)
    kind = {k: kinds[k % len(kinds)] for k in range(len(sizes))}
    calls = []

    def closure():
        calls.append(1)
        total = torch.zeros((), dtype=torch.float64)
        for k, p in enumerate(params):
            x = p.double().sum()
            if kind[k] == "quadratic":
                total = total + 0.5 * x**2
            elif kind[k] == "negative":
                total = total - 0.5 * x**2
            elif kind[k] == "uphill":
                total = total - x
            elif kind[k] == "tiny":
                total = total + 1e-30 * x**2
            # "flat" adds nothing: no slope, no curvature
        if len(calls) == fault_at + 1:
            fault = kind[0]
            if fault == "nan":
                return torch.tensor(float("nan"))
            if fault == "inf":
                return torch.tensor(float("inf"))
            if fault == "raise":
                raise RuntimeError("probe failed")
        return total

    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    rates_before = list(hidlr.base_rates)
    est = hidlr.step(closure)
    rates = hidlr.base_rates
    assert all(math.isfinite(r) and 1e-8 <= r <= 1.0 for r in rates), rates
    if est.status != "ok":
        assert rates == rates_before
    # The step taken is exactly w - lr_new * d, with d what a unit-rate SGD step reveals.
    for p, w, g, r in zip(params, before, grads, rates):
        d = w - (w - 1.0 * g)
        assert torch.equal(p.detach(), torch.add(w, d, alpha=-r))


def test_tiny_losses_keep_rates_finite():
    params, opt = _sgd_problem([3, 3], 1e-3)
    hidlr = HiDLR(opt, every=1)
    for _ in range(5):
        for p in params:
            p.grad = torch.ones_like(p)
        hidlr.step(lambda: 1e-12 * sum((p.double() ** 2).sum() for p in params))
    assert all(math.isfinite(r) and r > 0 for r in hidlr.base_rates)
