"""From a Hi-DLR run to a peft adapter: the glue between ``hidlr_state.json`` and :mod:`hidlr_hf.peft_export`.

Used by ``HiDLRTrainer.export_peft_config`` (in process) and by ``hidlr export RUN_OR_CHECKPOINT_DIR`` (from disk).
"""

from __future__ import annotations

import glob
import json
import os
import re

from .callbacks import STATE_FILE, _is_head
from .errors import HiDLRError
from .core.influence import InfluenceTracker
from .peft_export import build_mask, export_adapter
from .core.selection import GroupRecord, Selection, select


def mean_influence(engine_state: dict) -> list[float]:
    """Average influence per group from an engine state dict; NaN for a group never measured."""
    tracker = InfluenceTracker(len(engine_state["influence"]["total"]))
    tracker.load_state_dict(engine_state["influence"])
    return tracker.mean


def selection_from_state(state: dict, budget=None) -> Selection:
    """The run's selection: the one automatic PEFT made, or (with ``budget``, or when none was made) a new one."""
    groups = state["groups"]
    influence = mean_influence(state["engine"])
    records = [
        GroupRecord(g["name"], list(g["param_names"]), int(g["numel"]), float(v), _is_head(g["name"]))
        for g, v in zip(groups, influence)
    ]
    frozen = state.get("frozen")
    total = int(state.get("model", {}).get("total_params") or (frozen or {}).get("total_params") or sum(r.numel for r in records))
    if frozen and budget is None:
        return Selection(records, list(frozen["kept"]), list(frozen["rank"]), dict(frozen["budget"]), int(frozen["total_params"]))
    budget = budget if budget is not None else state.get("settings", {}).get("hidlr_trainable_budget")
    if budget is None:
        raise HiDLRError(
            "This run made no automatic-PEFT selection and no budget was given; pass --budget (e.g. 0.01, 150000 or "
            "top3) to rank its groups by influence now."
        )
    return select(records, budget, total)


def export_state(state: dict, model, out_dir: str, budget=None) -> str:
    """Write ``adapter_config.json`` and ``hidlr_mask.json`` for ``state`` on ``model``; returns the summary."""
    selection = selection_from_state(state, budget)
    facts = state.get("model", {})
    mask = build_mask(
        selection,
        model_type=facts.get("model_type"),
        num_layers=facts.get("num_layers"),
        scheme=state.get("settings", {}).get("hidlr_grouping", "module_type"),
        base_model_prefix=facts.get("base_model_prefix"),
    )
    return export_adapter(out_dir, mask, model)


def export_from_callback(callback, out_dir: str, budget=None) -> str:
    """``HiDLRTrainer.export_peft_config``: export from the running (or finished) training."""
    if callback is None or callback.engine is None:
        raise HiDLRError("There is no Hi-DLR state to export: train with Hi-DLR on (--hidlr true) before exporting.")
    _check_writable(out_dir)
    return export_state(callback.state(), callback.trainer.model, out_dir, budget)


def find_state_file(run_or_checkpoint: str) -> str:
    """``hidlr_state.json`` in a checkpoint folder, or in the newest ``checkpoint-*`` of a run folder."""
    direct = os.path.join(run_or_checkpoint, STATE_FILE)
    if os.path.isfile(direct):
        return direct
    checkpoints = glob.glob(os.path.join(run_or_checkpoint, "checkpoint-*", STATE_FILE))
    if checkpoints:
        return max(checkpoints, key=lambda p: int(re.search(r"checkpoint-(\d+)", p).group(1)))
    raise HiDLRError(
        f"No Hi-DLR state ({STATE_FILE}) in {run_or_checkpoint} or its checkpoint-* folders; export from a run trained "
        "with Hi-DLR (HiDLRTrainer or hidlr-glue) that saved a checkpoint or its final state."
    )


def load_state_file(path: str) -> dict:
    try:
        with open(path) as fh:
            state = json.load(fh)
        state["groups"], state["engine"]["influence"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HiDLRError(f"{path} is corrupt ({type(exc).__name__}: {exc}); export from another checkpoint.") from exc
    return state


def load_model_for(folder: str, state: dict):
    """The model structure of a checkpoint: the saved model (or base model plus adapter) with its weights."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if os.path.isfile(os.path.join(folder, "adapter_config.json")):
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(folder)
        base = _auto_model_class(state).from_pretrained(config.base_model_name_or_path)
        return PeftModel.from_pretrained(base, folder)
    if os.path.isfile(os.path.join(folder, "config.json")):
        config = AutoConfig.from_pretrained(folder)
        cls = _auto_model_class(state) if state.get("model", {}).get("class") else AutoModelForSequenceClassification
        return cls.from_pretrained(folder, config=config)
    raise HiDLRError(f"No model (config.json or adapter_config.json) in {folder}; export from a checkpoint folder.")


def _auto_model_class(state: dict):
    import transformers

    name = state.get("model", {}).get("class") or ""
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        return transformers.AutoModelForSequenceClassification
    return cls


def export_from_dir(run_or_checkpoint: str, out_dir: str, budget=None) -> str:
    """``hidlr export``: find the newest Hi-DLR state under ``run_or_checkpoint`` and export its adapter."""
    path = find_state_file(run_or_checkpoint)
    state = load_state_file(path)
    _check_writable(out_dir)
    model = load_model_for(os.path.dirname(path), state)
    return export_state(state, model, out_dir, budget)


def _check_writable(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".hidlr-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise HiDLRError(f"Cannot write to {out_dir} ({exc.strerror}); choose an output directory you can write.") from None
