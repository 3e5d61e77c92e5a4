"""summary.json from fabricated run files (benchmarks/hidlr_bench): aggregation, coverage, noise, code versions, fits."""

import json
import math
import re

import pytest
from bench_fixtures import PROTOCOL, make_run, write_runs

from hidlr_bench.aggregate import load_runs
from hidlr_bench.environment import code_fingerprint
from hidlr_bench.protocol import METHODS, TASKS
from hidlr_bench.report import render_markdown
from hidlr_bench.scaling import index_scheme, linear_fit
from hidlr_bench.summary import build_summary


def test_summary_mean_std_and_seed_counts(tmp_path):
    runs = [make_run("rte", "hidlr", s, v) for s, v in enumerate([0.60, 0.62, 0.64])]
    runs += [make_run("rte", "bitfit", 0, 0.55)]
    runs += [{"task": "rte", "method": "prodigy", "seed": 0, "error": "RuntimeError: diverged"}]
    write_runs(tmp_path, runs)
    summary = build_summary(load_runs(tmp_path), machine={"cpu": "x"}, command="benchmark.py")
    hidlr = summary["tasks"]["rte"]["methods"]["hidlr"]
    assert hidlr["seeds"] == 3
    assert hidlr["mean"] == pytest.approx(62.0)
    assert hidlr["std"] == pytest.approx(2.0)
    assert hidlr["rounds"] == 12 and hidlr["group_names"] == ["attention", "head"]
    bitfit = summary["tasks"]["rte"]["methods"]["bitfit"]
    assert bitfit["seeds"] == 1 and bitfit["std"] is None and bitfit["mean"] == pytest.approx(55.0)
    assert "prodigy" not in summary["tasks"]["rte"]["methods"]
    assert summary["errors"] == [{"task": "rte", "method": "prodigy", "seed": 0, "error": "RuntimeError: diverged"}]
    assert summary["tasks"]["rte"]["metric"] == "accuracy"
    assert summary["curves"]["rte"]["hidlr"]["steps"] == [5, 10]
    assert summary["curves"]["rte"]["hidlr"]["loss"][1] == pytest.approx(0.59)
    assert summary["rates"]["rte"]["hidlr"]["steps"] == [0, 1]
    assert summary["protocol"] == PROTOCOL
    json.dumps(summary, allow_nan=False)  # the summary is plain JSON


def test_coverage_counts_runs_and_lists_cells_short_of_seeds():
    runs = [make_run(t, m, s, 0.6) for t in TASKS for m in METHODS for s in (0, 1, 2)]
    runs = [r for r in runs if not (r["task"] == "rte" and r["method"] == "prodigy" and r["seed"] > 0)]
    runs += [make_run("rte", "adamw_lr1e-06", 0, 0.5)]  # outside the default list: not counted
    cov = build_summary(runs, machine={"cpu": "x"}, command="b.py")["coverage"]
    # Every rate ties, so the grid order picks adamw_lr1e-05: three rates (not 1e-03, which T2 names) need seed 0 only.
    planned = len(TASKS) * (len(METHODS) * 3 - 3 * 2)
    assert cov["planned_runs"] == planned and cov["finished_runs"] == planned - 2
    assert cov["cells_with_fewer_seeds"] == {"prodigy": {"rte": 1}} and cov["complete"] is False
    text = render_markdown(build_summary(runs, machine={"cpu": "x"}, command="b.py"))
    assert f"**Partial:** {planned - 2} of the protocol's {planned} runs" in text and "- `prodigy`: rte 1" in text
    t3 = next(line for line in text.splitlines() if line.startswith("### T3"))
    assert "(provisional: `prodigy` has cells with fewer seeds than planned)" in t3
    assert "provisional" not in next(line for line in text.splitlines() if line.startswith("### T1"))
    full = [make_run(t, m, s, 0.6) for t in TASKS for m in METHODS for s in (0, 1, 2)]
    summary = build_summary(full, machine={"cpu": "x"}, command="b.py")
    assert summary["coverage"]["complete"] is True
    assert f"All {planned} runs of the protocol" in render_markdown(summary)


