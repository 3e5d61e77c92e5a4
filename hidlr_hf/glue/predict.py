"""``--do_predict``: the unlabelled test split of a GLUE task, predicted and written as run_glue.py writes it.

The test split comes from ``--test_file``, else from the classic GLUE folder (``<TASK>/test.tsv``; MNLI
``test_matched.tsv`` and ``test_mismatched.tsv``), else from the Hub (``nyu-mll/glue``'s ``test`` splits, whose
labels are all -1 and are dropped, as run_glue.py does). Classic test files carry a header line, an ``index`` (QQP:
``id``) column and the text columns, but no label; CoLA's test file, unlike its train and dev files, has a header
(``index``, ``sentence``).

Each split is written to ``predict_results_<task>.txt`` (MNLI mismatched: ``predict_results_mnli-mm.txt``): a header
``index<TAB>prediction``, then one line per row: the label *name* for classification, the score with three
decimals for STS-B.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from hidlr_hf.errors import HiDLRError
from hidlr_hf.glue.data import (
    _CLASSIC, _datasets, _task_dir, check_table, default_glue_data_dir, hub_is_offline, load_hub_splits,
)
from hidlr_hf.glue.tasks import GlueTask

__all__ = ["TEST_FILES", "load_test_data", "predict_all", "read_classic_test", "results_name", "test_splits",
           "write_predictions"]

logger = logging.getLogger(__name__)

TEST_FILES = {"test": "test.tsv", "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}
"""Split name -> file of the classic layout."""

_INDEX_COLUMNS = ("index", "id", "idx")  # QQP's test file calls its index "id"


def test_splits(task: GlueTask) -> tuple[str, ...]:
    """The task's test splits: ``("test",)``, or MNLI's ``("test_matched", "test_mismatched")``."""
    return ("test_matched", "test_mismatched") if task.name == "mnli" else ("test",)


def results_name(task: GlueTask, split: str) -> str:
    """``predict_results_<task>.txt``; MNLI's mismatched split is ``mnli-mm`` (run_glue.py's names)."""
    return f"predict_results_{'mnli-mm' if split == 'test_mismatched' else task.name}.txt"


def _test_text_columns(task: GlueTask) -> tuple[str, ...]:
    fmt = _CLASSIC[task.name]
    # CoLA's train/dev files have no header (columns by position); its test file names the text "sentence".
    return ("sentence",) if not fmt.has_header else tuple(fmt.text_columns)


def _build(task: GlueTask, texts: list[list[str]], idx: list[int]) -> "datasets.Dataset":  # noqa: F821
    ds = _datasets()
    columns = {key: col for key, col in zip(task.text_keys, texts)}
    columns["idx"] = idx
    features = {key: ds.Value("string") for key in task.text_keys}
    features["idx"] = ds.Value("int32")
    return ds.Dataset.from_dict(columns, features=ds.Features(features))


def read_classic_test(task: GlueTask, path: str | os.PathLike) -> "datasets.Dataset":  # noqa: F821
    """Read an unlabelled classic GLUE test file (header, ``index``, text columns): the task's text columns and
    ``idx``, no ``label``."""
    path = Path(path)
    wanted = _test_text_columns(task)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
        if header is None:
            raise HiDLRError(f"{path} is empty; it should be a GLUE {task.dir_name} test file with a header line.")
        header = [name.strip() for name in header]
        missing = [name for name in wanted if name not in header]
        if missing:
            raise HiDLRError(
                f"{path} has no column {', '.join(map(repr, missing))} in its header {header!r}; a GLUE "
                f"{task.dir_name} test file needs {', '.join(map(repr, wanted))} (and an index column)."
            )
        text_at = [header.index(name) for name in wanted]
        index_at = next((header.index(n) for n in _INDEX_COLUMNS if n in header), None)
        texts: list[list[str]] = [[] for _ in wanted]
        idx: list[int] = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise HiDLRError(
                    f"{path}, line {reader.line_num}: expected {len(header)} tab-separated fields, found {len(row)}; "
                    "fix or remove that row."
                )
            for col, at in zip(texts, text_at):
                col.append(row[at])
            try:
                idx.append(int(row[index_at]) if index_at is not None else len(idx))
            except ValueError:
                raise HiDLRError(f"{path}, line {reader.line_num}: index {row[index_at]!r} is not an integer.") from None
    if not idx:
        raise HiDLRError(f"{path} has no data rows; it should hold the {task.dir_name} test examples.")
    return _build(task, texts, idx)


def _read_test_file(task: GlueTask, path: str | os.PathLike, cache_dir) -> "datasets.Dataset":  # noqa: F821
    """``--test_file``: a classic ``.tsv`` test file, or a ``.csv`` / ``.json`` / ``.jsonl`` table with the task's
    text columns (a ``label`` column, if any, is ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HiDLRError(f"Test file not found: {path}; check the path given to --test_file.")
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return read_classic_test(task, path)
    builder = {".csv": "csv", ".json": "json", ".jsonl": "json"}.get(suffix)
    if builder is None:
        raise HiDLRError(f"Cannot read {path}: use a .tsv, .csv, .json or .jsonl file for --test_file.")
    try:
        table = _datasets().load_dataset(builder, data_files=str(path), cache_dir=cache_dir)["train"]
    except Exception as err:  # parse errors surface wrapped and far from the file name
        raise HiDLRError(f"Could not read {path} as {builder.upper()} ({type(err).__name__}: {err}); fix the file.") from err
    check_table(table, tuple(task.text_keys), path, f"a {task.name} test file")
    columns = table.to_dict()
    texts = [[v if isinstance(v, str) else str(v) for v in columns[key]] for key in task.text_keys]
    idx = [int(v) for v in columns["idx"]] if "idx" in columns else list(range(table.num_rows))
    return _build(task, texts, idx)


def _from_hub(task: GlueTask, cache_dir) -> dict:
    instead = f"--test_file or --data_dir with {task.dir_name}/test.tsv"
    loaded = load_hub_splits(task, cache_dir, test_splits(task), instead)
    # The Hub's test labels are all -1 (hidden); run_glue.py drops the column.
    return {split: table.remove_columns([c for c in ("label",) if c in table.column_names])
            for split, table in loaded.items()}


def load_test_data(task: GlueTask, data_args, cache_dir=None) -> dict:
    """The task's test splits (``{split: Dataset}`` with text columns and ``idx``), cut to ``--max_predict_samples``.

    Sources, first match wins: ``--test_file`` (one file: the first test split; MNLI's mismatched split is then
    left out), ``--data_dir`` (``<TASK>/test.tsv``), the classic GLUE folder when offline and no data file was
    given, the Hub when online.
    """
    if data_args.test_file is not None:
        splits = {test_splits(task)[0]: _read_test_file(task, data_args.test_file, cache_dir)}
    else:
        data_dir = data_args.data_dir
        own_files = data_args.train_file is not None or data_args.validation_file is not None
        if data_dir is None and own_files:
            raise HiDLRError("--do_predict with --train_file/--validation_file needs --test_file (or --data_dir)")
        if data_dir is None and hub_is_offline():
            found = default_glue_data_dir()
            if found is None:
                raise HiDLRError(
                    f"--do_predict offline needs the {task.name} test data: pass --test_file, or --data_dir with "
                    f"{task.dir_name}/{TEST_FILES[test_splits(task)[0]]}"
                )
            data_dir = str(found)
        if data_dir is not None:
            folder = _task_dir(task, Path(data_dir).expanduser())
            splits = {}
            for split in test_splits(task):
                path = folder / TEST_FILES[split]
                if not path.is_file():
                    raise HiDLRError(
                        f"--do_predict: GLUE test file not found: {path}; pass --test_file, or a --data_dir holding "
                        f"{task.dir_name}/{TEST_FILES[split]}, or --do_predict false."
                    )
                splits[split] = read_classic_test(task, path)
        else:
            splits = _from_hub(task, cache_dir)
    limit = data_args.max_predict_samples
    if limit is not None:
        splits = {s: d.select(range(min(limit, len(d)))) for s, d in splits.items()}
    return splits


def write_predictions(task: GlueTask, predictions, path: str | os.PathLike) -> None:
    """Write ``predictions`` (logits or scores, one row per example) in run_glue.py's format: ``index<TAB>prediction``,
    then the label name (classification) or the score with three decimals (regression)."""
    preds = predictions[0] if isinstance(predictions, tuple) else predictions
    preds = np.asarray(preds)
    values = np.squeeze(preds, axis=-1) if task.is_regression and preds.ndim > 1 else preds
    if not task.is_regression:
        values = np.argmax(values, axis=-1) if values.ndim > 1 else values.astype(int)
    with open(path, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        for index, item in enumerate(values.reshape(-1)):
            if task.is_regression:
                f.write(f"{index}\t{float(item):3.3f}\n")
            else:
                f.write(f"{index}\t{task.label_names[int(item)]}\n")


def predict_all(trainer, task: GlueTask, datasets: dict, output_dir: str) -> list[str]:
    """Predict every test split in ``datasets`` (tokenized) and write its results file (main process only); returns
    the files written."""
    written = []
    for split in test_splits(task):
        if split not in datasets:
            continue
        output = trainer.predict(datasets[split], metric_key_prefix="predict")
        if trainer.is_world_process_zero():
            path = os.path.join(output_dir, results_name(task, split))
            write_predictions(task, output.predictions, path)
            logger.info("Predictions on %s %s (%d rows): %s", task.name, split, len(datasets[split]), path)
            written.append(path)
    return written
