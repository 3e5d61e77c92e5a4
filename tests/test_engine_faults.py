"""The engine under faults: NaN, Inf and raising probes, interrupts, errors inside ``optimizer.step()`` and while
the direction is computed, random inputs; parameters, optimizer state (AdamW, every tensor) and RNG streams are
exactly as promised and rates stay finite and bounded (docs/METHOD.md section 4.2)."""

import copy
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_problems import assert_same_state, fault_run, mse, optimizer_state

import hidlr_hf.core.engine as engine_module
from hidlr_hf import HiDLR


def reference_step():
    """Parameters and AdamW state after the fault-free round with a trust region of 1, which measures but keeps
    every rate: what a discarded round (the step taken at unchanged rates) must leave."""
    X, y, model, opt, hidlr = fault_run(trust_region=1.0)
    hidlr.step(lambda: mse(model["a"], model["b"], X[100:132], y[100:132]))
    return [p.detach().clone() for p in model.parameters()], optimizer_state(opt)


@pytest.mark.parametrize("fault", ["nan", "inf", "raise", "nan_at_base"])
def test_faulty_closure_restores_bit_exact(fault):
    expected, expected_state = reference_step()
    X, y, model, opt, hidlr = fault_run()
    calls = []

    def closure():
        calls.append(1)
        if fault == "nan_at_base":  # the very first probe loss, at the pre-step parameters
            return torch.tensor(float("nan"))
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
    assert_same_state(optimizer_state(opt), expected_state)  # advanced exactly once, as by the plain step
    assert hidlr.probe_due  # retried at the next step


def test_keyboard_interrupt_completes_step_and_reraises():
    expected, expected_state = reference_step()
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
    assert_same_state(optimizer_state(opt), expected_state)


class _OutOfMemory(RuntimeError):
    """Stands in for ``torch.OutOfMemoryError``."""


def _fail_inside_step(opt, hidlr):
    """``opt.step`` updates the first param group's parameters and state, then raises: a step half done. The calls
    of the one-time linearity check (which steps the optimizer twice itself) go through."""
    real, calls, skip = opt.step, [], 0 if hidlr.linearity_checked else 2

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) <= skip:
            return real()
        groups = opt.param_groups
        opt.param_groups = groups[:1]
        try:
            real()
        finally:
            opt.param_groups = groups
        raise _OutOfMemory("CUDA out of memory (injected)")

    opt.step = step
    return real


