"""Write a discovered adapter: ``adapter_config.json`` and ``adapter_model.safetensors`` (peft's), and
``hidlr_mask.json`` (docs/METHOD.md section 12)."""

from __future__ import annotations

import json
import os

from torch import nn

from .base_name import public_base_name
from .config import mask_to_peft_config
from .weights import export_weights

__all__ = ["export_adapter", "loading_lines"]


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def export_adapter(
    out_dir, mask: dict, model: nn.Module, *, weights: bool = True, initial: dict | None = None,
    base_model_name_or_path: str | None = None, not_exact=(),
) -> str:
    """Write the adapter of ``mask`` for ``model`` (trained) to ``out_dir``; return a short summary.

    ``adapter_config.json`` always; with ``weights`` also ``adapter_model.safetensors``, the trained values of what
    the config adapts (:func:`~hidlr_hf.peft.weights.export_weights`; ``initial``: initial values of kept parameters
    by name, needed for BEFT biases). ``hidlr_mask.json`` records under ``weights`` whether
    ``PeftModel.from_pretrained(base, out_dir)`` rebuilds the trained model exactly and, if not, why: the reasons
    found here plus the caller's ``not_exact`` (e.g. frozen groups that never returned to their initial values).
    ``base_model_name_or_path`` defaults to the model's own name, unless that is a path inside an installed package
    (:func:`~hidlr_hf.peft.base_name.public_base_name`).
    """
    config, notes = mask_to_peft_config(mask, model)
    if base_model_name_or_path is None:
        base_model_name_or_path = public_base_name(getattr(config, "base_model_name_or_path", None))
    config.base_model_name_or_path = base_model_name_or_path
    os.makedirs(out_dir, exist_ok=True)
    if weights:
        reasons = list(not_exact)
        for e in mask["not_expressible"]:
            if e["kept_not_trained"]:
                reasons.append(
                    f"{len(e['kept_not_trained'])} trained tensor(s) are outside the peft config ({e['kind']}, e.g. "
                    f"{e['kept_not_trained'][0]}), so the adapter leaves them at their base values"
                )
        reasons += [f"tied weights: {n}" for n in notes if "are tied to others" in n]
        written = export_weights(out_dir, config, model, initial, base_model_name_or_path)
        reasons += written.pop("not_exact")
        mask["weights"] = {**written, "exact": not reasons, "not_exact": reasons}
    else:
        config.save_pretrained(out_dir)
        mask["weights"] = None
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
    if mask["weights"]:
        w = mask["weights"]
        lines.append(
            f"Weights: {w['file']} ({w['params']:,} parameters), "
            + ("reproduces the trained model on the base." if w["exact"] else "NOT an exact copy of the run: "
               + "; ".join(w["not_exact"]) + ".")
        )
    lines += [n for n in notes if n.startswith("Not expressible")]
    return "\n".join(lines)


def loading_lines(
    adapter_dir: str, num_labels: int, fallback_base: str | None = None, ignore_mismatched_sizes: bool = False
) -> list[str]:
    """The three lines of Python that load an exported sequence-classification adapter onto its base model.

    The base is the adapter config's ``base_model_name_or_path``, or ``fallback_base`` where it records none;
    ``ignore_mismatched_sizes`` for a base whose own classifier has another number of labels (the adapter brings
    the trained head).
    """
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as fh:
        base = json.load(fh).get("base_model_name_or_path") or fallback_base
    extra = ", ignore_mismatched_sizes=True" if ignore_mismatched_sizes else ""
    return [
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification",
        f"model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained({base!r}, "
        f"num_labels={int(num_labels)}{extra}), {adapter_dir!r})",
    ]
