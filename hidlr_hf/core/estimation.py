"""Probe designs and the least-squares fit of the next-loss model (docs/METHOD.md section 4).

A probe is a vector ``xi`` of multipliers, one per group: it evaluates the loss at
``w - sum_k xi_k r_k d_k``. Around ``xi = 0`` the loss change is modelled as

    dL(xi) = - sum_k xi_k beta_k + 1/2 sum_k xi_k^2 alpha_kk + sum_{j<k} xi_j xi_k alpha_jk

which is linear in ``(beta, alpha)``: every design below is one small least-squares problem, exact on a
quadratic whenever the design determines the unknowns (``axis`` and ``full`` do). :class:`Estimate` is what one
round measured and decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Optional, Sequence

import torch

from hidlr_hf.errors import HiDLRError

DESIGNS = ("axis", "full", "random")


@dataclass
class Estimate:
    """What one probe round measured and decided; one entry per group (docs/METHOD.md sections 3-5).

    Attributes:
        step: optimizer step (0-based) of the round.
        group_names: the groups, in order.
        b: ``G_k . d_k`` in absolute units; NaN where not measured.
        A: ``d_j . H_jk d_k`` (K x K); NaN where not measured.
        optimal_rate: this round's own one-step optimum ``b_k / A_kk``; NaN where undefined.
        rate: base rate in force after the round.
        influence: ``gain_k / n_k`` of this round.
        verdict: per group, why the rate moved or not (``accepted``, ``uphill``, ``no_curvature``, ...).
        probe_scale: final probe multiplier ``c_k`` of each group.
        loss: probe-batch loss at the pre-step parameters.
        forward_passes: closure calls of the round.
        seconds: wall-clock time of the round.
        status: ``ok``, or why the round was discarded (rates then unchanged).
        phase: the rate control's phase during the round (``head``, ``calibration`` or ``steady``).
        verified: for a round that proposed a jump, whether one extra forward pass confirmed it.
    """

    step: int
    group_names: list
    b: torch.Tensor
    A: torch.Tensor
    optimal_rate: torch.Tensor
    rate: torch.Tensor
    influence: torch.Tensor
    verdict: list = field(default_factory=list)
    probe_scale: Optional[torch.Tensor] = None
    loss: float = float("nan")
    forward_passes: int = 0
    seconds: float = 0.0
    status: str = "ok"
    phase: str = ""
    verified: Optional[bool] = None


def check_probe_settings(
    design: str, probe_scale: float, scale_growth: float, max_probe_scale: float, noise_tolerance: float,
    random_probes: int,
) -> None:
    """Raise :class:`HiDLRError` for a probe setting the engine cannot use (see :class:`~hidlr_hf.HiDLR`)."""
    if design not in DESIGNS:
        raise HiDLRError(f"Unknown design {design!r}; choose one of {', '.join(DESIGNS)}.")
    if not (probe_scale > 0 and max_probe_scale >= probe_scale and scale_growth > 1):
        raise HiDLRError("Need probe_scale > 0, max_probe_scale >= probe_scale and scale_growth > 1.")
    if not noise_tolerance >= 0:
        raise HiDLRError(f"noise_tolerance must be >= 0 (got {noise_tolerance}).")
    if random_probes < 1:
        raise HiDLRError(f"random_probes must be >= 1 (got {random_probes}).")


def axis_probes(groups: Sequence[int], scales: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``+c_k e_k`` and ``-c_k e_k`` for each group k in ``groups``: shape (2 len(groups), K)."""
    xis = torch.zeros(2 * len(groups), num_groups, dtype=torch.float64)
    for i, k in enumerate(groups):
        xis[2 * i, k] = scales[k]
        xis[2 * i + 1, k] = -scales[k]
    return xis