def _fail_in_direction(monkeypatch):
    """The direction of the second tensor cannot be computed (after optimizer.step() completed)."""
    real, calls = engine_module.displacement, []

    def displacement(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise _OutOfMemory("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "displacement", displacement)


@pytest.mark.parametrize("stage", ["optimizer_step", "direction"])
@pytest.mark.parametrize("warm", [False, True])
def test_failed_step_restores_parameters_state_and_rates(monkeypatch, stage, warm):
    """With restore_optimizer_state, an error inside optimizer.step() or while the direction is computed leaves
    parameters, every AdamW state tensor (step counts too), learning rates and the engine's state as before the step,
    and the step can be retried: the retried run equals one that never failed."""

    def setup():
        X, y, model, opt, _ = fault_run()
        hidlr = HiDLR(opt, every=1, model=model, restore_optimizer_state=True)
        if warm:  # a round with AdamW state already there (the first step starts from none)
            hidlr.step(lambda: mse(model["a"], model["b"], X[100:132], y[100:132]))
            opt.zero_grad()
            mse(model["a"], model["b"], X[8:16], y[8:16]).backward()
        return X, y, model, opt, hidlr

    def closure_of(X, y, model):
        return lambda: mse(model["a"], model["b"], X[100:132], y[100:132])

    X, y, model, opt, hidlr = setup()
    hidlr.step(closure_of(X, y, model))
    want_params, want_state = [p.detach().clone() for p in model.parameters()], optimizer_state(opt)

    X, y, model, opt, hidlr = setup()
    params, state = [p.detach().clone() for p in model.parameters()], optimizer_state(opt)
    lrs, engine_state = [g["lr"] for g in opt.param_groups], hidlr.state_dict()
    grads = [p.grad.clone() for p in model.parameters()]
    if stage == "optimizer_step":
        real_step = _fail_inside_step(opt, hidlr)
    else:
        _fail_in_direction(monkeypatch)
    with pytest.raises(_OutOfMemory):
        hidlr.step(closure_of(X, y, model))
    for p, w in zip(model.parameters(), params):
        assert torch.equal(p, w)
    assert_same_state(optimizer_state(opt), state)
    assert [g["lr"] for g in opt.param_groups] == lrs
    after = hidlr.state_dict()
    assert after.pop("probe_seconds") == engine_state.pop("probe_seconds")
    # The one-time linearity check, passed before the failure, stays passed: it restored all it touched.
    assert after.pop("linearity_checked") and engine_state.pop("linearity_checked") == warm
    assert after == engine_state

    # Retry the step (the gradient again, as a training loop would after the error).
    if stage == "optimizer_step":
        opt.step = real_step
    else:
        monkeypatch.undo()
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    hidlr.step(closure_of(X, y, model))
    for p, w in zip(model.parameters(), want_params):
        assert torch.equal(p, w)
    assert_same_state(optimizer_state(opt), want_state)


@pytest.mark.parametrize("stage", ["optimizer_step", "direction"])
def test_failed_step_without_state_copy_leaves_what_the_docs_say(monkeypatch, stage):
    """The default keeps no copy of the optimizer state: parameters, learning rates and rates are restored, and the
    state is what optimizer.step() left (the first group's half-done step, or the whole step)."""
    X, y, model, opt, hidlr = fault_run()
    params, lrs, rates = [p.detach().clone() for p in model.parameters()], [g["lr"] for g in opt.param_groups], list(hidlr.base_rates)
    if stage == "optimizer_step":
        _fail_inside_step(opt, hidlr)
    else:
        _fail_in_direction(monkeypatch)
    with pytest.raises(_OutOfMemory):
        hidlr.step(lambda: mse(model["a"], model["b"], X[100:132], y[100:132]))
    for p, w in zip(model.parameters(), params):
        assert torch.equal(p, w)
    assert [g["lr"] for g in opt.param_groups] == lrs and hidlr.base_rates == rates
    first_group = {p for p in opt.param_groups[0]["params"]}
    stepped = [p in opt.state and bool(opt.state[p]) for g in opt.param_groups for p in g["params"]]
    assert stepped == [stage == "direction" or p in first_group for g in opt.param_groups for p in g["params"]]


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


def _adamw_problem(sizes, lr):
    """One AdamW group per size, a step already taken (so there is state to keep), and fresh gradients."""
    g = torch.Generator().manual_seed(sum(sizes))
    params = [torch.nn.Parameter(torch.randn(n, generator=g)) for n in sizes]
    opt = torch.optim.AdamW([{"params": [p], "lr": lr} for p in params])
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        if not opt.state:
            opt.step()
    return params, opt


def _unit_step(params, opt):
    """The direction ``d`` a unit-rate step of a copy of ``opt`` reveals, and the state that step leaves."""
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ref = torch.optim.AdamW([{"params": [q]} for q in copies])
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict alone would share the tensors
    for group in ref.param_groups:
        group["lr"] = 1.0
    for q, p in zip(copies, params):
        q.grad = p.grad.clone()
    ref.step()
    return [p.detach() - q.detach() for p, q in zip(params, copies)], optimizer_state(ref)


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
    """Random group sizes, curvatures of any sign, uphill steps, tiny losses, NaN/Inf/raising probes; AdamW with
    state, which advances exactly once whatever the round does."""
    params, opt = _adamw_problem(sizes, lr)
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
    direction, state = _unit_step(params, opt)
    rates_before = list(hidlr.base_rates)
    est = hidlr.step(closure)
    rates = hidlr.base_rates
    assert all(math.isfinite(r) and 1e-8 <= r <= 1.0 for r in rates), rates
    if est.status != "ok":
        assert rates == rates_before
    # The step taken is exactly w - lr_new * d, with d what a unit-rate AdamW step reveals, and the state is that
    # of one AdamW step.
    for p, w, d, r in zip(params, before, direction, rates):
        assert torch.equal(p.detach(), torch.add(w, d, alpha=-r))
    assert_same_state(optimizer_state(opt), state)


def test_tiny_losses_keep_rates_finite():
    params, opt = _adamw_problem([3, 3], 1e-3)
    hidlr = HiDLR(opt, every=1)
    for _ in range(5):
        for p in params:
            p.grad = torch.ones_like(p)
        hidlr.step(lambda: 1e-12 * sum((p.double() ** 2).sum() for p in params))
    assert all(math.isfinite(r) and r > 0 for r in hidlr.base_rates)
