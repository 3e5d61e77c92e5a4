"""Rate control and the schedule of rounds (hidlr_hf/core/rates.py; docs/METHOD.md sections 5 and 7)."""

import math

import numpy as np

from hidlr_hf.core.rates import ProbeSchedule


def test_auto_schedule_spaces_rounds_within_budget():
    schedule = ProbeSchedule("auto", calibration_rounds=4, overhead_budget=0.05, step_cost=3.0)
    steps, rounds = [], 0
    for step in range(2000):
        if schedule.due(step):
            rounds += 1
            steps.append(step)
            schedule.after_round(step, rounds, forward_passes=13)
    assert steps[:4] == [0, 1, 2, 3]
    gaps = np.diff(steps)
    assert gaps.max() == math.ceil(13 / (3 * 0.05))  # 87 steps: 13 forwards per 87 steps of 3 = 5%
    assert all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:]))
    late = [s for s in steps if s >= 1000]
    assert 13 * len(late) / (3 * 1000) <= 0.05 + 1e-9
