"""The rate rule (hidlr_hf/core/rates.py; docs/METHOD.md section 5): smoothed statistics, horizon, ratio limit,
phases, and its state."""

import math

import pytest
import torch

from hidlr_hf.core.rates import (
    ACCEPTED, CALIBRATION, HEAD, HEAD_PROBE_GAP, HEAD_ROUNDS, NO_CURVATURE, STEADY, UPHILL, RateControl, RateSettings,
)
from hidlr_hf.errors import HiDLRError


def fit(b, A, rates):
    """A round's fit in multiplier units for absolute slopes ``b`` and curvatures ``A`` measured at ``rates``."""
    r = torch.tensor(rates, dtype=torch.float64)
    beta = torch.tensor(b, dtype=torch.float64) * r
    alpha = torch.diag(torch.tensor(A, dtype=torch.float64) * r * r)
    return beta, alpha


def control(num_groups=2, head=(), total_steps=None, **settings):
    settings.setdefault("ratio_limit", 0.0)
    settings.setdefault("head_phase", 0.0)
    settings.setdefault("noise_hold", 0.0)  # the other mechanisms' tests act on every steady round
    return RateControl(num_groups, list(head), RateSettings(**settings), total_steps)


def propose(ctrl, b, A, rates, grown=None):
    beta, alpha = fit(b, A, rates)
    K = len(rates)
    return ctrl.propose(beta, alpha, rates, list(range(K)), grown or [False] * K)


def test_target_is_one_step_optimum_over_horizon():
    ctrl = control(horizon=8.0)
    p = propose(ctrl, [2.0, 3.0], [4.0, 1.0], [0.01, 0.01])
    # b / (h A) = 0.0625 and 0.375: 6.25x and 37.5x the rate; calibration may only jump when the probe scale grew,
    # so both are held to the trust region here, and the round reports its own one-step optimum b / A.
    assert p.factors == [2.0, 2.0]
    assert torch.allclose(p.optimal, torch.tensor([0.5, 3.0], dtype=torch.float64) / 0.01)
    assert p.verdict == [ACCEPTED, ACCEPTED] and p.jump is False
    p = propose(ctrl, [2.0, 3.0], [4.0, 1.0], [0.01, 0.01], grown=[True, True])
    assert p.factors == pytest.approx([6.25 * 2 / 2, 37.5])  # running means unchanged, so the same targets
    assert p.jump is True


def test_rate_comes_from_ratio_of_means_not_mean_of_ratios():
    ctrl = control(horizon=1.0, smoothing=0.5, calibration_rounds=0)
    ctrl.phase = STEADY
    rates = [1.0]
    propose(ctrl, [1.0], [1.0], rates)
    # A small, noisy step: its own optimum is 10, but the mean of b over the mean of A is (1 + 1) / (1 + 0.1) -> ~1.8.
    p = propose(ctrl, [1.0], [0.1], rates)
    assert ctrl.b_mean[0] == pytest.approx(1.0) and ctrl.A_mean[0] == pytest.approx((0.5 * 1.0 + 0.1) / 1.5)
    assert float(p.optimal[0]) == pytest.approx(10.0)
    assert p.factors[0] == pytest.approx(2.0)  # 1 / 0.4 = 2.5 toward the target, held to the trust region 2


