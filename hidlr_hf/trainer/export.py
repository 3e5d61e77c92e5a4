"""From a Hi-DLR run to a peft adapter: ``hidlr_state.json`` (or the running trainer) -> selection -> adapter files.

Used by ``HiDLRTrainer.export_peft_config`` (in process) and by ``hidlr export RUN_OR_CHECKPOINT_DIR`` (from disk).
The mask and the peft config themselves are :mod:`hidlr_hf.peft`'s (docs/METHOD.md section 12).
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

from hidlr_hf.core.influence import InfluenceTracker
from hidlr_hf.core.selection import Selection, group_records, select
from hidlr_hf.errors import HiDLRError
from hidlr_hf.files import check_writable_dir
from hidlr_hf.peft import build_mask, export_adapter

from .state import find_state_file, read_state

# What an export writes into its folder (peft's config, then the mask).
EXPORT_FILES = ("adapter_config.json", "hidlr_mask.json")

__all__ = ["EXPORT_FILES", "export_from_dir", "export_state", "load_model_for", "mean_influence", "selection_from_state"]


def mean_influence(engine_state: dict) -> list[float]:
    """Average influence per group from an engine state dict; NaN for a group never measured."""
    tracker = InfluenceTracker(len(engine_state["influence"]["total"]))
    tracker.load_state_dict(engine_state["influence"])
    return tracker.mean


def selection_from_state(state: dict, budget=None) -> Selection:
    """The run's selection: the one automatic PEFT made, or (with ``budget``, or when none was made) a new one."""
    groups = state["groups"]
    records = group_records(
        [g["name"] for g in groups], [g["param_names"] for g in groups], [g["numel"] for g in groups],
        mean_influence(state["engine"]),
    )
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


def export_state(state: dict, model, out_dir: str, budget=None, selection: Optional[Selection] = None) -> str:
    """Write ``adapter_config.json`` and ``hidlr_mask.json`` for ``state`` on ``model``; returns the summary.

    ``selection`` (from :func:`selection_from_state`) when the caller has made it already, else it is made here."""
    selection = selection if selection is not None else selection_from_state(state, budget)
    facts = state.get("model", {})
    mask = build_mask(
        selection,
        model_type=facts.get("model_type"),
        num_layers=facts.get("num_layers"),
        scheme=state.get("settings", {}).get("hidlr_grouping", "module_type"),
        base_model_prefix=facts.get("base_model_prefix"),
    )
    return export_adapter(out_dir, mask, model)


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


def export_from_dir(run_or_checkpoint: str, out_dir: str, budget=None, force: bool = False) -> str:
    """``hidlr export``: find the newest Hi-DLR state under ``run_or_checkpoint`` and export its adapter.

    Everything that can be refused is checked before anything is written: the state file, the budget, files an
    earlier export left in ``out_dir`` (overwritten only with ``force``), and whether ``out_dir`` is writable."""
    path = find_state_file(run_or_checkpoint)
    state = read_state(path)
    # The selection's warnings (groups never measured, ...) are shown only if the export goes ahead, so a refusal
    # stays one line on stderr.
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            selection = selection_from_state(state, budget)
    except HiDLRError:
        raise  # a bad budget, or no budget where one is needed: the message says what to pass
    except (KeyError, IndexError, TypeError, ValueError) as exc:  # parts read_state does not check
        raise HiDLRError(f"{path} is corrupt ({type(exc).__name__}: {exc}); export from another checkpoint.") from exc
    existing = [name for name in EXPORT_FILES if os.path.exists(os.path.join(out_dir, name))]
    if existing and not force:
        raise HiDLRError(
            f"--out {out_dir} already holds {', '.join(existing)}; pass --force to overwrite, or another --out."
        )
    check_writable_dir(out_dir, "--out")
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    model = load_model_for(os.path.dirname(path), state)
    return export_state(state, model, out_dir, selection=selection)