def pair_probes(groups: Sequence[int], scales: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``c_j e_j + c_k e_k`` for every pair j < k of ``groups`` (the cross-curvature probes of ``full``)."""
    pairs = list(combinations(groups, 2))
    xis = torch.zeros(len(pairs), num_groups, dtype=torch.float64)
    for i, (j, k) in enumerate(pairs):
        xis[i, j] = scales[j]
        xis[i, k] = scales[k]
    return xis


def random_probes(
    groups: Sequence[int], scales: torch.Tensor, num_groups: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` Gaussian probes, each with its antithetic twin (``2 count`` rows).

    Gaussian rather than Rademacher entries: with ``xi_k = +-c`` every ``xi_k^2`` is the same constant and
    the diagonal curvatures cannot be told apart. The antithetic pairs cancel all curvature terms in the
    odd part of ``dL``, which keeps ``beta`` unbiased by cross-group curvature.
    """
    idx = torch.tensor(list(groups), dtype=torch.long)
    half = torch.zeros(count, num_groups, dtype=torch.float64)
    draws = torch.randn(count, len(groups), generator=generator, dtype=torch.float64)
    half[:, idx] = draws * scales[idx]
    return torch.cat([half, -half])


def fit_quadratic(
    xis: torch.Tensor, dls: torch.Tensor, groups: Sequence[int], cross: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``(beta, alpha)`` of the next-loss model from probes ``xis`` and loss changes ``dls``.

    Only the groups in ``groups`` are unknowns; ``beta`` and ``alpha`` entries of other groups (and the
    off-diagonal of ``alpha`` unless ``cross``) are NaN. Columns are normalised before solving because the
    probe scales of different groups can differ by orders of magnitude.
    """
    num_groups = xis.shape[1]
    groups = list(groups)
    pairs = list(combinations(groups, 2)) if cross else []
    cols = [-xis[:, k] for k in groups] + [0.5 * xis[:, k] ** 2 for k in groups]
    cols += [xis[:, j] * xis[:, k] for j, k in pairs]
    design = torch.stack(cols, dim=1)
    norms = design.abs().amax(dim=0).clamp_min(torch.finfo(torch.float64).tiny)
    solution = torch.linalg.lstsq(design / norms, dls.reshape(-1, 1).to(torch.float64)).solution
    coef = solution.reshape(-1) / norms

    beta = torch.full((num_groups,), float("nan"), dtype=torch.float64)
    alpha = torch.full((num_groups, num_groups), float("nan"), dtype=torch.float64)
    m = len(groups)
    for i, k in enumerate(groups):
        beta[k] = coef[i]
        alpha[k, k] = coef[m + i]
    for i, (j, k) in enumerate(pairs):
        alpha[j, k] = alpha[k, j] = coef[2 * m + i]
    return beta, alpha


def axis_fit(plus: torch.Tensor, minus: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed form of the ``axis`` design (docs/METHOD.md section 4), NaN-free only where probed.

    ``beta_k = (dL(-c e_k) - dL(+c e_k)) / (2c)`` and ``alpha_kk = (dL(+c e_k) + dL(-c e_k)) / c^2``, with dL
    measured from L(0). Written out rather than solved: the same inputs give the same bits on every run,
    which a resumed run relies on.
    """
    beta = (minus - plus) / (2 * scales)
    return beta, torch.diag_embed((plus + minus) / scales**2)


def pair_fit(
    pairs: list[tuple[int, int]], dls: torch.Tensor, scales: torch.Tensor, beta: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """Cross curvatures from ``dL(c_j e_j + c_k e_k)``, given the axis estimates; fills ``alpha`` in place."""
    for (j, k), dl in zip(pairs, dls.tolist()):
        cj, ck = float(scales[j]), float(scales[k])
        rest = dl + cj * beta[j] + ck * beta[k] - 0.5 * cj**2 * alpha[j, j] - 0.5 * ck**2 * alpha[k, k]
        alpha[j, k] = alpha[k, j] = rest / (cj * ck)
    return alpha



def joint_optimum(beta: torch.Tensor, alpha: torch.Tensor, active: Sequence[int]):
    """``alpha^-1 beta`` on the active groups when that block of ``alpha`` is finite and positive definite (the one-step
    optimum with cross-group curvature, design ``full``); None otherwise. NaN outside ``active``."""
    if len(active) < 2:
        return None
    idx = torch.tensor(list(active))
    block = alpha[idx][:, idx]
    if not (bool(torch.isfinite(block).all()) and bool(torch.isfinite(beta[idx]).all())):
        return None
    block = 0.5 * (block + block.T)
    if float(torch.linalg.eigvalsh(block).min()) <= 0:
        return None
    out = torch.full_like(beta, float("nan"))
    out[idx] = torch.linalg.solve(block, beta[idx])
    return out
