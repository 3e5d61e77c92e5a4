"""The model card (``README.md``) a ``hidlr-glue`` run writes next to its model, as run_glue.py does, with Hi-DLR's
settings and final per-group rates in it.

run_glue.py ends with ``trainer.create_model_card(finetuned_from=..., tasks="text-classification", language="en",
dataset_tags="glue", dataset_args=<task>, dataset="GLUE <TASK>")``. The same call is made here, with a ``hidlr`` tag
and the base model's public name (a Hub id, never a folder inside an installed package); a "Hi-DLR" section is then
added to the card: the grouping, how often rates were probed, and each group's final rates and influence.
"""

from __future__ import annotations

import os

from hidlr_hf.glue.report import group_rows
from hidlr_hf.glue.tasks import GLUE_TASKS, GlueTask
from hidlr_hf.peft.base_name import public_base_name

__all__ = ["CARD_FILE", "card_kwargs", "hidlr_section", "write_model_card"]

CARD_FILE = "README.md"  # the name the Trainer (and the Hub) use for a model card
HIDLR_TAG = "hidlr"


def card_kwargs(task: GlueTask, model_name_or_path) -> dict:
    """run_glue.py's arguments to ``Trainer.create_model_card`` for a GLUE task, plus the ``hidlr`` tag."""
    kwargs = {"finetuned_from": public_base_name(model_name_or_path), "tasks": "text-classification", "tags": [HIDLR_TAG]}
    if task.name in GLUE_TASKS:  # your own data (hidlr_hf.glue.custom) gets no dataset, as in run_glue.py
        kwargs.update(language="en", dataset_tags="glue", dataset_args=task.name, dataset=f"GLUE {task.name.upper()}")
    return {k: v for k, v in kwargs.items() if v is not None}


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def hidlr_section(trainer) -> str:
    """The card's "Hi-DLR" section: settings, probe rounds and each group's final rates (or that Hi-DLR was off)."""
    args = trainer.args
    engine = getattr(trainer, "hidlr", None)
    lines = ["", "## Hi-DLR learning rates", ""]
    if engine is None:
        lines.append("Hi-DLR was off for this run (`--hidlr false`): every group trained at the base learning rate.")
        return "\n".join(lines) + "\n"
    lines.append(
        f"Trained with Hi-DLR (hidlr-hf): per-group learning rates, grouping `{args.hidlr_grouping}`, probed every "
        f"`{args.hidlr_every}` steps; {engine.num_rounds} probe rounds ({engine.discarded_rounds} discarded), base "
        f"learning rate {args.learning_rate:g}."
    )
    freeze = trainer.hidlr_controller.freeze_decision
    if freeze:
        lines.append(f"Automatic PEFT froze the groups marked frozen at step {freeze.get('step')}.")
    header, rows = group_rows(engine, freeze)
    lines += [
        "",
        "Final rates per group (base rate: the rate Hi-DLR set for the group, before the learning-rate schedule; "
        "lr in force: at the last step):",
        "",
        _markdown_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


def write_model_card(trainer, task: GlueTask, model_name_or_path) -> str | None:
    """Write ``<output_dir>/README.md`` (main process only) and return its path; None on the other processes."""
    trainer.create_model_card(**card_kwargs(task, model_name_or_path))
    if not trainer.is_world_process_zero():
        return None
    path = os.path.join(trainer.args.output_dir, CARD_FILE)
    with open(path, "a", encoding="utf-8") as f:
        f.write(hidlr_section(trainer))
    return path
