"""``hidlr_state.json``: the Hi-DLR state of a run, with one writer and one reader.

Written next to every checkpoint (``on_save``) and next to the final model; read to resume a run
(:class:`~hidlr_hf.trainer.controller.HiDLRController`) and to export its adapter (:mod:`hidlr_hf.trainer.export`).
Plain JSON, nothing pickled (docs/METHOD.md section 11)::

    {"format": "hidlr-state/1",
     "engine": HiDLR.state_dict(),                      # rates, schedule of rounds, influence, history
     "settings": {"hidlr_every": ..., ...},             # every hidlr_* setting of the run
     "groups": [{"name", "param_names", "numel"}, ...], # one per Hi-DLR group, in the optimizer's order
     "frozen": null | {"step", "kept", "rank", "budget", "total_params", "trainable_params"},
     "model": {"class", "model_type", "num_layers", "base_model_prefix", "is_peft", "total_params",
               "name_or_path"}}                  # name_or_path: what the model was loaded from, for the adapter
"""

from __future__ import annotations

import glob
import json
import os
import re

from hidlr_hf.core.wrappers import unwrap_model
from hidlr_hf.errors import HiDLRError
from hidlr_hf.files import write_json_atomic

__all__ = ["STATE_FILE", "STATE_FORMAT", "find_state_file", "model_facts", "read_state", "run_state", "write_state"]

STATE_FILE = "hidlr_state.json"
STATE_FORMAT = "hidlr-state/1"


def run_state(engine, settings: dict, group_param_names: list, freeze_decision, model) -> dict:
    """The JSON-safe state of a run: the engine's state, the settings, the groups, the freeze, the model's facts."""
    return {
        "format": STATE_FORMAT,
        "engine": engine.state_dict(),
        "settings": dict(settings),
        "groups": [
            {"name": n, "param_names": p, "numel": size}
            for n, p, size in zip(engine.group_names, group_param_names, engine.group_sizes())
        ],
        "frozen": freeze_decision,
        "model": model_facts(model),
    }


def model_facts(model) -> dict:
    """What an export needs to know of the model (its class, type and depth), read without importing transformers."""
    inner = unwrap_model(model)
    config = getattr(inner, "config", getattr(model, "config", None))
    return {
        "class": type(inner).__name__,
        "model_type": getattr(config, "model_type", None),
        "num_layers": getattr(config, "num_hidden_layers", None),
        "base_model_prefix": getattr(inner, "base_model_prefix", None),
        "is_peft": hasattr(model, "peft_config"),
        "total_params": sum(p.numel() for p in model.parameters()),
        # The name the model was loaded from (a Hub id or the user's path), recorded while training: a model
        # re-loaded from a checkpoint for export carries the checkpoint's path instead.
        "name_or_path": getattr(config, "_name_or_path", None) or None,
    }


def write_state(folder: str, state: dict) -> str:
    """Write ``state`` to ``<folder>/hidlr_state.json`` atomically; returns the path."""
    return write_json_atomic(os.path.join(folder, STATE_FILE), state, indent=1, allow_nan=True)


def read_state(path: str) -> dict:
    """The state in ``path``, checked: the format, the engine's rates and influence, the groups, the settings.

    Raises :class:`HiDLRError` naming the file and what is wrong with it.
    """
    try:
        with open(path) as fh:
            state = json.load(fh)
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not a JSON object")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"format {state.get('format')!r}, expected {STATE_FORMAT!r}")
        engine, groups = state["engine"], state["groups"]
        engine["base_rates"], engine["influence"]["total"], engine["influence"]["count"]  # noqa: B018 - presence
        if not isinstance(state["settings"], dict):
            raise TypeError("settings is not a mapping")
        if len(groups) != len(engine["base_rates"]) or not all({"name", "param_names", "numel"} <= set(g) for g in groups):
            raise ValueError("its groups do not match the engine's rates")
        influence = engine["influence"]
        if not len(influence["total"]) == len(influence["count"]) == len(groups):
            raise ValueError("its influence does not match its groups")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HiDLRError(
            f"{path} is corrupt ({type(exc).__name__}: {exc}); use another checkpoint, or delete the file to resume "
            "with fresh Hi-DLR state."
        ) from exc
    return state


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
