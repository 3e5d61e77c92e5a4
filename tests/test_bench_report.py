"""BENCHMARKS.md and its figures from summary.json (benchmarks/hidlr_bench/report.py, plots.py): zero runs, partial
runs, every number from the summary, the files written."""

import json
import re

import pytest
from bench_fixtures import fabricated_scaling, make_run, overhead_pair, write_overhead, write_runs

from hidlr_bench.aggregate import aggregate_tasks
from hidlr_bench.plots import lr_points
from hidlr_bench.protocol import ABLATION_METHODS, DEFAULT_METHODS, HIDLR_STARTS, TASKS
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
    return any(abs(abs(c) - abs(value)) <= tolerance for c in candidates)  # a sign may be the report's (a margin)


def _not_from_summary(summary, text):
    candidates = _numbers_in(summary, [])
    return [t for t in NUMBER.findall(text) if not _shown_in(t, candidates)]


def test_the_report_builds_from_zero_runs(tmp_path):
    summary = write_report(tmp_path / "results", tmp_path / "docs")
    text = (tmp_path / "docs" / "BENCHMARKS.md").read_text()
    quality = text.split("## Quality")[1].split("###")[0]
    for name in DEFAULT_METHODS:
        assert f"| `{name}` | not run yet | not run yet | not run yet | not run yet |" in quality
    for tid in ("T1", "T2", "T3", "T4"):
        assert re.search(rf"### {tid}: .*\n\nVerdict: \*\*not run yet\*\*", text), tid
    for section in ("Overhead", "Scaling of one probe round", "Where Hi-DLR loses"):
        assert f"## {section}\n" in text and "not run yet" in text.split(f"## {section}\n")[1].split("##")[0], section
    assert "Automatic PEFT trains <= 1% of parameters" in text and "Issue 15's check" in text
    assert "| mrpc | all | 2 | 460 | not run yet |" in text and "| sst2 | 8,000 | 1 | 500 | not run yet |" in text
    assert not list((tmp_path / "docs" / "img").glob("*.png"))
    assert _not_from_summary(summary, text.replace(str(tmp_path), "")) == []  # the folder's name is no result


def test_report_with_partial_runs():
    runs = [make_run("mrpc", m, 0, 0.8) for m in ("hidlr", "adamw_lr5e-05", "hidlr_no_jumps")]
    runs += [make_run("mrpc", "hidlr", 1, 0.82)]
    summary = build_summary(runs, machine={"cpu": "Test CPU", "cores": 2}, command="scripts/benchmark.py")
    text = render_markdown(summary)
    quality = text.split("## Quality")[1].split("###")[0]
    row = next(line for line in quality.splitlines() if line.startswith("| `hidlr` |"))
    assert row == "| `hidlr` | 81.00 ± 1.41 (2 of 3) | not run yet | not run yet | not run yet |"
    assert "Verdict: **provisional: met on the runs so far**" in text  # T1 on mrpc so far
    assert "| mrpc | 81.00 [s0 80.00 / s1 82.00] | 80.00 [s0 80.00] | +1.00 |" in text
    assert "| mrpc | 5e-05 | `hidlr_no_jumps` | 80.00 | +0.00 | 10 | 10 | attention 0.0001, head 0.002 |" in text
    assert "| mrpc | 5e-05 | `hidlr_no_horizon` | not run yet |" in text
    assert "not run yet" in text.split("## Overhead")[1].split("##")[0]
    assert _not_from_summary(summary, text) == []


