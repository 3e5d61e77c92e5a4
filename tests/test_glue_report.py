"""What a hidlr-glue run reports (hidlr_hf/glue/report.py): the figure and the final summary."""

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("matplotlib")

from hidlr_hf.glue.report import group_rows, metrics_table, write_report  # noqa: E402


def test_write_report_from_plain_lists(tmp_path):
    names = ["embeddings", "layers.0.attention", "head"]
    history = [
        {"step": s, "status": "ok", "rates": [1e-5 * (1 + s), 2e-5, 0.0 if s > 2 else 1e-3],
         "influence": [1e-9, None, 2e-6], "loss": 0.7}
        for s in range(5)
    ]
    path = write_report(history, names, [1e-9, float("nan"), 3e-6], tmp_path / "sub" / "report.png")
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    # Nothing measured at all still draws a figure.
    assert Path(write_report([], ["a"], [None], tmp_path / "empty.png")).stat().st_size > 0


def test_summary_tables():
    text = metrics_table({"eval_accuracy": 0.5, "eval_runtime": 4.2065, "epoch": 1.0, "total_flos": 1.3e12,
                          "train_loss": 1.5e-5})
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == ["metric", "eval_accuracy", "train_loss", "eval_runtime"]
    assert lines[1].endswith("0.5000") and lines[2].endswith("1.500e-05") and lines[3].endswith("4.2065")
    p = SimpleNamespace(numel=lambda: 1500)
    engine = SimpleNamespace(
        group_names=["mlp", "head"], param_group_indices=[[0], [1]],
        optimizer=SimpleNamespace(param_groups=[{"params": [p, p]}, {"params": [p]}]),
        rates_in_force=lambda: [0.0, 2e-4], base_rates=[1e-5, 4e-4], influence=SimpleNamespace(mean=[float("nan"), 3e-6]),
    )
    header, rows = group_rows(engine, {"kept": [False, True]})
    assert header[-1] == "status"
    assert rows == [["mlp", "3.0k", "0", "1.000e-05", "nan", "frozen"], ["head", "1.5k", "2.000e-04", "4.000e-04",
                                                                         "3.000e-06", "kept"]]
