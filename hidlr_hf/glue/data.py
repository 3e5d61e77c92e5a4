"""Load GLUE splits from the classic ``glue_data`` layout, from your own files, or from the Hub.

Whatever the source, a split comes back with the Hub's schema (``nyu-mll/glue``): the task's text
columns, ``label`` (a ``ClassLabel`` in the Hub's order, or ``float32`` for STS-B) and ``idx``
(``int32``, the 0-based row number). Code downstream therefore never needs to know where data came from.

Classic files are read with the standard ``csv`` module (tab-separated, ``QUOTE_NONE``: several GLUE
rows contain unbalanced double quotes, which a quoting parser would merge with the next lines).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hidlr_hf.errors import HiDLRError
from hidlr_hf.glue.tasks import HUB_DATASET, GlueTask, get_task

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # datasets is an optional dependency (the ``glue`` extra), imported when needed
    import datasets

# Split name -> file of the classic layout.
SPLIT_FILES = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
}

_OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class _ClassicFormat:
    """Where a task's fields sit in its classic file.

    With a header, ``text_columns``/``label_column`` are header names; without one (CoLA), they are
    0-based field positions and ``n_fields`` is the required row width.
    """

    text_columns: tuple  # one per task.text_keys, same order
    label_column: str | int
    has_header: bool = True
    n_fields: int | None = None


_CLASSIC: dict[str, _ClassicFormat] = {
    # CoLA: source, label, original judgement ("*" or empty), sentence; no header.
    "cola": _ClassicFormat((3,), 1, has_header=False, n_fields=4),
    "sst2": _ClassicFormat(("sentence",), "label"),
    "mrpc": _ClassicFormat(("#1 String", "#2 String"), "Quality"),
    "qqp": _ClassicFormat(("question1", "question2"), "is_duplicate"),
    "stsb": _ClassicFormat(("sentence1", "sentence2"), "score"),
    # MNLI dev files carry label1..label5 before gold_label, train only label1: go by name.
    "mnli": _ClassicFormat(("sentence1", "sentence2"), "gold_label"),
    "qnli": _ClassicFormat(("question", "sentence"), "label"),
    "rte": _ClassicFormat(("sentence1", "sentence2"), "label"),
    "wnli": _ClassicFormat(("sentence1", "sentence2"), "label"),
}


def _datasets():
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Loading GLUE data needs the `datasets` package; install it with `pip install hidlr-hf[glue]`."
        ) from err
    return datasets


def glue_features(task: str | GlueTask) -> "datasets.Features":
    """The Hub's ``Features`` for ``task``: text columns, ``label`` and ``idx``."""
    t = get_task(task)
    ds = _datasets()
    features = {key: ds.Value("string") for key in t.text_keys}
    features["label"] = ds.Value("float32") if t.is_regression else ds.ClassLabel(names=list(t.label_names))
    features["idx"] = ds.Value("int32")
    return ds.Features(features)


def _layout(t: GlueTask) -> str:
    """``"RTE/train.tsv and RTE/dev.tsv"``: the files a classic folder needs for ``t``."""
    files = [f"{t.dir_name}/{SPLIT_FILES[s]}" for s in ("train",) + t.eval_splits]
    return ", ".join(files[:-1]) + " and " + files[-1]


def _check_split(t: GlueTask, split: str) -> None:
    valid = ("train",) + t.eval_splits
    if split not in valid:
        raise HiDLRError(f"GLUE task {t.name!r} has no split {split!r}; use one of {', '.join(valid)}.")


# ----------------------------------------------------------------------------------------- labels


def _label_parser(t: GlueTask):
    """A function ``raw -> label`` that raises ``ValueError`` (with the reason) on a bad value."""
    if t.is_regression:

        def parse(raw):
            if isinstance(raw, bool) or raw is None:
                raise ValueError(f"score {raw!r} is not a number")
            try:
                value = float(raw.strip() if isinstance(raw, str) else raw)
            except (TypeError, ValueError):
                raise ValueError(f"score {raw!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"score {raw!r} is not a finite number")
            return value

        return parse

    by_name = {name.lower(): i for i, name in enumerate(t.label_names)}
    n = t.num_labels
    expected = f"one of {', '.join(t.label_names)} or an integer 0..{n - 1}"

    def parse(raw):
        if isinstance(raw, str):
            text = raw.strip()
            hit = by_name.get(text.lower())
            if hit is not None:
                return hit
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"label {raw!r} is not {expected}") from None
        elif isinstance(raw, bool) or raw is None:
            raise ValueError(f"label {raw!r} is not {expected}")
        else:
            try:
                value = int(raw)
                exact = value == raw
            except (TypeError, ValueError, OverflowError):
                exact = False
            if not exact:
                raise ValueError(f"label {raw!r} is not {expected}")
        if not 0 <= value < n:
            raise ValueError(f"label {raw!r} is not {expected}")
        return value

    return parse


