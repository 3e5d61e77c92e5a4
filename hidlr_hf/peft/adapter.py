"""Write a discovered adapter: ``adapter_config.json`` (peft) and ``hidlr_mask.json`` (docs/METHOD.md section 12)."""

from __future__ import annotations

import json
import os

from torch import nn

from .config import mask_to_peft_config

__all__ = ["export_adapter"]


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def export_adapter(out_dir, mask: dict, model: nn.Module) -> str:
    """Write ``adapter_config.json`` (peft) and ``hidlr_mask.json`` to ``out_dir``; return a short summary."""
    config, notes = mask_to_peft_config(mask, model)
    os.makedirs(out_dir, exist_ok=True)
    config.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "hidlr_mask.json"), "w", encoding="utf-8") as fh:
        json.dump(mask, fh, indent=2)
        fh.write("\n")
    kept = [g["name"] for g in mask["groups"] if g["kept"]]
    gain = mask["predicted_gain"]
    lines = [
        f"Kept {len(kept)} of {len(mask['groups'])} groups: {', '.join(kept)}.",
        f"Trainable: {mask['trainable_params']:,} parameters, {100 * mask['trainable_fraction']:.2f}% of "
        f"{_human(mask['total_params'])}.",
        f"Predicted gain: {gain:.3g}." if gain is not None else "Predicted gain: unknown (no kept group measured).",
        f"Adapter: {type(config).__name__} in {out_dir}.",
    ]
    lines += [n for n in notes if n.startswith("Not expressible")]
    return "\n".join(lines)
