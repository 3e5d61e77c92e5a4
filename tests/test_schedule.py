"""The schedule of probe rounds (hidlr_hf/core/schedule.py; docs/METHOD.md section 7)."""

import math

import numpy as np
import pytest

from hidlr_hf.core.schedule import MIN_STEADY_ROUNDS, ProbeSchedule
from hidlr_hf.errors import HiDLRError


def rounds(schedule, steps, passes, dense_rounds=0):
    """Steps at which ``schedule`` probes; the first ``dense_rounds`` rounds are dense (calibration, gap 1)."""
    out, spent = [], 0
    for step in range(steps):
        if schedule.due(step):
            out.append(step)
            spent += passes
            schedule.after_round(step, passes, dense_gap=1 if len(out) < dense_rounds else None, spent=spent)
    return out


def test_auto_is_dense_then_doubles_up_to_the_budget_gap():
    schedule = ProbeSchedule("auto", overhead_budget=0.05, step_cost=3.0)
    steps = rounds(schedule, 2000, passes=13, dense_rounds=4)
    assert steps[:4] == [0, 1, 2, 3]
    gaps = np.diff(steps)
    assert list(gaps[3:8]) == [2, 4, 8, 16, 32]
    assert gaps.max() == math.ceil(13 / (3 * 0.05))  # 87 steps: 13 forwards per 87 steps of 3 = 5%
    assert all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:]))
    late = [s for s in steps if s >= 1000]
    assert 13 * len(late) / (3 * 1000) <= 0.05 + 1e-9


@pytest.mark.parametrize("total,dense", [(500, 4), (500, 12), (2000, 6), (20000, 6)])
def test_known_length_keeps_the_whole_run_within_budget(total, dense):
    schedule = ProbeSchedule("auto", overhead_budget=0.05, step_cost=3.0, total_steps=total)
    passes = 15
    steps = rounds(schedule, total, passes, dense_rounds=dense)
    allowance = 0.05 * 3.0 * total
    affordable = int(allowance // passes)  # rounds the allowance pays for
    if affordable > dense + 3:
        # Front-loaded after calibration (the last dense round plans the first steady one).
        assert np.diff(steps[dense - 1 :])[:3].tolist() == [2, 4, 8]
    # Rounds run while the allowance lasts (the dense ones always); then MIN_STEADY_ROUNDS more at most.
    assert len(steps) <= max(affordable, dense) + MIN_STEADY_ROUNDS + 1
    assert len(steps) - dense >= MIN_STEADY_ROUNDS  # always a few rounds that correct calibration's errors
    if total == 20000:
        assert len(steps) <= affordable + 1  # long runs: the budget gap alone keeps probing under 5%


def test_fixed_every_and_bad_values():
    schedule = ProbeSchedule(7)
    assert rounds(schedule, 30, passes=5, dense_rounds=3) == [0, 7, 14, 21, 28]
    assert ProbeSchedule("12").every == 12
    for bad in (0, -3, "often", True, 2.5):
        with pytest.raises(HiDLRError, match="every"):
            ProbeSchedule(bad)
    with pytest.raises(HiDLRError, match="overhead_budget"):
        ProbeSchedule("auto", overhead_budget=1.5)
    with pytest.raises(HiDLRError, match="step_cost"):
        ProbeSchedule("auto", step_cost=0)


def test_state_round_trip_probes_at_the_same_steps():
    straight = ProbeSchedule("auto", total_steps=400)
    steps = rounds(straight, 400, passes=9, dense_rounds=3)
    resumed = ProbeSchedule("auto", total_steps=400)
    first = rounds(resumed, 150, passes=9, dense_rounds=3)
    again = ProbeSchedule("auto", total_steps=400)
    again.load_state_dict(resumed.state_dict())
    rest, spent = [], 9 * len(first)
    for step in range(150, 400):
        if again.due(step):
            rest.append(step)
            spent += 9
            again.after_round(step, 9, spent=spent)
    assert first + rest == steps


def test_no_round_where_its_rates_would_barely_be_used():
    # 500 steps, 5 dense rounds (steps 0-4): the allowance (75 passes) is spent, so MIN_STEADY_ROUNDS rounds remain at
    # doubling gaps from (500 - 4) // 15 = 33. The fourth gap (264) would end at step 499, the run's last step: a rate
    # set there is used for one step, so that round is dropped.
    schedule = ProbeSchedule("auto", overhead_budget=0.05, step_cost=3.0, total_steps=500)
    steps = rounds(schedule, 500, passes=15, dense_rounds=5)
    assert steps == [0, 1, 2, 3, 4, 37, 103, 235]
    assert len(steps) - 5 == MIN_STEADY_ROUNDS
    # A fixed gap is what the user asked for: every round runs, the last one included.
    assert rounds(ProbeSchedule(100, total_steps=500), 500, passes=15)[-1] == 400
    assert rounds(ProbeSchedule(7, total_steps=50), 50, passes=15)[-1] == 49
