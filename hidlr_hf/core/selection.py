"""Automatic PEFT: keep the most influential groups under a trainable-parameter budget (docs/METHOD.md section 8).

Plain PyTorch bookkeeping, no ``transformers`` or ``peft`` import. A :class:`GroupRecord` is one row of
the mask (a group's parameter names, size and accumulated influence ``gain_k / n_k``); :func:`select`
turns the rows and a budget into a :class:`Selection` (which groups stay trainable). Turning a selection
into a ``peft`` config is :mod:`hidlr_hf.peft`'s job.

Selection rule ("first fit by rank"):

1. Head groups (``is_head``, the new task head) are always kept and count toward the budget.
2. The other groups with a measured influence are ranked by influence, highest first (ties keep the
   groups' order). Groups whose influence is NaN were never measured: they get no rank and are never kept.
3. Walking down the ranking, a group is kept when the running trainable count plus its size stays within
   the budget; a group that does not fit is skipped and the walk continues, so a smaller, less influential
   group can still use the room left. (A ``top_k`` budget keeps the k best-ranked groups whatever their size.)
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from hidlr_hf.errors import HiDLRError

from .grouping import is_head_group

__all__ = ["GroupRecord", "Selection", "group_records", "parse_budget", "records_from_groups", "select"]


@dataclass
class GroupRecord:
    """One parameter group as the selection sees it: names, size, influence, and whether it is the task head."""

    name: str
    param_names: list[str]
    numel: int
    influence: float = math.nan  # gain_k / n_k averaged over probe rounds; NaN when never measured
    is_head: bool = False


@dataclass
class Selection:
    """Which groups stay trainable. ``kept``, ``rank`` run parallel to ``groups``.

    ``rank[i]`` is 1 for the most influential rankable group, and None for head groups and groups whose
    influence was never measured. ``budget`` is what was asked (see :func:`parse_budget`); ``total_params``
    counts every parameter of the model, frozen ones included, so fractions are of the whole model.
    """

    groups: list[GroupRecord]
    kept: list[bool]
    rank: list[int | None]
    budget: dict
    total_params: int
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_params(self) -> int:
        """Parameters in the kept groups."""
        return sum(g.numel for g, k in zip(self.groups, self.kept) if k)

    @property
    def trainable_fraction(self) -> float:
        """``trainable_params / total_params``."""
        return self.trainable_params / self.total_params if self.total_params else 0.0

    @property
    def kept_names(self) -> list[str]:
        """Names of the kept groups, in group order."""
        return [g.name for g, k in zip(self.groups, self.kept) if k]


_BUDGET_HELP = (
    "give a fraction of the model in (0, 1] such as 0.01, an integer parameter count such as 150000, "
    "or 'top3' / 'top_k:3' for the three most influential groups"
)
_TOP_K = re.compile(r"^top(?:_?k)?[:=_]?(\d+)$", re.I)


def parse_budget(value) -> dict:
    """Normalise a trainable-parameter budget to ``{"kind": "fraction" | "count" | "top_k", "value": ...}``.

    ``0.01`` / ``"0.01"`` is a fraction of all model parameters (0 < x <= 1); ``150000`` / ``"150000"`` an
    integer count (>= 1); ``"top3"`` / ``"top_k:3"`` keeps the 3 most influential groups. An already parsed
    dict is validated and returned as a copy.
    """
    if isinstance(value, dict):
        if set(value) != {"kind", "value"} or value["kind"] not in ("fraction", "count", "top_k"):
            raise HiDLRError(f"The budget {value!r} is not a parsed budget; {_BUDGET_HELP}.")
        if value["kind"] == "fraction":
            return _fraction(float(value["value"]), value)
        return _positive_int(value["value"], value, value["kind"])
    if isinstance(value, bool) or value is None:
        raise HiDLRError(f"The budget {value!r} is not a number; {_BUDGET_HELP}.")
    if isinstance(value, int):
        return _positive_int(value, value, "count")
    if isinstance(value, float):
        return _fraction(value, value)
    if isinstance(value, str):
        text = value.strip()
        top = _TOP_K.match(text)
        if top:
            return _positive_int(int(top.group(1)), value, "top_k")
        if re.fullmatch(r"[+-]?\d+", text):
            return _positive_int(int(text), value, "count")
        try:
            number = float(text)
        except ValueError:
            raise HiDLRError(f"The budget {value!r} is not a number; {_BUDGET_HELP}.") from None
        return _fraction(number, value)
    raise HiDLRError(f"The budget cannot be a {type(value).__name__}; {_BUDGET_HELP}.")


def _fraction(number: float, shown) -> dict:
    if not math.isfinite(number) or number <= 0:
        raise HiDLRError(f"The budget {shown!r} must be positive; {_BUDGET_HELP}.")
    if number > 1:
        raise HiDLRError(
            f"The budget {shown!r} is read as a fraction, and a fraction must be in (0, 1]; "
            "give an integer count such as 150000 for a number of parameters."
        )
    return {"kind": "fraction", "value": float(number)}


def _positive_int(number, shown, kind: str) -> dict:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise HiDLRError(f"The budget {shown!r} must be a positive integer here; {_BUDGET_HELP}.")
    return {"kind": kind, "value": int(number)}


def group_records(names, param_names, sizes, influence) -> list[GroupRecord]:
    """One :class:`GroupRecord` per group from parallel lists (names, parameter names, sizes, influences).

    The one place records are built: the head is decided by :func:`~hidlr_hf.core.grouping.is_head_group`.
    """
    names, param_names, sizes, influence = list(names), list(param_names), list(sizes), list(influence)
    if not len(names) == len(param_names) == len(sizes) == len(influence):
        raise HiDLRError(
            f"Got {len(influence)} influence values, {len(sizes)} sizes and {len(param_names)} name lists for "
            f"{len(names)} groups; pass one value per group (NaN influence for a group never measured)."
        )
    return [
        GroupRecord(str(n), list(p), int(size), float(v), is_head_group(str(n)))
        for n, p, size, v in zip(names, param_names, sizes, influence)
    ]


def records_from_groups(groups, influence: Sequence[float]) -> list[GroupRecord]:
    """GroupRecords from :class:`hidlr_hf.core.grouping.ParameterGroup` objects and their influences (same order)."""
    return group_records([g.name for g in groups], [g.param_names for g in groups], [g.numel for g in groups], influence)


def select(groups: list[GroupRecord], budget, total_params: int) -> Selection:
    """Keep the head and the most influential groups whose sizes fit the budget (first fit by rank).

    See the module docstring for the rule. Raises :class:`HiDLRError` when no group has a measured
    influence, or when a count budget is larger than the model. Warns when the head alone exceeds the budget
    (only the head is kept) and when unmeasured groups are left out.
    """
    parsed = parse_budget(budget)
    if total_params < 1:
        raise HiDLRError(f"total_params is {total_params}; pass the number of parameters of the whole model.")
    for g in groups:
        if g.numel < 0:
            raise HiDLRError(f"Group {g.name!r} has a negative size {g.numel}; pass each group's parameter count.")
    candidates = [i for i, g in enumerate(groups) if not g.is_head]
    if not candidates:
        raise HiDLRError("Every group is a head group, so there is nothing to select; group the backbone too.")
    measured = [i for i in candidates if not math.isnan(groups[i].influence)]
    if not measured:
        raise HiDLRError(
            "No probe round has measured influence yet; freeze after at least one Hi-DLR round."
        )
    kind, value = parsed["kind"], parsed["value"]
    if kind == "count" and value > total_params:
        raise HiDLRError(
            f"The budget of {value} parameters is larger than the model ({total_params} parameters); "
            "give a smaller count or a fraction such as 0.01."
        )
    limit = value * total_params if kind == "fraction" else value if kind == "count" else math.inf

    kept = [g.is_head for g in groups]
    rank: list[int | None] = [None] * len(groups)
    # Stable sort: equal influences keep the groups' own order.
    order = sorted(measured, key=lambda i: -groups[i].influence)
    for r, i in enumerate(order, start=1):
        rank[i] = r

    notes: list[str] = []
    used = sum(g.numel for g in groups if g.is_head)
    if used > limit:
        msg = (
            f"The task head alone has {used} parameters, more than the budget of {_limit_text(parsed, limit)}; "
            "only the head is kept. Raise the budget to keep backbone groups."
        )
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    else:
        taken = 0
        for i in order:
            if kind == "top_k":
                if taken == value:
                    break
            elif used + groups[i].numel > limit:
                continue  # first fit: a smaller group further down may still fit
            kept[i] = True
            used += groups[i].numel
            taken += 1

    unmeasured = [groups[i].name for i in candidates if math.isnan(groups[i].influence)]
    if unmeasured:
        shown = ", ".join(unmeasured[:5]) + (f" and {len(unmeasured) - 5} more" if len(unmeasured) > 5 else "")
        msg = (
            f"{len(unmeasured)} group(s) were never measured (influence NaN) and are not kept: {shown}; "
            "probe them in at least one Hi-DLR round if they should compete."
        )
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    return Selection(list(groups), kept, rank, parsed, int(total_params), notes)


def _limit_text(parsed: dict, limit: float) -> str:
    if parsed["kind"] == "fraction":
        return f"{parsed['value']:g} of the model ({int(limit)} parameters)"
    return f"{int(limit)} parameters"
