"""summary.json from fabricated run files (benchmarks/hidlr_bench): aggregation, coverage, noise, code versions, stale
runs, the ablation rows, the rate trajectories, fits."""

import json
import math
import re

import pytest
from bench_fixtures import make_run, write_runs

from hidlr_bench.aggregate import load_runs
from hidlr_bench.environment import code_fingerprint
from hidlr_bench.protocol import ABLATION_METHODS, DEFAULT_METHODS, TASKS, protocol_of
from hidlr_bench.report import render_markdown
from hidlr_bench.scaling import index_scheme, linear_fit
from hidlr_bench.summary import build_summary, stale_runs


def _summary(runs, **kw):
    return build_summary(runs, machine={"cpu": "x"}, command="b.py", **kw)


def test_summary_mean_std_and_seed_counts(tmp_path):
    runs = [make_run("rte", "hidlr", s, v) for s, v in enumerate([0.60, 0.62, 0.64])]
    runs += [make_run("rte", "bitfit", 0, 0.55)]
    runs += [{"task": "rte", "method": "prodigy", "seed": 0, "error": "RuntimeError: diverged"}]
    write_runs(tmp_path, runs)
    summary = _summary(load_runs(tmp_path))
    hidlr = summary["tasks"]["rte"]["methods"]["hidlr"]
    assert hidlr["seeds"] == 3 and hidlr["seed_ids"] == [0, 1, 2]
    assert hidlr["mean"] == pytest.approx(62.0)
    assert hidlr["std"] == pytest.approx(2.0)
    assert hidlr["rounds"] == 10 and hidlr["group_names"] == ["attention", "head"]
    bitfit = summary["tasks"]["rte"]["methods"]["bitfit"]
    assert bitfit["seeds"] == 1 and bitfit["std"] is None and bitfit["mean"] == pytest.approx(55.0)
    assert "prodigy" not in summary["tasks"]["rte"]["methods"]
    assert summary["errors"] == [{"task": "rte", "method": "prodigy", "seed": 0, "error": "RuntimeError: diverged"}]
    assert summary["tasks"]["rte"]["metric"] == "accuracy"
    assert summary["curves"]["rte"]["hidlr"]["steps"] == [10, 20]
    assert summary["curves"]["rte"]["hidlr"]["loss"][1] == pytest.approx(0.59)
    assert summary["protocols_found"]["rte"] == [protocol_of("rte")]
    json.dumps(summary, allow_nan=False)  # the summary is plain JSON


def test_coverage_follows_the_seed_rules():
    # Everything of the default suite on every seed it could get: the rules count only what they ask for.
    runs = [make_run(t, m, s, 0.6, train_loss=0.5) for t in TASKS for m in DEFAULT_METHODS for s in (0, 1, 2)]
    cov = _summary(runs)["coverage"]["default"]
    # All grid rates tie, so the grid order picks 1e-05; the rivals tie with hidlr, so they are "close".
    per_task = 3 * 4 + (3 + 4 * 1) + 1 + 3 * 4  # every-seed methods, the grid (tuned + 5e-5), 1e-6, the rivals
    assert cov["planned_runs"] == len(TASKS) * per_task and cov["finished_runs"] == cov["planned_runs"]
    assert cov["complete"] is True and cov["undecided_runs"] == 0
    short = [r for r in runs if not (r["task"] == "rte" and r["method"] == "prodigy" and r["seed"] > 0)]
    cov = _summary(short)["coverage"]["default"]
    assert cov["cells_with_fewer_seeds"] == {"prodigy": {"rte": 1}} and cov["complete"] is False
    assert cov["finished_runs"] == cov["planned_runs"] - 2
    text = render_markdown(_summary(short))
    prodigy = next(line for line in text.splitlines() if line.startswith("| `prodigy` |") and "60.00" in line)
    assert prodigy.endswith("| 60.00 (1 of 3) |")  # rte, the last column


def test_coverage_counts_undecided_later_seeds():
    seed0 = [make_run(t, m, 0, 0.6) for t in TASKS for m in DEFAULT_METHODS if m != "adamw_lr3e-04"]
    cov = _summary(seed0)["coverage"]
    # Without 3e-04 the tuned rate is unknown: each of the 5 tuning-rule rates may still be owed 2 more seeds.
    assert cov["default"]["undecided_runs"] == len(TASKS) * 5 * 2
    assert cov["ablation"]["planned_runs"] == 2 * 27 and cov["ablation"]["finished_runs"] == 2 * 3
    assert cov["peft"]["finished_runs"] == 0


