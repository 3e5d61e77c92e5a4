"""Apply a selection found on one model to another of the same family (docs/METHOD.md section 12).

A layer group is stored as its module type and relative depth ``(i + 0.5) / L`` (with ``L`` the source depth).
Source layer ``i`` covers relative depths ``[i / L, (i + 1) / L)``; target layer ``j`` of ``L'`` takes the decision
of the source layer that covers its own centre ``(j + 0.5) / L'``, i.e. ``i = floor((j + 0.5) * L / L')``. Each
source layer thus covers ``L' / L`` target layers (2 -> 4 layers: source layer 1 -> target layers 2 and 3);
shrinking keeps the decisions of the source layers at the target layers' centres.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

from torch import nn

from hidlr_hf.core.grouping import group_parameters
from hidlr_hf.core.selection import Selection, records_from_groups
from hidlr_hf.core.wrappers import unwrap_model

from .mask import LAYER_GROUP, build_mask, infer_layers

__all__ = ["apply_relative_selection", "kept_names", "mask_for_model"]


def _candidate_groups(model: nn.Module, scheme):
    # A peft model's candidates are its trainable parameters (adapters, head); a bare model's are all of them.
    include_frozen = not isinstance(getattr(model, "peft_config", None), dict)
    return group_parameters(model, scheme, include_frozen=include_frozen)


def _source_layer(entry: dict) -> int:
    return int(math.floor(entry["relative_depth"] * entry["source_layers"]))


def kept_names(relative: list[dict], names: list[str]) -> list[str]:
    """Which of a target model's group ``names`` a relative selection keeps (the rule of the module docstring)."""
    layer_counts: dict[str, int] = defaultdict(int)
    for n in names:
        m = LAYER_GROUP.match(n)
        if m:
            stack = m.group("stack") or ""
            layer_counts[stack] = max(layer_counts[stack], int(m.group("index")) + 1)
    wanted_names = {e["name"] for e in relative if "name" in e}
    missing = sorted(wanted_names - set(names))
    if missing:
        warnings.warn(
            f"The target model has no group(s) {missing}; they are skipped. Transfer between models of one family.",
            stacklevel=3,
        )
    kept = []
    for n in names:
        m = LAYER_GROUP.match(n)
        if m is None:
            if n in wanted_names:
                kept.append(n)
            continue
        stack, j, kind = m.group("stack") or "", int(m.group("index")), m.group("type")
        target_layers = layer_counts[stack]
        for e in relative:
            if "module_type" not in e or e["module_type"] != kind or e.get("stack", "") != stack:
                continue
            source_layers = int(e["source_layers"])
            # The source layer whose depth span [i/L, (i+1)/L) holds target layer j's centre (j + 0.5) / L'.
            if ((2 * j + 1) * source_layers) // (2 * target_layers) == _source_layer(e):
                kept.append(n)
                break
    return kept


def apply_relative_selection(relative: list[dict], target_model: nn.Module, scheme) -> list[str]:
    """Names of the target model's groups (under ``scheme``) that a relative selection keeps.

    Target layer ``j`` of ``L'`` is kept for a type when the source layer ``floor((j + 0.5) * L / L')`` was
    kept for that type (see the module docstring).
    """
    return kept_names(relative, [g.name for g in _candidate_groups(target_model, scheme)])


def mask_for_model(relative: list[dict], target_model: nn.Module, scheme) -> dict:
    """A full mask for ``target_model`` from a relative selection (influences unknown: null, ranks null)."""
    groups = _candidate_groups(target_model, scheme)
    kept = set(kept_names(relative, [g.name for g in groups]))
    records = records_from_groups(groups, [math.nan] * len(groups))
    total = sum(p.numel() for p in target_model.parameters())
    selection = Selection(
        records, [r.name in kept for r in records], [None] * len(records),
        {"kind": "transfer", "value": None}, total,
    )
    inner = unwrap_model(target_model)
    config = getattr(inner, "config", None)
    return build_mask(
        selection,
        model_type=getattr(config, "model_type", None),
        num_layers=infer_layers(r.name for r in records),
        scheme=scheme,
        base_model_prefix=getattr(inner, "base_model_prefix", None),
    )
