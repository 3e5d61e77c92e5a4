"""The one-line progress message of a Hi-DLR probe round, logged at INFO by the engine.

A probe round costs extra forward passes, so on a slow machine its step takes visibly longer than the others; the
line says which step it was, the phase, how long the round took and what it did to the rates, so a user watching the
progress bar knows why.
"""

from __future__ import annotations

__all__ = ["MAX_GROUPS_SHOWN", "round_message"]

MAX_GROUPS_SHOWN = 8
"""Groups named one by one in the line; the rest are summarised (a per-layer grouping has dozens)."""


def round_message(number: int, step: int, phase: str, names, rates, factors, seconds: float, passes: int) -> str:
    """``Hi-DLR round 3 at step 20 (body phase): 1.42 s, 9 forward passes; rates head=2.1e-05 (x1.5), ...``."""
    shown = [
        f"{name}={rate:.3g}" + (f" (x{factor:.3g})" if factor != 1.0 else "")
        for name, rate, factor in zip(names[:MAX_GROUPS_SHOWN], rates, factors)
    ]
    rest = list(rates[MAX_GROUPS_SHOWN:])
    if rest:
        shown.append(f"... {len(rest)} more ({min(rest):.3g} to {max(rest):.3g})")
    return (
        f"Hi-DLR round {number} at step {step} ({phase} phase): {seconds:.2f} s, {passes} forward passes; "
        f"rates {', '.join(shown)}"
    )
