"""BENCHMARKS.md and its figures from summary.json (benchmarks/hidlr_bench/report.py, plots.py)."""

import json
import re

import pytest
from bench_fixtures import fabricated_sections, make_run, write_runs

from hidlr_bench.aggregate import aggregate_tasks
from hidlr_bench.plots import lr_points
from hidlr_bench.protocol import METHODS
from hidlr_bench.records import write_json_atomic
from hidlr_bench.report import render_markdown, write_report
from hidlr_bench.summary import build_summary


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")


def _numbers_in(obj, found):
    if isinstance(obj, dict):
        for k, v in obj.items():
            _numbers_in(k, found)
            _numbers_in(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _numbers_in(v, found)
    elif isinstance(obj, bool) or obj is None:
        return
    elif isinstance(obj, (int, float)):
        found.append(float(obj))
    elif isinstance(obj, str):
        found.extend(float(t.replace(",", "")) for t in NUMBER.findall(obj))
    return found


def _shown_in(token: str, candidates) -> bool:
    value = float(token.replace(",", ""))
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    tolerance = 0.5 * 10 ** (int(exponent or 0) - decimals) * 1.0001 + 1e-12
    return any(abs(c - value) <= tolerance for c in candidates)


def test_report_says_not_run_for_missing_cells():
    runs = [make_run("rte", "hidlr", 0, 0.6), make_run("rte", "bitfit", 0, 0.55)]
    summary = build_summary(runs, machine={"cpu": "Test CPU", "cores": 2}, command="scripts/benchmark.py")
    text = render_markdown(summary)
    quality = text.split("## Quality")[1].split("###")[0]
    row = next(line for line in quality.splitlines() if line.startswith("| `hidlr` |"))
    assert "60.00 (1)" in row and row.count("not run") == 3  # rte ran; mrpc, cola, sst2 did not
    prodigy = next(line for line in quality.splitlines() if line.startswith("| `prodigy` |"))
    assert prodigy.count("not run") == 4
    for name in METHODS:
        assert f"| `{name}` |" in quality
    assert "## Overhead\n\nnot run" in text
    assert "Peak memory ratio in full fine-tuning: not run" in text
    assert "## Scaling of one probe round\n\nnot run" in text
    assert "**not run**" in text  # targets without their runs


def test_report_numbers_all_come_from_summary():
    runs = []
    for task in ("rte", "cola"):
        for i, method in enumerate(METHODS):
            for seed in (0, 1):
                extra = {}
                if method == "autopeft_1pct":
                    extra = {"trainable_params_final": 210_000, "median_step_seconds_after_freeze": 0.55}
                runs.append(make_run(task, method, seed, 0.5 + i / 100 + seed / 1000, **extra))
    runs.append({"task": "rte", "method": "adamw_lr1e-06", "seed": 0, "error": "ValueError: 3 things"})
    overhead, scaling = fabricated_sections()
    summary = build_summary(runs, overhead, scaling, machine={"cpu": "EPYC 7B13", "cores": 2, "torch": "2.13.0"},
                                  commands=[{"command": "scripts/benchmark.py --seeds 0,1"}], command="x.py --only report")
    summary = json.loads(json.dumps(summary))  # exactly what summary.json holds
    text = render_markdown(summary, images=["loss_curves.png", "overhead.png"])
    candidates = _numbers_in(summary, [])
    missing = [t for t in NUMBER.findall(text) if not _shown_in(t, candidates)]
    assert missing == []
    assert "step-time ratio 1.50" in text and "ratio **1.100**" in text
    assert "growth is linear in K" in text
    assert "ratio 1.040" in text  # peak memory after the first step
    assert "a round costs in proportion to its forward passes" in text
    assert "| auto | 1.50 | 1.02 | 1.73 | 22 | 3.90 | 17.5 |" in text
    assert "![Training loss (mean over seeds) per task](img/loss_curves.png)" in text


def test_write_report_files(tmp_path):
    out, docs = tmp_path / "results", tmp_path / "docs"
    write_runs(out, [make_run("rte", "hidlr", 0, 0.6), make_run("rte", "adamw_lr1e-04", 0, 0.62)])
    overhead, scaling = fabricated_sections()
    write_json_atomic(out / "overhead.json", overhead)
    write_json_atomic(out / "scaling.json", scaling)
    summary = write_report(out, docs)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["tasks"]["rte"]["methods"]["hidlr"]["mean"] == pytest.approx(60.0)
    assert saved["overhead"]["step_time_ratio_default"] == pytest.approx(1.5)
    assert saved["memory"]["peak_ratio_full_ft"] == pytest.approx(1.1)
    assert saved["scaling"]["groups"]["fit"]["linear"] is True
    assert set(summary) >= {"tasks", "overhead", "memory", "scaling", "machine", "command", "targets"}
    text = (docs / "BENCHMARKS.md").read_text()
    assert "# Benchmarks" in text and "not run" in text
    for image in ("loss_curves.png", "hidlr_rates.png", "lr_sensitivity.png", "overhead.png", "scaling_groups.png",
                  "scaling_size.png"):
        assert (docs / "img" / image).stat().st_size > 0
        assert f"img/{image}" in text


def test_lr_sensitivity_points_put_hidlr_at_its_starting_rate():
    runs = [make_run("sst2", "adamw_lr1e-04", s, v) for s, v in ((0, 0.8), (1, 0.7))]
    runs += [make_run("sst2", m, 0, v) for m, v in (("adamw_lr1e-06", 0.5), ("hidlr", 0.78), ("hidlr_from_1e-03", 0.6),
                                                     ("hidlr_single_group", 0.7), ("bitfit", 0.55))]
    points = lr_points(aggregate_tasks(runs)[0])["sst2"]
    assert [p[0] for p in points["adamw"]] == [1e-6, 1e-4]
    assert points["adamw"][1][1:] == (pytest.approx(75.0), pytest.approx(100 * 0.05 * 2 ** 0.5, abs=1e-4), 2)
    assert points["hidlr"] == [(5e-5, pytest.approx(78.0), None, 1), (1e-3, pytest.approx(60.0), None, 1)]
