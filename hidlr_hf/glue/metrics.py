"""GLUE metrics with the keys transformers' ``run_glue.py`` reports (without the ``eval_`` prefix).

CoLA: ``matthews_correlation``. STS-B: ``pearson``, ``spearmanr``, ``combined_score``. MRPC and QQP:
``accuracy``, ``f1`` (of the positive class, label 1), ``combined_score``. SST-2, MNLI, QNLI, RTE,
WNLI: ``accuracy``. ``combined_score`` is the mean of the task's other metrics, as in ``run_glue.py``.

Computed with scikit-learn and scipy directly: ``evaluate.load("glue", ...)`` needs the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hidlr_hf.errors import HiDLRError
from hidlr_hf.glue.tasks import GlueTask, get_task


def _as_array(values, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().float().cpu().numpy() if values.is_floating_point() else values.cpu().numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as err:
        raise HiDLRError(f"GLUE {what} must be a numeric array, not {type(values).__name__} ({err}).") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise HiDLRError(f"GLUE {what} must be numeric, got dtype {array.dtype}; pass logits or label ids.")
    return array


def _class_predictions(t: GlueTask, predictions) -> np.ndarray:
    preds = _as_array(predictions, "predictions")
    if preds.ndim == 2 and preds.shape[1] == 1:
        preds = preds[:, 0]
    if preds.ndim == 2:
        if preds.shape[1] != t.num_labels:
            raise HiDLRError(
                f"{t.name} has {t.num_labels} classes but the logits have {preds.shape[1]} columns; "
                f"pass logits of shape (n, {t.num_labels}) or 1-D label ids."
            )
        return preds.argmax(axis=1)
    if preds.ndim != 1:
        raise HiDLRError(
            f"GLUE predictions for {t.name} must be logits (n, {t.num_labels}) or label ids (n,), "
            f"got shape {preds.shape}."
        )
    return _as_labels(t, preds, "predictions")


def _as_labels(t: GlueTask, values: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise HiDLRError(
                f"GLUE {what} for {t.name} hold non-integer values; pass logits (n, {t.num_labels}) "
                "or integer label ids."
            )
    return values.astype(np.int64)


def _flat(t: GlueTask, values, what: str) -> np.ndarray:
    array = _as_array(values, what)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise HiDLRError(f"GLUE {what} for {t.name} must be 1-D (one value per example), got shape {array.shape}.")
    return array


def _correlation(fn, a: np.ndarray, b: np.ndarray) -> float:
    # scipy refuses fewer than two points and returns nan (with a warning) for constant input:
    # report nan quietly either way instead of failing an evaluation on a tiny split.
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(fn(a, b)[0])


def compute_glue_metrics(task: str | GlueTask, predictions, references) -> dict[str, float]:
    """The ``run_glue.py`` metrics of ``task`` for ``predictions`` against ``references``.

    ``predictions`` may be logits (``(n, num_labels)``: argmax is taken; ``(n, 1)`` for STS-B is
    squeezed) or label ids / scores already. Returns python floats.
    """
    t = get_task(task)
    refs = _flat(t, references, "references")
    if t.is_regression:
        preds = _flat(t, predictions, "predictions").astype(np.float64)
        refs = refs.astype(np.float64)
    else:
        preds = _class_predictions(t, predictions)
        refs = _as_labels(t, refs, "references")
    if len(preds) != len(refs):
        raise HiDLRError(
            f"Got {len(preds)} predictions but {len(refs)} references for {t.name}; pass one prediction per example."
        )
    if len(refs) == 0:
        raise HiDLRError(f"No examples to score for {t.name}; evaluate on a non-empty split.")

    if t.name == "cola":
        from sklearn.metrics import matthews_corrcoef

        return {"matthews_correlation": float(matthews_corrcoef(refs, preds))}
    if t.is_regression:
        from scipy.stats import pearsonr, spearmanr

        result = {"pearson": _correlation(pearsonr, preds, refs), "spearmanr": _correlation(spearmanr, preds, refs)}
        if "mse" in t.metric_names:  # own regression data (hidlr_hf.glue.custom), as run_glue.py reports it
            result = {"mse": float(np.mean((preds - refs) ** 2)), **result}
    else:
        from sklearn.metrics import accuracy_score, f1_score

        result = {"accuracy": float(accuracy_score(refs, preds))}
        if "f1" in t.metric_names:
            result["f1"] = float(f1_score(refs, preds, zero_division=0.0))
    if "combined_score" in t.metric_names:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result


def _is_nested_tuple(value) -> bool:
    return isinstance(value, tuple) and len(value) > 0 and not np.isscalar(value[0])


def make_compute_metrics(task: str | GlueTask) -> Callable[..., dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer`` scoring ``task``.

    The returned function takes an ``EvalPrediction`` (or a ``(predictions, label_ids)`` pair); when the
    model returns several outputs, ``predictions`` is a tuple and its first element (the logits) is used.
    """
    t = get_task(task)

    def compute_metrics(eval_pred) -> dict[str, float]:
        if hasattr(eval_pred, "predictions"):
            predictions, label_ids = eval_pred.predictions, eval_pred.label_ids
        else:
            predictions, label_ids = eval_pred[0], eval_pred[1]
        # Several model outputs (or several label fields) arrive as a tuple: the first one is used.
        if _is_nested_tuple(predictions):
            predictions = predictions[0]
        if _is_nested_tuple(label_ids):
            label_ids = label_ids[0]
        return compute_glue_metrics(t, predictions, label_ids)

    compute_metrics.__name__ = f"compute_{t.name}_metrics"
    return compute_metrics
