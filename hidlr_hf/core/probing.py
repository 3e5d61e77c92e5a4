"""One round's measurement: run a probe design and fit ``beta`` and ``alpha`` (docs/METHOD.md section 4), in a
context that leaves training exactly as it was (no gradients, eval mode, every RNG stream untouched).

The probe scale of a group whose loss change is lost in rounding noise grows until its curvature shows (section 4.3):
this is what lets a far-too-small rate recover.
"""

from __future__ import annotations

import itertools
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from hidlr_hf.errors import HiDLRError

from . import estimation


@dataclass
class ProbeSettings:
    """How a round probes (the engine's ``design``, ``probe_scale``, ... arguments)."""

    design: str
    initial_scale: float
    scale_growth: float
    max_scale: float
    noise_tolerance: float
    random_probes: int


def measure(
    evaluate: Callable[[torch.Tensor], torch.Tensor],
    base: float,
    active: list[int],
    num_groups: int,
    start_scales: list[float],
    settings: ProbeSettings,
    generator_seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """Probe the active groups and fit the next-loss model.

    Args:
        evaluate: ``evaluate(xis)`` returns the probe losses at ``w - sum_k xi_k r_k d_k`` for each row of ``xis``.
        base: the loss at ``xi = 0``.
        active: the groups probed.
        num_groups: K.
        start_scales: per group, the probe scale to start from (where the last round ended, adjusted by the caller).
        settings: :class:`ProbeSettings`.
        generator_seed: seed of the ``random`` design's draws.

    Returns:
        ``(beta, alpha, scales, bounded)``: the fit in multiplier units (NaN where not measured), the final probe
        scales, and per group whether ``alpha_kk`` is only the noise bound (curvature lost in rounding noise even at
        the largest probe: the rate is far too small, and the fit says only by how much at least).
    """
    K = num_groups
    s = settings
    scales = torch.tensor([max(s.initial_scale, c) for c in start_scales], dtype=torch.float64)
    noise = s.noise_tolerance * max(abs(base), 1e-30)
    at_noise_floor = {}
    bounded = [False] * K

    def curvature_signal(xis: torch.Tensor, dls: torch.Tensor, k: int) -> float:
        # |L(+c) + L(-c) - 2 L(0)|: what alpha_kk is made of, and what float rounding can drown.
        return float((dls[xis[:, k] > 0].sum() + dls[xis[:, k] < 0].sum()).abs())

    def grow(xis_fn):
        # Re-probe only the groups whose curvature is below noise; keep the others' rows.
        todo, rows, values = list(active), {}, {}
        while todo:
            xis = xis_fn(todo)
            dls = evaluate(xis) - base
            weak = []
            for k in todo:
                rows[k], values[k] = xis, dls
                if curvature_signal(xis, dls, k) <= noise and scales[k] * s.scale_growth <= s.max_scale:
                    weak.append(k)
            for k in weak:
                scales[k] *= s.scale_growth
            todo = weak
        return rows, values

    if s.design in ("axis", "full"):
        rows, values = grow(lambda groups: estimation.axis_probes(groups, scales, K))
        plus = torch.full((K,), math.nan, dtype=torch.float64)
        minus = plus.clone()
        for k in active:
            plus[k] = values[k][rows[k][:, k] > 0][0]
            minus[k] = values[k][rows[k][:, k] < 0][0]
            at_noise_floor[k] = float((plus[k] + minus[k]).abs()) <= noise
        beta, alpha = estimation.axis_fit(plus, minus, scales)
        off = ~torch.eye(K, dtype=torch.bool)
        alpha[off] = math.nan
        for k in range(K):
            if k not in active:
                beta[k] = alpha[k, k] = math.nan
        if s.design == "full" and len(active) > 1:
            pairs = list(itertools.combinations(active, 2))
            dls = evaluate(estimation.pair_probes(active, scales, K)) - base
            estimation.pair_fit(pairs, dls, scales, beta, alpha)
    else:
        generator = torch.Generator().manual_seed(generator_seed)
        while True:
            # random_probes per group in antithetic pairs: 4K forward passes for the paper's 4 (plus L(0)).
            pairs = max(1, math.ceil(s.random_probes * len(active) / 2))
            xis = estimation.random_probes(active, scales, K, pairs, generator)
            dls = evaluate(xis) - base
            even = (dls[:pairs] + dls[pairs:]).abs().max()
            if float(even) > noise or scales.max() * s.scale_growth > s.max_scale:
                break
            scales *= s.scale_growth
        for k in active:
            at_noise_floor[k] = float(even) <= noise
        beta, alpha = estimation.fit_quadratic(xis, dls, active, cross=False)
    for k in active:
        # Curvature below noise even at the largest probe while the slope is clear: the step is deep in the linear
        # regime, so the rate is far too small. The noise level bounds alpha_kk from above, which bounds the optimal
        # multiplier from below: use that bound instead of "keep the rate".
        bound = 2.0 * noise / float(scales[k]) ** 2
        if at_noise_floor[k] and float(beta[k]) * float(scales[k]) > noise and not float(alpha[k, k]) > bound:
            alpha[k, k] = bound
            bounded[k] = True
    return beta, alpha, scales, bounded


@contextmanager
def probe_context(model: Optional[torch.nn.Module]):
    """No grad, ``model`` in eval mode (no dropout noise), and every RNG stream exactly as before the probes."""
    modes = [(m, m.training) for m in model.modules()] if model is not None else []
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    py_rng = random.getstate()
    np_rng = _numpy_rng_state()
    try:
        if model is not None:
            model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        random.setstate(py_rng)
        if np_rng is not None:
            import numpy as np

            np.random.set_state(np_rng)


def scalar_loss(value) -> torch.Tensor:
    """The closure's loss as a float64 scalar tensor; anything but a scalar is a clear error."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise HiDLRError(f"The probe closure must return a scalar loss, got a tensor of shape {tuple(value.shape)}.")
        return value.detach().reshape(()).to(torch.float64)
    try:
        return torch.tensor(float(value), dtype=torch.float64)
    except (TypeError, ValueError):
        raise HiDLRError(f"The probe closure must return a scalar loss, got {type(value).__name__}.") from None


def _numpy_rng_state():
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None
    return np.random.get_state()