def _build(t: GlueTask, texts: list[list], labels: list) -> "datasets.Dataset":
    ds = _datasets()
    columns = {key: col for key, col in zip(t.text_keys, texts)}
    columns["label"] = labels
    columns["idx"] = list(range(len(labels)))
    return ds.Dataset.from_dict(columns, features=glue_features(t))


# ------------------------------------------------------------------------------------ classic files


def _read_classic_file(t: GlueTask, path: Path) -> "datasets.Dataset":
    """Parse one classic GLUE ``.tsv`` file of task ``t`` into the Hub schema."""
    fmt = _CLASSIC[t.name]
    parse_label = _label_parser(t)
    texts: list[list[str]] = [[] for _ in t.text_keys]
    labels: list = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if fmt.has_header:
            header = next(reader, None)
            while header == []:  # tolerate blank lines before the header
                header = next(reader, None)
            if header is None:
                raise HiDLRError(
                    f"{path} is empty; it should be a GLUE {t.dir_name} file with a header line and data rows."
                )
            header = [name.strip() for name in header]
            wanted = tuple(fmt.text_columns) + (fmt.label_column,)
            missing = [name for name in wanted if name not in header]
            if missing:
                raise HiDLRError(
                    f"{path} has no column {', '.join(map(repr, missing))} in its header {header!r}; "
                    f"a classic GLUE {t.dir_name} file needs {', '.join(map(repr, wanted))}."
                )
            width = len(header)
            text_at = [header.index(name) for name in fmt.text_columns]
            label_at = header.index(fmt.label_column)
        else:
            width = fmt.n_fields
            text_at = list(fmt.text_columns)
            label_at = fmt.label_column
        cols = list(zip(texts, text_at))
        for row in reader:
            if len(row) != width:
                if not row:  # blank line (e.g. at the end of the file)
                    continue
                raise HiDLRError(
                    f"{path}, line {reader.line_num}: expected {width} tab-separated fields, found {len(row)}; "
                    "fix or remove that row (the classic GLUE format has one example per line)."
                )
            for col, at in cols:
                col.append(row[at])
            try:
                labels.append(parse_label(row[label_at]))
            except ValueError as err:
                raise HiDLRError(f"{path}, line {reader.line_num}: {err}; fix or remove that row.") from None
    if not labels:
        raise HiDLRError(f"{path} has no data rows; it should hold the {t.dir_name} examples, one per line.")
    return _build(t, texts, labels)


def _task_dir(t: GlueTask, data_dir: Path) -> Path:
    folder = data_dir / t.dir_name
    # Accept the task folder itself (``--data_dir glue_data/RTE``), a common slip.
    if not folder.is_dir() and data_dir.name.lower() == t.dir_name.lower():
        return data_dir
    return folder


def read_classic_split(task: str | GlueTask, split: str, data_dir: str | os.PathLike) -> "datasets.Dataset":
    """Read ``split`` of ``task`` from ``<data_dir>/<TASK>/<file>.tsv`` (the classic GLUE layout).

    ``split`` is ``"train"`` (``train.tsv``), ``"validation"`` (``dev.tsv``), or for MNLI
    ``"validation_matched"`` / ``"validation_mismatched"`` (``dev_matched.tsv`` / ``dev_mismatched.tsv``).
    Returns the Hub's columns: the task's ``text_keys``, ``label`` and ``idx``.
    """
    t = get_task(task)
    _check_split(t, split)
    data_dir = Path(data_dir).expanduser()
    path = _task_dir(t, data_dir) / SPLIT_FILES[split]
    if not path.is_file():
        raise HiDLRError(
            f"GLUE file not found: {path}; pass --data_dir pointing at a folder with {_layout(t)} "
            f"(the classic GLUE layout, e.g. ../shared/data/glue), or load {t.name!r} from the Hub."
        )
    return _read_classic_file(t, path)


def _looks_classic(t: GlueTask, path: Path) -> bool:
    """True when the first line of ``path`` matches the classic file layout of ``t``."""
    fmt = _CLASSIC[t.name]
    with open(path, encoding="utf-8-sig", newline="") as f:
        first = next(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), None)
    if first is None:
        return True  # empty: let the classic reader say so
    if not first:
        return False
    if fmt.has_header:
        names = {name.strip() for name in first}
        return all(name in names for name in tuple(fmt.text_columns) + (fmt.label_column,))
    return len(first) == fmt.n_fields and first[fmt.label_column].strip() in {"0", "1"}


# --------------------------------------------------------------------------------------- own files


