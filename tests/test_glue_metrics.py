"""GLUE metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from hidlr_hf.errors import HiDLRError  # noqa: E402
from hidlr_hf.glue.metrics import compute_glue_metrics, make_compute_metrics  # noqa: E402
from hidlr_hf.glue.tasks import GLUE_TASKS  # noqa: E402

REFS = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 0])
PREDS = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 0])


def counts(preds, refs):
    tp = int(np.sum((preds == 1) & (refs == 1)))
    tn = int(np.sum((preds == 0) & (refs == 0)))
    fp = int(np.sum((preds == 1) & (refs == 0)))
    fn = int(np.sum((preds == 0) & (refs == 1)))
    return tp, tn, fp, fn


def logits_for(labels, num_labels=2, seed=0):
    """Random logits whose argmax is ``labels``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), num_labels)).astype(np.float32)
    logits[np.arange(len(labels)), labels] = logits.max(axis=1) + 1.0
    return logits


def test_matthews_correlation_from_the_formula():
    tp, tn, fp, fn = counts(PREDS, REFS)  # 4, 3, 1, 2
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    result = compute_glue_metrics("cola", PREDS, REFS)
    assert result == {"matthews_correlation": pytest.approx(expected)}
    assert type(result["matthews_correlation"]) is float


def test_accuracy_tasks():
    expected = np.mean(PREDS == REFS)  # 7 / 10
    for task in ("sst2", "qnli", "rte", "wnli"):
        result = compute_glue_metrics(task, PREDS, REFS)
        assert result == {"accuracy": pytest.approx(0.7)}
        assert result["accuracy"] == pytest.approx(expected)


def test_mnli_three_classes_from_logits():
    refs = np.array([0, 1, 2, 2, 1, 0])
    preds = np.array([0, 2, 2, 2, 1, 1])
    result = compute_glue_metrics("mnli", logits_for(preds, 3), refs)
    assert result == {"accuracy": pytest.approx(4 / 6)}


def test_f1_and_combined_score_for_mrpc_and_qqp():
    tp, tn, fp, fn = counts(PREDS, REFS)
    f1 = 2 * tp / (2 * tp + fp + fn)  # 8 / 11
    accuracy = (tp + tn) / len(REFS)
    for task in ("mrpc", "qqp"):
        result = compute_glue_metrics(task, PREDS, REFS)
        assert set(result) == {"accuracy", "f1", "combined_score"}
        assert result["accuracy"] == pytest.approx(accuracy)
        assert result["f1"] == pytest.approx(f1)
        assert result["combined_score"] == pytest.approx((accuracy + f1) / 2)
        assert all(type(v) is float for v in result.values())


def test_logits_and_labels_give_the_same_metrics():
    logits = logits_for(PREDS)
    for task in ("cola", "mrpc", "sst2"):
        assert compute_glue_metrics(task, logits, REFS) == compute_glue_metrics(task, PREDS, REFS)
    # Label ids stored as floats, and (n, 1) columns, are accepted too.
    assert compute_glue_metrics("sst2", PREDS.astype(float)[:, None], REFS[:, None]) == {"accuracy": 0.7}


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    result = compute_glue_metrics("mrpc", torch.tensor(logits_for(PREDS)), torch.tensor(REFS))
    assert result == compute_glue_metrics("mrpc", PREDS, REFS)


def ranks(x):
    return np.argsort(np.argsort(x)).astype(float)


def test_stsb_pearson_spearman_and_combined():
    refs = np.array([0.0, 1.2, 2.5, 3.1, 4.8, 5.0])
    preds = np.array([0.4, 1.0, 3.2, 2.9, 4.1, 4.9])
    pearson = np.corrcoef(preds, refs)[0, 1]
    spearman = np.corrcoef(ranks(preds), ranks(refs))[0, 1]  # no ties: Pearson of the ranks
    result = compute_glue_metrics("stsb", preds, refs)
    assert set(result) == {"pearson", "spearmanr", "combined_score"}
    assert result["pearson"] == pytest.approx(pearson)
    assert result["spearmanr"] == pytest.approx(spearman)
    assert result["combined_score"] == pytest.approx((pearson + spearman) / 2)
    assert all(type(v) is float for v in result.values())
    # A regression head outputs (n, 1): it is squeezed.
    assert compute_glue_metrics("stsb", preds[:, None].astype(np.float32), refs) == pytest.approx(result)


def test_stsb_degenerate_inputs_give_nan_not_an_exception():
    result = compute_glue_metrics("stsb", np.ones(4), np.array([0.0, 1.0, 2.0, 3.0]))
    assert math.isnan(result["pearson"]) and math.isnan(result["spearmanr"])
    assert math.isnan(compute_glue_metrics("stsb", [1.0], [2.0])["pearson"])


def test_keys_match_each_tasks_metric_names():
    for task in GLUE_TASKS.values():
        if task.is_regression:
            result = compute_glue_metrics(task, [0.5, 2.0, 4.0], [1.0, 2.5, 3.0])
        else:
            result = compute_glue_metrics(task.name, logits_for(np.array([0, 1, 1, 0]), task.num_labels),
                                          [0, 1, 0, 0])
        assert tuple(result) == task.metric_names
        assert task.main_metric in result


def test_bad_inputs():
    with pytest.raises(HiDLRError, match="3 predictions but 2 references"):
        compute_glue_metrics("sst2", [0, 1, 1], [0, 1])
    with pytest.raises(HiDLRError, match="logits have 3 columns"):
        compute_glue_metrics("sst2", np.zeros((2, 3)), [0, 1])
    with pytest.raises(HiDLRError, match="non-integer"):
        compute_glue_metrics("rte", [0.2, 0.9], [0, 1])
    with pytest.raises(HiDLRError, match="No examples"):
        compute_glue_metrics("rte", [], [])
    with pytest.raises(HiDLRError, match="must be numeric"):
        compute_glue_metrics("rte", ["a", "b"], [0, 1])
    with pytest.raises(HiDLRError, match="1-D"):
        compute_glue_metrics("stsb", np.zeros((2, 2)), [0.0, 1.0])
    with pytest.raises(HiDLRError, match="Unknown GLUE task"):
        compute_glue_metrics("squad", [0], [0])


def test_make_compute_metrics_with_eval_prediction():
    EvalPrediction = pytest.importorskip("transformers").EvalPrediction
    logits = logits_for(PREDS)
    compute = make_compute_metrics("MRPC")
    expected = compute_glue_metrics("mrpc", PREDS, REFS)
    assert compute(EvalPrediction(predictions=logits, label_ids=REFS)) == expected
    # Models returning several outputs give a tuple: the logits come first.
    hidden = np.zeros((len(REFS), 4, 8), dtype=np.float32)
    assert compute(EvalPrediction(predictions=(logits, hidden), label_ids=REFS)) == expected
    assert compute((logits, REFS)) == expected

    stsb = make_compute_metrics("stsb")
    refs = np.array([0.0, 1.0, 2.5, 4.0])
    preds = np.array([[0.2], [1.4], [2.0], [3.9]], dtype=np.float32)
    assert stsb(EvalPrediction(predictions=preds, label_ids=refs)) == compute_glue_metrics("stsb", preds, refs)
