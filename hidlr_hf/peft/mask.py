"""The Hi-DLR mask: a JSON-safe record of a selection, every group with its parameters, size, influence and fate.

``hidlr_mask.json`` (written beside ``adapter_config.json``) is this dict: what automatic PEFT kept and why, in a
form any tool can read (docs/METHOD.md section 12). :func:`relative_selection` states the kept layer groups by
module type and relative depth, so that :mod:`hidlr_hf.peft.transfer` can apply them to a model of another depth.
"""

from __future__ import annotations

import math
import re

from hidlr_hf.core.selection import Selection
from hidlr_hf.errors import HiDLRError

__all__ = ["LAYER_GROUP", "MASK_FORMAT", "build_mask", "check_mask", "infer_layers", "relative_selection"]

MASK_FORMAT = "hidlr-mask/1"
# A group of module_type_by_layer: `layers.3.attention`, or `encoder.layers.3.attention` for encoder-decoder models.
LAYER_GROUP = re.compile(r"^(?:(?P<stack>.+)\.)?layers\.(?P<index>\d+)\.(?P<type>[^.]+)$")


def _finite_or_none(x: float):
    x = float(x)
    return x if math.isfinite(x) else None


def infer_layers(names) -> int | None:
    """The number of layers seen in ``layers.<i>.*`` group names, or None without layer groups."""
    indices = [int(m.group("index")) for n in names if (m := LAYER_GROUP.match(n))]
    return max(indices) + 1 if indices else None


def build_mask(
    selection: Selection,
    *,
    model_type: str | None,
    num_layers: int | None,
    scheme,
    base_model_prefix: str | None,
) -> dict:
    """The JSON-safe mask of a selection: every group with its parameter names, size, influence, rank, kept flag.

    ``num_layers`` defaults to the layer count seen in the group names (``layers.<i>.*``). Non-finite
    influences are written as null. ``not_expressible`` starts empty: :func:`mask_to_peft_config` fills it.
    """
    groups = selection.groups
    if num_layers is None:
        num_layers = infer_layers(g.name for g in groups)
    gains = [g.influence * g.numel for g, k in zip(groups, selection.kept) if k and math.isfinite(g.influence)]
    mask = {
        "format": MASK_FORMAT,
        "scheme": scheme if isinstance(scheme, str) else "custom",
        "model_type": model_type,
        "num_layers": num_layers,
        "base_model_prefix": base_model_prefix,
        "budget": dict(selection.budget),
        "total_params": int(selection.total_params),
        "trainable_params": int(selection.trainable_params),
        "trainable_fraction": float(selection.trainable_fraction),
        "predicted_gain": float(sum(gains)) if gains else None,
        "groups": [
            {
                "name": g.name,
                "param_names": list(g.param_names),
                "numel": int(g.numel),
                "influence": _finite_or_none(g.influence),
                "rank": r,
                "kept": bool(k),
                "is_head": bool(g.is_head),
            }
            for g, k, r in zip(groups, selection.kept, selection.rank)
        ],
        "not_expressible": [],
    }
    mask["relative"] = relative_selection(mask)
    return mask


def check_mask(mask: dict) -> None:
    """Raise :class:`HiDLRError` unless ``mask`` is a Hi-DLR mask (``build_mask``)."""
    if not isinstance(mask, dict) or mask.get("format") != MASK_FORMAT:
        raise HiDLRError(
            f"This is not a Hi-DLR mask (format {mask.get('format') if isinstance(mask, dict) else None!r}); "
            f"build one with build_mask (format {MASK_FORMAT!r})."
        )


def relative_selection(mask: dict) -> list[dict]:
    """The kept groups in a depth-independent form.

    A layer group becomes ``{"module_type", "relative_depth": (i + 0.5) / L, "source_layers": L}`` (plus
    ``"stack"`` for ``encoder.`` / ``decoder.`` prefixes); any other group ``{"name": ...}``.
    """
    check_mask(mask)
    num_layers = mask.get("num_layers") or infer_layers(g["name"] for g in mask["groups"])
    out = []
    for g in mask["groups"]:
        if not g["kept"]:
            continue
        m = LAYER_GROUP.match(g["name"])
        if m is None:
            out.append({"name": g["name"]})
            continue
        entry = {
            "module_type": m.group("type"),
            "relative_depth": (int(m.group("index")) + 0.5) / num_layers,
            "source_layers": num_layers,
        }
        if m.group("stack"):
            entry["stack"] = m.group("stack")
        out.append(entry)
    return out