def check_table(table: "datasets.Dataset", wanted, path, what: str) -> None:
    """Refuse a user-supplied table without the ``wanted`` columns or without rows; ``what`` names the file's kind
    (``"a rte file"``, ``"a rte test file"``)."""
    missing = [name for name in wanted if name not in table.column_names]
    if missing:
        raise HiDLRError(
            f"{path} has no column {', '.join(map(repr, missing))} (it has {table.column_names}); "
            f"{what} needs the columns {', '.join(map(repr, wanted))}, as on the Hub."
        )
    if table.num_rows == 0:
        raise HiDLRError(f"{path} has no data rows; {what} needs at least one example.")


def _normalise(t: GlueTask, table: "datasets.Dataset", path: Path) -> "datasets.Dataset":
    """Bring a user-supplied table to the Hub schema: check columns, map labels, add ``idx``."""
    wanted = tuple(t.text_keys) + ("label",)
    check_table(table, wanted, path, f"a {t.name} file")
    parse_label = _label_parser(t)
    columns = table.select_columns(list(wanted)).to_dict()  # one bulk conversion, not row by row
    feature = table.features["label"]
    ds = _datasets()
    if isinstance(feature, ds.ClassLabel) and not t.is_regression:
        # Integers already; check the names agree with the task's order.
        if list(feature.names) != list(t.label_names) and feature.names != [str(i) for i in range(t.num_labels)]:
            raise HiDLRError(
                f"{path} labels its classes {feature.names}, but {t.name} uses {list(t.label_names)} in that "
                "order; relabel the file to match."
            )
    labels = []
    for row, raw in enumerate(columns["label"], start=1):
        try:
            labels.append(parse_label(raw))
        except ValueError as err:
            raise HiDLRError(f"{path}, data row {row}: {err}; fix or remove that row.") from None
    texts = []
    for key in t.text_keys:
        col = columns[key]
        for row, value in enumerate(col, start=1):
            if value is None:
                raise HiDLRError(f"{path}, data row {row}: column {key!r} is empty; fix or remove that row.")
        texts.append([v if isinstance(v, str) else str(v) for v in col])
    return _build(t, texts, labels)


def _load_file(t: GlueTask, path: str | os.PathLike, cache_dir) -> "datasets.Dataset":
    path = Path(path).expanduser()
    if not path.is_file():
        raise HiDLRError(f"Data file not found: {path}; check the path given to --train_file/--validation_file.")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    ds = _datasets()
    if suffix == ".tsv" and _looks_classic(t, path):
        return _read_classic_file(t, path)
    if suffix == ".tsv":
        builder, kwargs = "csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    elif suffix in (".csv", ".csv.gz"):
        builder, kwargs = "csv", {}
    elif suffix in (".json", ".jsonl", ".json.gz", ".jsonl.gz"):
        builder, kwargs = "json", {}
    else:
        raise HiDLRError(f"Cannot read {path}: use a .tsv, .csv, .json or .jsonl file.")
    try:
        table = ds.load_dataset(builder, data_files=str(path), cache_dir=cache_dir, **kwargs)["train"]
    except Exception as err:  # pandas / pyarrow parse errors surface wrapped and far from the file name
        raise HiDLRError(
            f"Could not read {path} as {builder.upper()} ({type(err).__name__}: {err}); "
            f"fix the file so it has the columns {', '.join(t.text_keys)}, label."
        ) from err
    return _normalise(t, table, path)


def _validation_files(t: GlueTask, validation_file) -> dict[str, str | os.PathLike]:
    if isinstance(validation_file, Mapping):
        for split in validation_file:
            if split not in t.eval_splits:
                raise HiDLRError(
                    f"validation_file has a split {split!r} that {t.name} does not have; "
                    f"use {', '.join(t.eval_splits)}."
                )
        return dict(validation_file)
    # One file: the task's first evaluation split (MNLI: validation_matched).
    return {t.eval_splits[0]: validation_file}


# -------------------------------------------------------------------------------------------- entry


def hub_is_offline() -> bool:
    """True when ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` asks for no network."""
    return any(os.environ.get(var, "").strip().upper() in _TRUE for var in _OFFLINE_VARS)


def load_hub_splits(t: GlueTask, cache_dir, splits, instead: str) -> "datasets.DatasetDict":
    """``splits`` of the task's config of the Hub's GLUE; ``instead`` ends each error with what to pass instead
    (``"--data_dir with the classic GLUE files"``)."""
    ds = _datasets()
    try:
        loaded = ds.load_dataset(HUB_DATASET, t.name, cache_dir=cache_dir)
    except Exception as err:  # network, auth or cache trouble: say what to do instead
        raise HiDLRError(
            f"Could not load {HUB_DATASET!r} config {t.name!r} from the Hub ({type(err).__name__}: {err}); "
            f"check the network, or pass {instead} instead."
        ) from err
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise HiDLRError(
            f"The Hub copy of {HUB_DATASET}/{t.name} has no split {', '.join(missing)} "
            f"(it has {', '.join(loaded)}); pass {instead} instead."
        )
    return ds.DatasetDict({s: loaded[s] for s in splits})


