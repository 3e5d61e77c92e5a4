"""The output folder of a ``hidlr-glue`` run: an earlier run there is resumed when asked, and otherwise refused.

run_glue.py looks for the last ``checkpoint-*`` (``transformers.trainer_utils.get_last_checkpoint``) in an output
folder it is asked to train in, and ``--overwrite_output_dir`` starts over. ``hidlr-glue`` does the same with one
difference: it resumes only when ``--resume_from_checkpoint`` asks it to, so a run typed twice never continues (or
overwrites) the first one unnoticed. Nothing here deletes a file; starting over replaces the earlier run's files
of the same name as the new run writes its own.
"""

from __future__ import annotations

import logging
import os
import re

from hidlr_hf.errors import HiDLRError

__all__ = ["RUN_FILES", "earlier_run", "prepare_output_dir"]

logger = logging.getLogger(__name__)

# Files a training run leaves in its output folder (the Trainer's, peft's and Hi-DLR's); any of them, or a
# checkpoint-* folder, means the folder holds an earlier run.
RUN_FILES = (
    "trainer_state.json", "training_args.bin", "config.json", "model.safetensors", "pytorch_model.bin",
    "adapter_config.json", "adapter_model.safetensors", "all_results.json", "train_results.json",
    "eval_results.json", "hidlr_state.json", "hidlr_report.png",
)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's checkpoint folders, as get_last_checkpoint reads them


def earlier_run(folder: str) -> list[str]:
    """What in ``folder`` an earlier run wrote: its ``checkpoint-*`` folders (newest first), then its files."""
    if not os.path.isdir(folder):
        return []
    names = os.listdir(folder)
    checkpoints = [n for n in names if _CHECKPOINT.match(n) and os.path.isdir(os.path.join(folder, n))]
    checkpoints.sort(key=lambda n: int(_CHECKPOINT.match(n).group(1)), reverse=True)
    return checkpoints + [n for n in RUN_FILES if n in names]


def prepare_output_dir(training_args) -> None:
    """Check ``--output_dir`` against an earlier run before anything is loaded or written.

    Training in a folder that holds an earlier run needs ``--resume_from_checkpoint`` (``true``: its last
    checkpoint, which is then set as the checkpoint to resume) or ``--overwrite_output_dir``; otherwise it is a
    :class:`HiDLRError` that says how to proceed. A checkpoint path that is not a folder is refused too. An
    evaluation alone writes only its results and is never refused (as in run_glue.py).
    """
    out = training_args.output_dir
    resume = training_args.resume_from_checkpoint
    overwrite = bool(getattr(training_args, "overwrite_output_dir", False))
    if not training_args.do_train:
        return
    if isinstance(resume, str) and not os.path.isdir(resume):
        raise HiDLRError(
            f"--resume_from_checkpoint {resume} is not a folder; pass a checkpoint-* folder, or true for the last "
            "checkpoint in --output_dir."
        )
    found = earlier_run(out)
    checkpoints = [n for n in found if _CHECKPOINT.match(n)]
    if resume is True:
        if not checkpoints:
            held = f"holds no checkpoint-* folder{' (only ' + ', '.join(found) + ')' if found else ''}"
            fix = (
                "drop it and pass --overwrite_output_dir to start over there" if found
                else "drop it to start a new run"
            )
            raise HiDLRError(
                f"--resume_from_checkpoint true, but --output_dir {out} {held} to resume from; {fix}, or pass a "
                "checkpoint folder to --resume_from_checkpoint."
            )
        training_args.resume_from_checkpoint = os.path.join(out, checkpoints[0])
        logger.info("Resuming from %s, the last checkpoint in %s.", training_args.resume_from_checkpoint, out)
        return
    if not found or resume is not None:
        return
    if overwrite:
        logger.warning(
            "--overwrite_output_dir: starting over in %s; this run's files replace the earlier run's of the same name%s.",
            out,
            f", and its {', '.join(checkpoints)} stay (--resume_from_checkpoint true later picks the highest step)"
            if checkpoints else "",
        )
        return
    resume_hint = f"--resume_from_checkpoint true to resume from {checkpoints[0]}, " if checkpoints else ""
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    raise HiDLRError(
        f"--output_dir {out} already holds a run ({shown}); pass {resume_hint}--overwrite_output_dir to start over "
        "there, or another --output_dir."
    )
