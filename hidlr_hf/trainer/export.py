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
from hidlr_hf.peft.base_name import public_base_name

from .initial import INITIAL_FILE, read_initial_by_name
from .state import find_state_file, read_state

# What an export writes into its folder: peft's config, weights and model card (peft's save_pretrained writes a
# README.md), then the mask.
EXPORT_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "hidlr_mask.json")

__all__ = [
    "EXPORT_FILES", "export_from_dir", "export_state", "load_model_for", "model_folder", "mean_influence",
    "not_exact_reasons", "selection_from_state",
]


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


def not_exact_reasons(state: dict, budget=None) -> list[str]:
    """Why the run's trained model is not its base model plus the adapter's parts (empty when it is)."""
    frozen = state.get("frozen")
    if not frozen:
        return ["no group was frozen in this run (or by this checkpoint), so every group trained: the adapter's parts "
                "hold their trained values, but the rest of the trained model is not the base model"]
    if budget is not None:
        return [f"the selection was made again with budget {budget!r}, not the one the run froze with"]
    if not frozen.get("restored"):
        return ["the frozen groups kept the values they reached at the freeze instead of returning to their initial "
                "values (no initial copy: freeze set outside --hidlr_freeze_at, or a resume without "
                "hidlr_initial.safetensors)"]
    return []


def export_state(state: dict, model, out_dir: str, budget=None, initial=None,
                 selection: Optional[Selection] = None) -> str:
    """Write ``adapter_config.json``, ``adapter_model.safetensors`` and ``hidlr_mask.json`` for ``state`` on the
    trained ``model``; returns the summary. ``initial``: the run's initial values of kept parameters, by name.
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
    return export_adapter(
        out_dir, mask, model, initial=initial, base_model_name_or_path=public_base_name(facts.get("name_or_path")),
        not_exact=not_exact_reasons(state, budget),
    )


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


def _has_model(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("config.json", "adapter_config.json"))


def model_folder(run_or_checkpoint: str) -> str:
    """The folder to export from: ``run_or_checkpoint`` when it holds a model, else the run's last ``checkpoint-*``
    (transformers' ``get_last_checkpoint``), else ``run_or_checkpoint`` (which then fails with a clear error)."""
    if _has_model(run_or_checkpoint) or not os.path.isdir(run_or_checkpoint):
        return run_or_checkpoint
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(run_or_checkpoint) or run_or_checkpoint


def export_from_dir(run_or_checkpoint: str, out_dir: str, budget=None, force: bool = False) -> str:
    """``hidlr export``: export the adapter of a run folder (its final model, or its last checkpoint when it has no
    final model: the summary then says which) or of one checkpoint folder.

    Everything that can be refused is checked before anything is written: the state file, the budget, files an
    earlier export left in ``out_dir`` (overwritten only with ``force``), and whether ``out_dir`` is writable."""
    folder = model_folder(run_or_checkpoint)
    path = find_state_file(folder)
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
    folder = os.path.dirname(path)
    model = load_model_for(folder, state)
    initial_path = os.path.join(folder, INITIAL_FILE)
    initial = read_initial_by_name(initial_path) if os.path.isfile(initial_path) else None
    summary = export_state(state, model, out_dir, budget, initial=initial, selection=selection)
    if os.path.normpath(folder) != os.path.normpath(run_or_checkpoint):
        summary = f"{run_or_checkpoint} holds no final model; exported its last checkpoint, {folder}.\n" + summary
    return summary
