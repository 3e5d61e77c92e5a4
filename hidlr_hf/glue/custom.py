"""Data other than GLUE, as run_glue.py takes it without ``--task_name``: your own csv / json files, or a Hub dataset.

* ``--train_file`` / ``--validation_file`` (and ``--test_file`` for ``--do_predict``): ``.csv`` or ``.json`` /
  ``.jsonl``, read with ``datasets``' loaders; or ``--dataset_name`` [``--dataset_config_name``]: any Hub dataset
  with ``train`` / ``validation`` (/ ``test``) splits.
* The label column is ``label``. Float labels mean regression (one output); otherwise the classes are the sorted
  distinct labels of the training data (a ``ClassLabel`` column keeps its own names and order).
* The text columns are ``sentence1`` and ``sentence2`` when both exist, else the first two other columns, else the
  only other column (one sentence).

The data's description becomes a :class:`~hidlr_hf.glue.tasks.GlueTask` named ``custom``, so training, metrics
(accuracy; regression: mse, Pearson and Spearman), prediction files and reports work as for a GLUE task.
"""

from __future__ import annotations

import logging
import os

from hidlr_hf.errors import HiDLRError
from hidlr_hf.glue.data import _datasets
from hidlr_hf.glue.tasks import GlueTask

__all__ = ["CUSTOM_TASK_NAME", "describe", "load_custom"]

logger = logging.getLogger(__name__)

CUSTOM_TASK_NAME = "custom"  # in output file names: predict_results_custom.txt, runs/custom
_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


def _builder(path: str, flag: str) -> str:
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in _BUILDERS:
        raise HiDLRError(f"{flag} {path}: use a .csv, .json or .jsonl file (or pass --task_name for GLUE's .tsv files)")
    if not os.path.isfile(path):
        raise HiDLRError(f"{flag} {path} not found; check the path")
    return _BUILDERS[suffix]


def _text_columns(columns: list[str]) -> tuple[str, ...]:
    others = [c for c in columns if c != "label"]
    if "sentence1" in others and "sentence2" in others:
        return ("sentence1", "sentence2")
    if not others:
        raise HiDLRError("the data has no text column besides 'label'; add a 'sentence' column (or sentence1/sentence2)")
    return tuple(others[:2])


def describe(train) -> GlueTask:
    """The task the training data describes: text columns, classes (or regression), metrics."""
    ds = _datasets()
    if "label" not in train.column_names:
        raise HiDLRError(f"the training data has no 'label' column (it has {train.column_names}); name the label column 'label'")
    feature = train.features["label"]
    text_keys = _text_columns(train.column_names)
    if isinstance(feature, ds.Value) and feature.dtype.startswith("float"):
        return GlueTask(CUSTOM_TASK_NAME, CUSTOM_TASK_NAME, text_keys, None, True, 1,
                        ("mse", "pearson", "spearmanr"), "pearson")
    if isinstance(feature, ds.ClassLabel):
        names = tuple(feature.names)
    else:
        names = tuple(str(v) for v in sorted(v for v in train.unique("label") if v is not None))
    if len(names) < 2:
        raise HiDLRError(f"the training data has {len(names)} distinct label(s) {list(names)}; a classifier needs two or more")
    return GlueTask(CUSTOM_TASK_NAME, CUSTOM_TASK_NAME, text_keys, names, False, len(names), ("accuracy",), "accuracy")


def _conform(task: GlueTask, table, split: str):
    """``table`` with the task's text columns, ``label`` as class ids (or floats) when present, and ``idx``."""
    ds = _datasets()
    missing = [c for c in task.text_keys if c not in table.column_names]
    if missing:
        raise HiDLRError(f"the {split} data has no column {', '.join(map(repr, missing))} (it has {table.column_names})")
    keep = list(task.text_keys) + (["label"] if "label" in table.column_names else [])
    table = table.select_columns(keep)
    if "label" in keep and split == "test":
        table = table.remove_columns("label")  # run_glue.py predicts without labels (a Hub test split's are -1)
    elif "label" in keep and task.is_regression:
        table = table.cast_column("label", ds.Value("float32"))  # integer scores in a dev file: MSE needs floats
    elif "label" in keep and not isinstance(table.features["label"], ds.ClassLabel):
        ids = {name: i for i, name in enumerate(task.label_names)}

        def to_id(batch):
            try:
                return {"label": [ids[str(v)] for v in batch["label"]]}
            except KeyError as err:
                raise HiDLRError(
                    f"the {split} data has the label {err.args[0]!r}, which the training data never has "
                    f"({', '.join(task.label_names)}); fix that row or add examples of it to the training data"
                ) from None

        table = table.map(to_id, batched=True, features=ds.Features(
            {**{k: table.features[k] for k in task.text_keys}, "label": ds.ClassLabel(names=list(task.label_names))}))
    return table.add_column("idx", list(range(table.num_rows)))


def load_custom(data_args, do_predict: bool = False, cache_dir=None):
    """``(task, splits)`` for ``--train_file`` / ``--validation_file`` / ``--test_file`` or ``--dataset_name``;
    ``splits`` has ``train``, ``validation`` and (with ``do_predict``) ``test``, each when the source has it,
    cut to the ``--max_*_samples``."""
    ds = _datasets()
    if data_args.dataset_name is not None:
        try:
            loaded = ds.load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir)
        except Exception as err:  # network, auth, unknown name: say what to do instead
            raise HiDLRError(
                f"could not load the Hub dataset {data_args.dataset_name!r}"
                f"{' config ' + repr(data_args.dataset_config_name) if data_args.dataset_config_name else ''} "
                f"({type(err).__name__}: {err}); check the name and the network, or pass --train_file"
            ) from err
        raw = {s: loaded[s] for s in ("train", "validation", "test") if s in loaded and (s != "test" or do_predict)}
    else:
        files = {"train": (data_args.train_file, "--train_file"), "validation": (data_args.validation_file,
                 "--validation_file"), "test": (data_args.test_file if do_predict else None, "--test_file")}
        raw = {}
        for split, (path, flag) in files.items():
            if path is None:
                continue
            try:
                raw[split] = ds.load_dataset(_builder(path, flag), data_files=str(path), cache_dir=cache_dir)["train"]
            except HiDLRError:
                raise
            except Exception as err:  # pandas / pyarrow parse errors surface wrapped and far from the file name
                raise HiDLRError(f"could not read {flag} {path} ({type(err).__name__}: {err}); fix the file") from err
    if "train" not in raw:
        raise HiDLRError("your own data needs a training split to read the labels from: pass --train_file, or a "
                         "--dataset_name with a 'train' split")
    task = describe(raw["train"])
    splits = {split: _conform(task, table, split) for split, table in raw.items()}
    kind = "regression" if task.is_regression else f"{task.num_labels} classes {list(task.label_names)}"
    logger.info("Own data: text columns %s, %s.", ", ".join(task.text_keys), kind)
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    for split, limit in limits.items():
        if limit is not None and split in splits and limit < len(splits[split]):
            splits[split] = splits[split].select(range(limit))
    return task, ds.DatasetDict(splits)
