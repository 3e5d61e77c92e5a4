"""The trained adapter: ``adapter_model.safetensors`` in peft's own format, for the config :mod:`.config` chose.

The weights are written by peft itself: the exported config is applied to a copy of the base model
(``get_peft_model``), every parameter that adapter trains takes the run's trained value, and
``PeftModel.save_pretrained`` writes the folder. Whatever the config type (LN tuning copies, BEFT biases, LoRA
factors, ``modules_to_save`` for the head), ``PeftModel.from_pretrained(base_model, folder)`` then rebuilds the
model the run ended with, provided that model was the base model plus the adapted parts, which is what honest
freezing (:mod:`hidlr_hf.core.freezing`) ensures. The base copy is the trained model with its LoRA layers and
peft wrappers removed and its kept parameters put back to their initial values (when known).

Values, in canonical names (:func:`hidlr_hf.core.wrappers.canonical_name`):

* a copy (LN tuning, ``modules_to_save``) or a LoRA factor takes the trained tensor of the same canonical name;
* a BEFT bias is added to the base bias, so it takes ``trained bias - initial bias``, which needs the initial
  value (kept by the trainer, :mod:`hidlr_hf.trainer.initial`); without it the base bias is the trained one and
  the adapter stores 0, which reproduces the run only on a base that already holds the trained bias.

The round trip is declared exact only when nothing stands in its way; every reason it is not is listed (see
:func:`export_weights`), and the exporter writes them into ``hidlr_mask.json`` under ``weights``.
"""

from __future__ import annotations

import copy
import json
import os

import torch
from torch import nn

from hidlr_hf.core.wrappers import ADAPTER_COPIES, BEFT_BIAS, canonical_name, unwrap_model

__all__ = ["WEIGHTS_FILE", "base_copy", "export_weights", "trained_values"]

WEIGHTS_FILE = "adapter_model.safetensors"


def trained_values(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters by canonical name; a trainable copy (``modules_to_save``, LN tuning) wins over the
    module it copies, whose ``original_module`` / ``base_layer`` still holds the value before training."""
    values: dict[str, torch.Tensor] = {}
    from_copy: dict[str, bool] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        cname = canonical_name(name)
        is_copy = any(part in ADAPTER_COPIES for part in name.split("."))
        if cname not in values or (is_copy and not from_copy[cname]):
            values[cname], from_copy[cname] = param.detach(), is_copy
    return values


def base_copy(model: nn.Module, initial: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of the bare model under ``model`` (no LoRA layers, no peft wrappers) on CPU, with the parameters named
    in ``initial`` (canonical names) put back to those values: the base model, when the others are untouched."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    def strip(module: nn.Module) -> None:
        # Replace every peft layer by the module it wraps (LoRA / BEFT / LN tuning layers, modules_to_save
        # wrappers), top down, so that a wrapper inside a wrapped module goes too.
        for name, child in list(module.named_children()):
            inner = child
            while isinstance(inner, (AuxiliaryTrainingWrapper, BaseTunerLayer)):
                inner = inner.original_module if isinstance(inner, AuxiliaryTrainingWrapper) else inner.get_base_layer()
            if inner is not child:
                setattr(module, name, inner)
            strip(inner)

    bare = copy.deepcopy(unwrap_model(model)).to("cpu")
    strip(bare)
    if hasattr(bare, "peft_config"):
        del bare.peft_config
    with torch.no_grad():
        for name, param in bare.named_parameters():
            value = (initial or {}).get(canonical_name(name))
            if value is not None and value.shape == param.shape:
                param.copy_(value.to(param.dtype))
    for param in bare.parameters():
        param.requires_grad_(True)  # get_peft_model decides what trains
    return bare


def export_weights(
    out_dir: str, config, model: nn.Module, initial: dict[str, torch.Tensor] | None = None,
    base_model_name_or_path: str | None = None,
) -> dict:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (peft's format) for ``config`` with the
    trained values of ``model``; return ``{"file", "tensors", "params", "exact", "not_exact"}``.

    ``initial`` maps canonical names of kept parameters to their values when training started (BEFT needs them).
    ``not_exact`` lists why ``PeftModel.from_pretrained(base, out_dir)`` would not rebuild ``model``, as far as this
    function can tell (the caller adds what it knows: groups that were not restored at the freeze, parameters the
    config cannot express).
    """
    from peft import get_peft_model

    initial = {canonical_name(n): t for n, t in (initial or {}).items()}
    trained = trained_values(model)
    base = base_copy(model, initial)
    # get_peft_model and save_pretrained take the base's name from the model itself: give it the public one.
    base.__dict__["name_or_path"] = base_model_name_or_path or ""
    if getattr(base, "config", None) is not None:
        base.config._name_or_path = base_model_name_or_path or ""
    config = copy.deepcopy(config)
    config.base_model_name_or_path = base_model_name_or_path
    config.inference_mode = False
    peft_model = get_peft_model(base, config)
    not_exact: list[str] = []
    missing_base: list[str] = []
    count, params = 0, 0
    with torch.no_grad():
        for path, module in peft_model.named_modules():
            # BEFT: the adapter adds its bias to the base layer's, so it stores the change from the initial bias.
            biases = getattr(module, BEFT_BIAS, None)
            if not isinstance(biases, nn.ParameterDict):
                continue
            cname = canonical_name(f"{path}.{BEFT_BIAS}.x")
            base_bias = module.get_base_layer().bias
            if cname not in initial:
                missing_base.append(cname)
            for param in biases.values():
                param.copy_((trained[cname].cpu() - base_bias.detach()).reshape(param.shape).to(param.dtype))
        for name, param in peft_model.named_parameters():
            if not param.requires_grad:
                continue
            count, params = count + 1, params + param.numel()
            if BEFT_BIAS in name.split("."):
                continue
            cname = canonical_name(name)
            value = trained.get(cname)
            if value is None or value.shape != param.shape:
                not_exact.append(f"the adapter's {name} has no trained counterpart in the model; it keeps its init")
                continue
            param.copy_(value.to(device=param.device, dtype=param.dtype))
    if missing_base:
        not_exact.append(
            f"the initial values of {len(missing_base)} BEFT bias(es) (e.g. {missing_base[0]}) are unknown, so the "
            "adapter stores 0 for them and the trained bias itself is not in the adapter"
        )
    peft_model.save_pretrained(out_dir)
    # peft saves inference_mode=true; PeftModel.from_pretrained sets it from is_trainable anyway, but the config must
    # stay usable with get_peft_model(base, PeftConfig.from_pretrained(out_dir)) to train the same parts again.
    path = os.path.join(out_dir, "adapter_config.json")
    with open(path, encoding="utf-8") as fh:
        saved = json.load(fh)
    saved["inference_mode"] = False
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(saved, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return {"file": WEIGHTS_FILE, "tensors": count, "params": params, "exact": not not_exact, "not_exact": not_exact}