def test_stale_runs_are_flagged():
    fresh = make_run("mrpc", "hidlr", 0, 0.8)
    old_protocol = make_run("mrpc", "hidlr", 1, 0.8, protocol={"train_rows": 1000, "steps": 60, "max_eval": None})
    changed_spec = make_run("sst2", "hidlr_no_jumps", 0, 0.8, spec={"kind": "hidlr", "lr": 5e-5})
    gone = dict(make_run("sst2", "adamw_lr5e-05", 0, 0.8), method="adamw_lr2e-05")
    assert stale_runs([fresh]) == []
    assert stale_runs([old_protocol, changed_spec, gone]) == [
        "mrpc hidlr seed 1: protocol differs", "sst2 hidlr_no_jumps seed 0: method spec differs",
        "sst2 adamw_lr2e-05 seed 0: unknown method or task"]
    text = render_markdown(_summary([fresh, old_protocol]))
    assert "**Runs of another protocol or method spec:** 1 run files" in text


def test_ablation_rows_pair_each_variant_with_the_full_rate_control():
    runs = [make_run("mrpc", "hidlr_from_1e-03", 0, 0.80), make_run("mrpc", "hidlr_no_jumps_from_1e-03", 0, 0.70),
            make_run("mrpc", "hidlr_no_jumps_from_1e-03", 1, 0.99)]  # another seed: not the ablation's
    rows = _summary(runs)["ablation"]
    assert len(rows) == 2 * 3 * (1 + 8)
    full = next(r for r in rows if r["task"] == "mrpc" and r["method"] == "hidlr_from_1e-03")
    variant = next(r for r in rows if r["task"] == "mrpc" and r["method"] == "hidlr_no_jumps_from_1e-03")
    assert full["margin_vs_full"] is None and full["variant"] == "full rate control" and full["start"] == 1e-3
    assert variant["run"]["value"] == pytest.approx(70.0) and variant["margin_vs_full"] == pytest.approx(-10.0)
    assert variant["variant"] == "no_jumps" and variant["run"]["final_base_rates"] == [1e-4, 2e-3]
    assert variant["run"]["probe_seconds"] == 10.0 and variant["run"]["rounds"] == 10
    assert next(r for r in rows if r["method"] == "hidlr_no_horizon")["run"] is None
    assert {r["method"] for r in rows} == {"hidlr", "hidlr_from_1e-06", "hidlr_from_1e-03"} | set(ABLATION_METHODS)


def test_rate_trajectories_mark_the_phases():
    runs = [make_run("mrpc", m, 0, 0.8) for m in ("hidlr", "hidlr_from_1e-06")] + [make_run("mrpc", "hidlr", 1, 0.8)]
    rates = _summary(runs)["rates"]
    assert rates["task"] == "mrpc" and rates["seed"] == 0 and set(rates["methods"]) == {"hidlr", "hidlr_from_1e-06"}
    r = rates["methods"]["hidlr_from_1e-06"]
    assert r["start"] == 1e-6 and r["group_names"] == ["attention", "head"] and r["total_steps"] == 460
    assert r["phases"] == ["head"] * 3 + ["calibration"] * 4 + ["steady"] * 3
    assert r["head_end"] == 28 and r["calibration_end"] == 28 + 3 + 1  # after the last calibration round
    assert r["rates"][0] == [5e-5, 1e-4] and len(r["rates"]) == len(r["steps"]) == 10


def test_dev_noise_is_the_binomial_standard_error():
    runs = [make_run("rte", "hidlr", 0, 0.6, eval_rows=277), make_run("rte", "bitfit", 0, 0.5, eval_rows=277)]
    runs += [make_run("cola", "hidlr", 0, 0.3, eval_rows=1043)]  # Matthews correlation: no binomial error
    summary = _summary(runs)
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
    summary = _summary(runs)
    assert summary["code_versions"] == {"aaa": 2}
    assert "- Code: 2 Hi-DLR runs record the `hidlr_hf` source hash `aaa` (the other" in render_markdown(summary)
    unrecorded = render_markdown(_summary(runs + [make_run("rte", "hidlr_lora", 0, 0.5)]))
    assert "- Code: 2 Hi-DLR runs record the `hidlr_hf` source hash `aaa`; 1 record none (" in unrecorded
    # AdamW does not use the engine: its runs of another source version are not "mixed code"
    adamw = make_run("rte", "adamw_lr5e-05", 0, 0.6, code={"hidlr_hf_sha256": "ccc"})
    assert _summary(runs + [adamw])["code_versions"] == {"aaa": 2}
    runs.append(make_run("rte", "hidlr", 2, 0.6, code={"hidlr_hf_sha256": "bbb"}))
    text = render_markdown(_summary(runs))
    assert "**Mixed code:** the Hi-DLR runs come from 2 versions" in text and "`bbb`: 1 runs" in text


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