def test_report_numbers_all_come_from_summary():
    runs = []
    for task in ("rte", "cola", "mrpc"):
        for i, method in enumerate(DEFAULT_METHODS + ("autopeft_1pct", "lora_r8", "bitfit") + ABLATION_METHODS[:3]):
            for seed in (0, 1):
                extra = {}
                if method == "autopeft_1pct":
                    extra = {"trainable_params_final": 210_000, "median_step_seconds_after_freeze": 0.55}
                runs.append(make_run(task, method, seed, 0.5 + i / 100 + seed / 1000, **extra))
    runs.append({"task": "rte", "method": "adamw_lr1e-06", "seed": 0, "error": "ValueError: 3 things"})
    overhead = [r for t in ("sst2", "mrpc") for rep in (0, 1) for r in overhead_pair(t, rep)]
    summary = build_summary(runs, overhead, fabricated_scaling(), machine={"cpu": "EPYC 7B13", "cores": 2},
                            commands=[{"command": "scripts/benchmark.py --seeds 0,1"}], command="x.py --only report")
    summary = json.loads(json.dumps(summary))  # exactly what summary.json holds
    text = render_markdown(summary, images=["loss_curves.png", "overhead.png", "hidlr_rates.png"])
    assert _not_from_summary(summary, text) == []
    assert "| mrpc | 0 | 460 | 400.0 | 412.0 | 1.030 | 10.0 | 2.0 |" in text
    assert "growth is linear in K" in text and "a round costs in proportion to its forward passes" in text
    assert "![Training loss (mean over seeds) per task](img/loss_curves.png)" in text
    assert "| `hidlr_from_1e-06` | 1e-06 | 10 | 28 | 32 | attention 0.0005, head 0.00055 |" in text
    assert "| rte | 64.05 (2) | 0.924% |" in text.split("## Automatic PEFT")[1]


def test_write_report_files_and_no_stale_figures(tmp_path):
    out, docs = tmp_path / "results", tmp_path / "docs"
    write_runs(out, [make_run("mrpc", m, 0, 0.6) for m in HIDLR_STARTS + ("adamw_lr1e-04",)])
    write_overhead(out, overhead_pair("mrpc", 0))
    write_json_atomic(out / "scaling.json", fabricated_scaling())
    (docs / "img").mkdir(parents=True)
    (docs / "img" / "old_figure.png").write_bytes(b"x")  # from a protocol whose data is gone
    summary = write_report(out, docs)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["tasks"]["mrpc"]["methods"]["hidlr"]["mean"] == pytest.approx(60.0)
    assert saved["overhead"]["tasks"]["mrpc"]["wall_clock_ratio"] == pytest.approx(1.03)
    assert saved["scaling"]["groups"]["fit"]["linear"] is True
    assert set(summary) >= {"tasks", "overhead", "memory", "scaling", "machine", "command", "targets", "ablation"}
    text = (docs / "BENCHMARKS.md").read_text()
    images = {"loss_curves.png", "hidlr_rates.png", "lr_sensitivity.png", "overhead.png", "scaling_groups.png",
              "scaling_size.png"}
    assert {p.name for p in (docs / "img").iterdir()} == images
    for image in images:
        assert (docs / "img" / image).stat().st_size > 0 and f"img/{image}" in text


def test_lr_sensitivity_points_put_hidlr_at_its_starting_rate():
    runs = [make_run("sst2", "adamw_lr1e-04", s, v) for s, v in ((0, 0.8), (1, 0.7))]
    runs += [make_run("sst2", m, 0, v) for m, v in (("adamw_lr1e-06", 0.5), ("hidlr", 0.78), ("hidlr_from_1e-03", 0.6),
                                                     ("hidlr_single_group", 0.7), ("hidlr_no_jumps", 0.1))]
    points = lr_points(aggregate_tasks(runs)[0])["sst2"]
    assert [p[0] for p in points["adamw"]] == [1e-6, 1e-4]
    assert points["adamw"][1][1:] == (pytest.approx(75.0), pytest.approx(100 * 0.05 * 2 ** 0.5, abs=1e-4), 2)
    assert points["hidlr"] == [(5e-5, pytest.approx(78.0), None, 1), (1e-3, pytest.approx(60.0), None, 1)]
    assert set(TASKS) >= set(lr_points(aggregate_tasks(runs)[0]))