def test_noisy_rounds_keep_the_rate_near_the_target_of_the_means():
    # b ~ N(1, 2^2): a third of the rounds go uphill. Multiplying the rate by each round's verdict (the old rule)
    # is a random walk; the ratio of running means stays near b / A = 1.
    ctrl = control(horizon=1.0, smoothing=0.05, trust_region=2.0)
    ctrl.phase = STEADY
    gen = torch.Generator().manual_seed(0)
    rate, path, uphill = 1.0, [], 0
    for _ in range(300):
        b = 1.0 + 2.0 * float(torch.randn((), generator=gen))
        p = propose(ctrl, [b], [1.0], [rate])
        uphill += p.verdict[0] == UPHILL
        rate *= p.factors[0]
        path.append(rate)
    late = sorted(path[100:])
    assert uphill > 60
    assert 0.7 < late[len(late) // 2] < 1.4  # median
    assert 0.2 < late[0] and late[-1] < 5.0


def test_steady_rounds_hold_a_rate_whose_mean_slope_is_lost_in_noise():
    # b alternates +1 / -0.8 (mean 0.1, standard error about 0.3): acted on, the mean slope's target b / A = 0.1 cuts
    # the rate tenfold, though the rounds say nothing about it; held, the rate stays. A clear slope still moves it.
    def run(hold, slopes):
        ctrl = control(horizon=1.0, smoothing=0.1, trust_region=2.0, noise_hold=hold)
        ctrl.phase = STEADY
        rate = 1.0
        for b in slopes:
            rate *= propose(ctrl, [b], [1.0], [rate]).factors[0]
        return rate, ctrl

    noisy = [1.0, -0.8] * 10
    held, ctrl = run(1.0, noisy)
    assert held == 1.0 and abs(ctrl.b_mean[0]) <= ctrl.b_std_error(0)
    cut, _ = run(0.0, noisy)
    assert cut < 0.2
    clear, _ = run(1.0, [4.0, 4.2, 3.8] * 4)  # b / A = 4: up by the trust factor once two rounds are in
    assert clear == pytest.approx(4.0, rel=0.1)
    with pytest.raises(HiDLRError, match="noise_hold must be >= 0"):
        RateSettings(noise_hold=-1.0)


def test_clearly_uphill_on_average_shrinks_by_the_trust_region():
    ctrl = control(horizon=1.0, smoothing=0.5, trust_region=2.0)
    ctrl.phase = STEADY
    for b in (-1.0, -1.1, -0.9, -1.0):
        p = propose(ctrl, [b], [1.0], [1.0])
    assert ctrl.b_mean[0] < -ctrl.b_std_error(0)
    assert p.factors[0] == pytest.approx(0.5)


def test_without_saddle_free_negative_curvature_adds_nothing_and_keeps_the_rate():
    ctrl = control(saddle_free=False)
    p = propose(ctrl, [1.0, 1.0], [-1.0, 1.0], [0.1, 0.1])
    assert p.verdict == [NO_CURVATURE, ACCEPTED]
    assert p.factors[0] == 1.0 and ctrl.weight[0] == 0.0 and math.isnan(ctrl.b_mean[0])
    assert float(p.alpha[0, 0]) < 0  # the engine verifies jumps with the curvature the rule used


@pytest.mark.parametrize("rate, factor", [(1e-3, 0.1), (1e-6, 100.0)])
def test_saddle_free_negative_curvature_counts_at_its_magnitude(rate, factor):
    # b = 1, A = -10: the target is b / (h |A|) = 1 / (10 h), whether the rate is far above it or far below it.
    ctrl = control(horizon=1000.0)
    target = 1.0 / (10.0 * 1000.0)
    p = propose(ctrl, [1.0], [-10.0], [rate], grown=[True])
    assert p.verdict == [ACCEPTED]
    assert ctrl.A_mean[0] == pytest.approx(10.0) and ctrl.b_mean[0] == pytest.approx(1.0)
    assert p.factors[0] == pytest.approx(target / rate) == pytest.approx(factor)
    assert float(p.alpha[0, 0]) == pytest.approx(10.0 * rate**2) and p.jump is True
    # Exactly zero curvature still says nothing.
    p = propose(control(num_groups=1), [1.0], [0.0], [rate])
    assert p.verdict == [NO_CURVATURE] and p.factors == [1.0]


def test_ratio_limit_holds_a_runaway_group_near_the_others():
    # Group 0's one-step optimum is 1000x the others' (a sparse embedding's): it is held to ratio_limit times the
    # geometric mean of the three targets, which it moves by only its third of the logs.
    ctrl = control(num_groups=3, horizon=1.0, ratio_limit=4.0)
    p = propose(ctrl, [1.0, 1.0, 1.0], [0.001, 1.0, 1.0], [1.0, 1.0, 1.0], grown=[True] * 3)
    mean = 1000.0 ** (1 / 3)  # 10
    assert p.factors == pytest.approx([4 * mean, mean / 4, mean / 4])  # the others are lifted to M / 4
    off = control(num_groups=3, horizon=1.0, ratio_limit=0.0)
    p_off = propose(off, [1.0, 1.0, 1.0], [0.001, 1.0, 1.0], [1.0, 1.0, 1.0], grown=[True] * 3)
    assert p_off.factors[0] == pytest.approx(100.0)  # the jump limit; 1000x wanted
    # Within the limit, the curvature alone sets the ratios.
    within = control(num_groups=3, horizon=1.0, ratio_limit=4.0)
    p_within = propose(within, [1.0, 1.0, 1.0], [0.25, 1.0, 1.0], [1.0, 1.0, 1.0], grown=[True] * 3)
    assert p_within.factors == pytest.approx([4.0, 1.0, 1.0])


def test_ratio_limit_leaves_the_head_out():
    # Group 3 is the new task head, its target 100x the body's. Counted in the mean it would lift the limit and let
    # group 0 (sparse, 1000x target) go further; left out, group 0 is held to 4x the body's mean and the head keeps
    # its own target.
    ctrl = control(num_groups=4, head=[3], horizon=1.0, body_horizon=1.0, ratio_limit=4.0)
    ctrl.phase = CALIBRATION
    p = propose(ctrl, [1.0, 1.0, 1.0, 100.0], [0.001, 1.0, 1.0, 1.0], [1.0] * 4, grown=[True] * 4)
    mean = 1000.0 ** (1 / 3)
    assert p.factors == pytest.approx([4 * mean, mean / 4, mean / 4, 100.0])
    counted = control(num_groups=4, head=[], horizon=1.0, ratio_limit=4.0)
    p_counted = propose(counted, [1.0, 1.0, 1.0, 100.0], [0.001, 1.0, 1.0, 1.0], [1.0] * 4, grown=[True] * 4)
    assert p_counted.factors[0] == pytest.approx(4 * (1000.0 * 100.0) ** (1 / 4))


def test_the_body_under_a_task_head_takes_the_body_horizon():
    # The same b / A = 1 in each group: the head's target is 1 / horizon, the pretrained body's 1 / body_horizon; a
    # model without head groups has no pretrained body to protect and takes horizon everywhere.
    with_head = control(num_groups=2, head=[1], horizon=4.0, body_horizon=64.0)
    p = propose(with_head, [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], grown=[True, True])
    assert p.factors == pytest.approx([1 / 64.0, 1 / 4.0])
    without = control(num_groups=2, horizon=4.0, body_horizon=64.0)
    p = propose(without, [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], grown=[True, True])
    assert p.factors == pytest.approx([1 / 4.0, 1 / 4.0])
    with pytest.raises(HiDLRError, match="body_horizon must be >= 1"):
        RateSettings(body_horizon=0.5)


def test_ratio_limit_weight_does_not_grow_with_a_groups_own_rate():
    # Group 0 already runs at 10x the others' rate and wants 1e4 (1000x its rate); group 1 is 16x stiffer than group 2.
    # Every group counts once whatever its rate or curvature: weighted by the curvature of its step (A r^2), group 0
    # would outweigh the others 100x and carry the limit with it; weighted by A, group 1 would set the mean alone.
    ctrl = control(num_groups=3, horizon=1.0, ratio_limit=4.0)
    ctrl.phase = CALIBRATION
    p = propose(ctrl, [1e4, 16.0, 1.0], [1.0, 16.0, 1.0], [10.0, 1.0, 1.0], grown=[True] * 3)
    mean = 1e4 ** (1 / 3)  # targets 1e4, 1, 1
    assert p.factors == pytest.approx([4 * mean / 10.0, mean / 4, mean / 4])


def test_steady_moves_within_the_trust_region_and_bounds_hold():
    ctrl = control(horizon=1.0, trust_region=1.5, lr_max=0.3)
    ctrl.phase = STEADY
    p = propose(ctrl, [100.0], [1.0], [0.1], grown=[True])
    assert p.factors[0] == pytest.approx(1.5)  # no jumps after calibration
    assert ctrl.bounded([5.0], [0.1]) == pytest.approx([3.0])  # lr_max
    assert ctrl.unconfirmed([10.0, 1.2, 0.01]) == [1.5, 1.2, 0.01]  # an unconfirmed jump: up clipped, down kept


def test_calibration_ends_when_settled_or_after_its_rounds():
    ctrl = control(horizon=1.0, calibration_rounds=6)
    for _ in range(2):
        propose(ctrl, [1.0], [1.0], [1.0])  # target equals the rate: settled
        ctrl.after_round([0], [1.0])
    assert ctrl.phase == STEADY and ctrl.calibration_rounds == 2
    ctrl = control(horizon=1.0, calibration_rounds=3)
    rate = 1e-3
    for _ in range(3):
        propose(ctrl, [1.0], [1.0], [rate])  # 1000x off: never settled
        ctrl.after_round([0], [1.0])
    assert ctrl.phase == STEADY and ctrl.calibration_rounds == 3


def test_a_jump_restarts_the_means_only_where_the_probe_scale_grew():
    """Group 0's step was lost in rounding noise (its probe scale grew): its means restart after its jump. Group 1 was
    measured properly and moved as far: its means are valid in absolute units and carry on, so the next target rests
    on both rounds, not on the newest probe batch alone."""
    ctrl = control(num_groups=2, horizon=1.0, smoothing=0.5)
    p = propose(ctrl, [1.0, 1.0], [1.0, 1.0], [1e-3, 1e-3], grown=[True, False])
    assert ctrl.phase == CALIBRATION and p.factors[0] == pytest.approx(100.0)  # target 1, a 1000x jump held to 100
    ctrl.after_round([0, 1], [10.0, 10.0], grown=[True, False])
    assert math.isnan(ctrl.b_mean[0]) and ctrl.weight[0] == 0.0
    assert ctrl.b_mean[1] == pytest.approx(1.0) and ctrl.weight[1] == 1.0
    propose(ctrl, [3.0, 3.0], [1.0, 1.0], [1e-2, 1e-2])
    assert ctrl.b_mean[0] == pytest.approx(3.0)  # the newest round only
    assert ctrl.b_mean[1] == pytest.approx((0.5 * 1.0 + 3.0) / 1.5)  # both rounds, the newest weighing 1 against 0.5
    # Without ``grown`` (the old call), every jump restarts: what a caller that cannot tell gets.
    ctrl.after_round([0, 1], [0.1, 0.1])
    assert math.isnan(ctrl.b_mean[1]) and ctrl.weight[1] == 0.0


def test_head_phase_gates_the_body_then_calibrates():
    ctrl = control(num_groups=3, head=[2], head_phase=0.1, total_steps=50)
    assert ctrl.head_steps == 5 and ctrl.phase == HEAD and ctrl.dense
    assert [ctrl.gated(k) for k in range(3)] == [True, True, False]
    ctrl.begin_step(4)
    assert ctrl.phase == HEAD
    ctrl.begin_step(5)
    assert ctrl.phase == CALIBRATION and not any(ctrl.gated(k) for k in range(3))
    # No head phase without a head, with only a head, without a run length for a fraction, or when switched off.
    assert control(num_groups=3, head=[], head_phase=0.1, total_steps=50).phase == CALIBRATION
    assert control(num_groups=1, head=[0], head_phase=0.1, total_steps=50).phase == CALIBRATION
    assert control(num_groups=3, head=[2], head_phase=0.1).phase == CALIBRATION
    assert control(num_groups=3, head=[2], head_phase=7).head_steps == 7



@pytest.mark.parametrize("total,gap", [(500, 4), (460, 4), (2000, 15), (10000, 75)])
def test_a_long_head_phase_keeps_about_head_rounds_rounds(total, gap):
    # 6% of the run: 30 steps at 500 (every fourth step, as before), 120 at 2,000 and 600 at 10,000, where a round
    # every fourth step would cost 30 and 150 rounds for a rate that settles in a few.
    ctrl = control(num_groups=3, head=[2], head_phase=0.06, total_steps=total)
    assert ctrl.dense_gap == gap
    rounds = len(range(0, ctrl.head_steps, ctrl.dense_gap))
    assert rounds <= HEAD_ROUNDS or gap == HEAD_PROBE_GAP
    ctrl.begin_step(ctrl.head_steps)
    assert ctrl.phase == CALIBRATION and ctrl.dense_gap == 1

def test_state_round_trip():
    ctrl = control(num_groups=2, head=[1], head_phase=3)
    for step in range(5):
        ctrl.begin_step(step)
        propose(ctrl, [1.0 + step, 2.0], [1.0, 3.0 - 0.1 * step], [0.01, 0.02])
        ctrl.after_round([0, 1], [1.0, 1.0])
    copy = control(num_groups=2, head=[1], head_phase=3)
    copy.load_state_dict(ctrl.state_dict())
    assert copy.state_dict() == ctrl.state_dict()
    a = propose(ctrl, [0.5, 0.5], [1.0, 1.0], [0.01, 0.02])
    b = propose(copy, [0.5, 0.5], [1.0, 1.0], [0.01, 0.02])
    assert a.factors == b.factors
    with pytest.raises(ValueError):
        control(num_groups=3).load_state_dict(ctrl.state_dict())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"horizon": 0.5}, "horizon"),
        ({"ratio_limit": 0.5}, "ratio_limit"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"trust_region": 0.9}, "trust_region"),
        ({"calibration_rounds": -1}, "calibration_rounds"),
        ({"head_phase": 2.5}, "head_phase"),
        ({"head_phase": -0.1}, "head_phase"),
        ({"jump_limit": 1.5}, "jump_limit"),
        ({"verify_ratio": 0.0}, "verify_ratio"),
        ({"lr_min": 0.0}, "lr_min"),
    ],
)
def test_bad_settings_refused(kwargs, match):
    with pytest.raises(HiDLRError, match=match):
        RateSettings(**kwargs)
