"""Per-parameter influence (docs/METHOD.md sections 3 and 8): how much each group can lower the loss.

``gain_k = b_k^2 / (2 A_kk)`` is the predicted loss decrease from group k alone at its optimal rate, and
``gain_k / n_k`` (the paper's "PPI") ranks groups for freezing. It does not depend on the scale of the
optimizer's direction, so rounds at different rates are comparable and can be averaged.
"""

from __future__ import annotations

import math

import torch


def round_influence(b: torch.Tensor, A: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Influence ``gain_k / n_k`` of one round; 0 where the step goes uphill, NaN where unmeasured.

    A group with positive slope but no positive curvature (``A_kk <= 0``) has no finite optimum in the
    model: its influence is NaN for the round, and the round does not count towards its average.
    """
    out = torch.full_like(b, float("nan"))
    diag = A.diagonal()
    for k, n in enumerate(sizes):
        bk, ak = float(b[k]), float(diag[k])
        if not (math.isfinite(bk) and math.isfinite(ak)) or n <= 0:
            continue
        if bk <= 0:
            out[k] = 0.0
        elif ak > 0:
            out[k] = bk * bk / (2.0 * ak) / n
    return out


class InfluenceTracker:
    """Running mean of each group's influence over probe rounds (a single round is noisy)."""

    def __init__(self, num_groups: int):
        self.total = [0.0] * num_groups
        self.count = [0] * num_groups

    def update(self, influence: torch.Tensor) -> None:
        """Add one round's influence; NaN entries (groups not measured) do not count."""
        for k, value in enumerate(influence.tolist()):
            if math.isfinite(value):
                self.total[k] += value
                self.count[k] += 1

    @property
    def mean(self) -> list[float]:
        """Average influence per group; NaN for a group never measured."""
        return [t / c if c else float("nan") for t, c in zip(self.total, self.count)]

    def state_dict(self) -> dict:
        """Totals and counts per group, JSON-safe."""
        return {"total": list(self.total), "count": list(self.count)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.total = [float(x) for x in state["total"]]
        self.count = [int(x) for x in state["count"]]
