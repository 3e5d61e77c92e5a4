"""The nine GLUE tasks: column names, label order and metrics, as the Hub's ``nyu-mll/glue`` has them.

Names follow the Hub configs (``cola``, ``sst2``, ...). ``get_task`` also accepts the classic folder
names and common spellings (``"CoLA"``, ``"SST-2"``, ``"sts_b"``), case-insensitively.

``main_metric`` is the single number to select checkpoints on (``metric_for_best_model``): Matthews
correlation for CoLA, Pearson correlation for STS-B (the first number of the Pearson/Spearman pair that
GLUE and the transformers ``run_glue`` README report), accuracy for every other task (MRPC and QQP also
report ``f1`` and ``combined_score``, their mean, as ``run_glue.py`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

from hidlr_hf.errors import HiDLRError

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task as the Hub describes it.

    Attributes:
        name: Hub config name (``"sst2"``), used with ``load_dataset("nyu-mll/glue", name)``.
        dir_name: folder of the classic GLUE download (``"SST-2"``), holding ``train.tsv`` / ``dev.tsv``.
        text_keys: the Hub's text columns, in model-input order (one for single-sentence tasks).
        label_names: class names in the Hub's label order; ``None`` for the regression task (STS-B).
        is_regression: True for STS-B (a 0-5 similarity score).
        num_labels: classifier outputs (1 for regression).
        metric_names: the keys :func:`hidlr_hf.glue.metrics.compute_glue_metrics` returns.
        main_metric: the key to select checkpoints on.
        eval_splits: labelled evaluation splits (MNLI has a matched and a mismatched one).
    """

    name: str
    dir_name: str
    text_keys: tuple[str, ...]
    label_names: tuple[str, ...] | None
    is_regression: bool
    num_labels: int
    metric_names: tuple[str, ...]
    main_metric: str
    eval_splits: tuple[str, ...] = ("validation",)

    @property
    def is_pair(self) -> bool:
        """True when the model reads two texts (a sentence pair)."""
        return len(self.text_keys) == 2

    @property
    def id2label(self) -> dict[int, str] | None:
        """``{0: "negative", ...}`` for a model config; ``None`` for regression."""
        return None if self.label_names is None else dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int] | None:
        """``{"negative": 0, ...}`` for a model config; ``None`` for regression."""
        return None if self.label_names is None else {n: i for i, n in enumerate(self.label_names)}


_ACC = ("accuracy",)
_ACC_F1 = ("accuracy", "f1", "combined_score")


def _classification(name, dir_name, text_keys, label_names, metric_names=_ACC, main_metric="accuracy", **kw):
    return GlueTask(
        name=name,
        dir_name=dir_name,
        text_keys=text_keys,
        label_names=label_names,
        is_regression=False,
        num_labels=len(label_names),
        metric_names=metric_names,
        main_metric=main_metric,
        **kw,
    )


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        _classification(
            "cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"),
            metric_names=("matthews_correlation",), main_metric="matthews_correlation",
        ),
        _classification("sst2", "SST-2", ("sentence",), ("negative", "positive")),
        _classification(
            "mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), metric_names=_ACC_F1
        ),
        _classification(
            "qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), metric_names=_ACC_F1
        ),
        GlueTask(
            name="stsb",
            dir_name="STS-B",
            text_keys=("sentence1", "sentence2"),
            label_names=None,
            is_regression=True,
            num_labels=1,
            metric_names=("pearson", "spearmanr", "combined_score"),
            main_metric="pearson",
        ),
        _classification(
            "mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
            eval_splits=("validation_matched", "validation_mismatched"),
        ),
        _classification("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment")),
        _classification("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
        _classification("wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
    )
}


def _key(name: str) -> str:
    # "SST-2", "sst_2", "Sts B", "glue/sst2" and "sst2" all reduce to the same key.
    key = name.strip().lower()
    if key.startswith("glue/") or key.startswith("glue-"):
        key = key[5:]
    return "".join(ch for ch in key if ch.isalnum())


_ALIASES: dict[str, str] = {}
for _task in GLUE_TASKS.values():
    _ALIASES[_key(_task.name)] = _task.name
    _ALIASES[_key(_task.dir_name)] = _task.name


def get_task(name: str | GlueTask) -> GlueTask:
    """The :class:`GlueTask` called ``name`` (Hub name, classic folder name or alias, any case)."""
    if isinstance(name, GlueTask):
        return name
    if not isinstance(name, str):
        raise HiDLRError(
            f"A GLUE task must be given by name (a str), not {type(name).__name__}; "
            f"use one of {', '.join(GLUE_TASKS)}."
        )
    task = _ALIASES.get(_key(name))
    if task is None:
        raise HiDLRError(
            f"Unknown GLUE task {name!r}; use one of {', '.join(GLUE_TASKS)} "
            "(classic spellings such as 'SST-2' or 'STS-B' also work)."
        )
    return GLUE_TASKS[task]