def test_a_task_where_every_method_ties_is_flagged():
    runs = [make_run("cola", m, 0, 0.0) for m in ("hidlr", "adamw_lr1e-04", "bitfit")]
    runs += [make_run("rte", "hidlr", 0, 0.6), make_run("rte", "bitfit", 0, 0.55), make_run("sst2", "hidlr", 0, 0.8)]
    summary = build_summary(runs, machine={"cpu": "x"}, command="b.py")
    assert summary["ties"] == {"cola": {"value": 0.0, "methods": 3}}  # rte differs; sst2 has one method only
    assert "**cola: every one of the 3 methods that ran scored 0.00**" in render_markdown(summary)


def test_dev_noise_is_the_binomial_standard_error():
    runs = [make_run("rte", "hidlr", 0, 0.6, eval_rows=277), make_run("rte", "bitfit", 0, 0.5, eval_rows=277)]
    runs += [make_run("cola", "hidlr", 0, 0.3, eval_rows=1043)]  # Matthews correlation: no binomial error
    summary = build_summary(runs, machine={"cpu": "x"}, command="b.py")
    se = 100 * (0.55 * 0.45 / 277) ** 0.5
    assert summary["dev_noise"]["rte"]["standard_error_points"] == pytest.approx(se, abs=1e-4)
    assert "cola" not in summary["dev_noise"]
    assert f"rte ±{se:.2f} points (277 rows)" in render_markdown(summary)


def test_code_fingerprint_follows_the_sources_and_mixed_versions_are_flagged(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "engine.py").write_text("x = 1\n")
    (package / "sub" / "rates.py").write_text("y = 2\n")
    first = code_fingerprint(package)["hidlr_hf_sha256"]
    assert code_fingerprint(package)["hidlr_hf_sha256"] == first  # deterministic
    (package / "sub" / "rates.py").write_text("y = 3\n")
    assert code_fingerprint(package)["hidlr_hf_sha256"] != first  # any source change shows
    runs = [make_run("rte", "hidlr", s, 0.6, code={"hidlr_hf_sha256": "aaa"}) for s in (0, 1)]
    runs.append(make_run("rte", "bitfit", 0, 0.5))  # made before runs recorded their code
    summary = build_summary(runs, machine={"cpu": "x"}, command="b.py")
    assert summary["code_versions"] == {"aaa": 2, "unrecorded": 1}
    assert "- Code: 2 runs record the `hidlr_hf` source hash `aaa`; 1 earlier runs predate" in render_markdown(summary)
    runs.append(make_run("rte", "hidlr", 2, 0.6, code={"hidlr_hf_sha256": "bbb"}))
    text = render_markdown(build_summary(runs, machine={"cpu": "x"}, command="b.py"))
    assert "**Mixed code:** the runs come from 2 versions" in text and "`bbb`: 1 runs" in text


def test_linear_fit_and_index_scheme():
    fit = linear_fit([2, 4, 8, 16], [1.0, 2.0, 4.0, 8.0])
    assert fit["slope"] == pytest.approx(0.5) and fit["r2"] == pytest.approx(1.0) and fit["linear"] is True
    curved = linear_fit([1, 2, 3, 4, 5, 6], [1, 4, 9, 16, 200, 900])
    assert curved["linear"] is False and not math.isnan(curved["r2"])

    class Param:
        requires_grad = True

    class Model:
        def named_parameters(self):
            return [(f"layer.{i}.weight", Param()) for i in range(5)]

    scheme = index_scheme(Model(), 2)
    assert [g for _, g in scheme] == ["g000", "g001"]
    assert re.search(scheme[0][0], "layer.4.weight") and not re.search(scheme[0][0], "layer.1.weight")
    assert not re.search(scheme[0][0], "layer.44.weight")