def _load_from_hub(t: GlueTask, cache_dir) -> "datasets.DatasetDict":
    return load_hub_splits(t, cache_dir, ("train",) + t.eval_splits, "--data_dir with the classic GLUE files")


def load_glue(
    task: str | GlueTask,
    *,
    data_dir: str | os.PathLike | None = None,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    use_hub: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> "datasets.DatasetDict":
    """Load ``task`` as a ``DatasetDict`` with ``"train"`` and the task's ``eval_splits``.

    Sources, first match wins:

    1. ``train_file`` / ``validation_file``: ``.csv`` and ``.json``/``.jsonl`` through ``datasets``'
       loaders (columns named as on the Hub); ``.tsv`` through the classic reader when its first line
       looks like the task's classic file, otherwise as a tab-separated table without quoting. One
       ``validation_file`` fills the first eval split (MNLI: ``validation_matched``); give MNLI both with
       ``{"validation_matched": ..., "validation_mismatched": ...}``. Splits not given come from
       ``data_dir`` when it is also passed, and are otherwise left out.
    2. ``data_dir``: the classic layout, ``<data_dir>/<TASK>/train.tsv`` and ``dev.tsv``.
    3. The Hub, ``load_dataset("nyu-mll/glue", task.name)``: with ``use_hub=None`` only when neither
       ``HF_DATASETS_OFFLINE`` nor ``HF_HUB_OFFLINE`` is set; ``use_hub=True`` tries even then (a cached
       copy may serve); ``use_hub=False`` never.

    Every split has the Hub's columns: ``text_keys``, ``label`` and ``idx``.
    """
    t = get_task(task)
    splits = ("train",) + t.eval_splits
    ds = _datasets()

    if train_file is not None or validation_file is not None:
        files: dict[str, str | os.PathLike] = {}
        if train_file is not None:
            files["train"] = train_file
        if validation_file is not None:
            files.update(_validation_files(t, validation_file))
        loaded = {split: _load_file(t, path, cache_dir) for split, path in files.items()}
        if data_dir is not None:
            for split in splits:
                if split not in loaded:
                    loaded[split] = read_classic_split(t, split, data_dir)
        return ds.DatasetDict({s: loaded[s] for s in splits if s in loaded})

    if data_dir is not None:
        return ds.DatasetDict({s: read_classic_split(t, s, data_dir) for s in splits})

    if use_hub is False or (use_hub is None and hub_is_offline()):
        found = default_glue_data_dir()
        hint = f" (one exists at {found})" if found is not None else ""
        why = "use_hub=False" if use_hub is False else "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set"
        raise HiDLRError(
            f"No data source for GLUE task {t.name!r} ({why}); pass --data_dir pointing at a folder in the "
            f"classic layout with {_layout(t)}, "
            f"such as ../shared/data/glue{hint}, or pass --train_file/--validation_file, "
            "or go online to download it from the Hub."
        )
    return _load_from_hub(t, cache_dir)


def default_glue_data_dir() -> Path | None:
    """Where GLUE files probably are: ``$HIDLR_GLUE_DIR``, else ``../shared/data/glue`` next to the
    working directory or next to this repository, else ``None``."""
    env = os.environ.get("HIDLR_GLUE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[2]  # hidlr_hf/glue/data.py -> the repository
    for base in (Path.cwd(), repo_root):
        candidate = base.parent / "shared" / "data" / "glue"
        if candidate.is_dir():
            return candidate.resolve()
    return None


# ----------------------------------------------------------------------------------------- a run's data


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


def tokenize(raw, task: GlueTask, tokenizer, max_seq_length: int, pad_to_max_length: bool = False,
             overwrite_cache: bool = False) -> dict:
    """Tokenized splits with ``input_ids`` / ``attention_mask`` (...) and ``labels`` (if labelled); the text columns and ``idx``
    are dropped. Inputs longer than ``max_seq_length`` (or the model's maximum) are truncated; without
    ``pad_to_max_length`` nothing is padded (a collator pads each batch)."""
    max_length = max_seq_length
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max < max_length:
        logger.warning(
            "--max_seq_length %d is longer than the model's maximum (%d); using %d.", max_length, model_max, model_max
        )
        max_length = model_max
    padding = "max_length" if pad_to_max_length else False

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
            load_from_cache_file=not overwrite_cache,
            desc=f"Tokenizing {task.name} {split}",
        )
        # Test splits have no label (run_glue.py drops the Hub's -1 placeholders).
        out[split] = encoded.rename_column("label", "labels") if "label" in encoded.column_names else encoded
    return out
