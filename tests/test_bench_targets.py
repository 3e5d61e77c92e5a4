"""The benchmark's targets T1-T4 (benchmarks/hidlr_bench/targets.py) on fabricated numbers."""


import pytest
from bench_fixtures import make_run, target, tasks_from

from hidlr_bench.report import render_markdown
from hidlr_bench.summary import build_summary
from hidlr_bench.targets import check_targets


def test_t1_tunes_on_seed0_and_compares_that_rates_mean_over_seeds():
    # 1e-04 wins seed 0 but is unlucky on seeds 1-2; 3e-04 has a higher 1-seed mean. Tuned AdamW is 1e-04.
    runs = [make_run("sst2", m, 0, v) for m, v in (("adamw_lr1e-05", 0.60), ("adamw_lr3e-05", 0.65),
                                                     ("adamw_lr1e-04", 0.70), ("adamw_lr3e-04", 0.69),
                                                     ("adamw_lr1e-03", 0.50))]
    runs += [make_run("sst2", "adamw_lr1e-04", s, 0.60) for s in (1, 2)]
    runs += [make_run("sst2", "hidlr", s, 0.64) for s in (0, 1, 2)]
    summary = build_summary(runs, machine={"cpu": "x"}, command="b.py")
    row = target(summary["targets"], "T1")["rows"][0]
    assert row["best_adamw_method"] == "adamw_lr1e-04" and row["best_adamw_seeds"] == 3
    assert row["best_adamw"] == pytest.approx(100 * (0.70 + 0.60 + 0.60) / 3)
    assert row["gap"] == pytest.approx(row["best_adamw"] - 64.0) and row["met"] is True
    t4 = target(summary["targets"], "T4")["rows"][0]
    assert t4["autopeft"] is None  # no autopeft run; best full fine-tuning still follows the same rule:
    assert summary["tasks"]["sst2"]["methods"]["adamw_lr1e-04"]["train_losses"] == [None, None, None]
    assert "| sst2 | 64.00 | 63.33 (`adamw_lr1e-04`, 3) | 5 of 5 |" in render_markdown(summary)


def test_targets_met_on_good_numbers():
    adam = {"adamw_lr1e-05": 0.60, "adamw_lr3e-05": 0.64, "adamw_lr1e-04": 0.66, "adamw_lr3e-04": 0.62,
            "adamw_lr1e-03": 0.50, "adamw_lr1e-06": 0.52}
    others = {"hidlr": 0.663, "hidlr_from_1e-06": 0.657, "hidlr_from_1e-03": 0.66, "hidlr_single_group": 0.64,
              "gen_optim": 0.6, "prodigy": 0.55, "schedule_free_adamw": 0.63, "lora_r8": 0.61, "bitfit": 0.60}
    autopeft = make_run("rte", "autopeft_1pct", 0, 0.658, trainable_params_final=200_000,
                        median_step_seconds_after_freeze=0.5)
    tasks = tasks_from({"rte": {**adam, **others}}, [autopeft])
    targets = check_targets(tasks)
    assert target(targets, "T1")["met"] is True
    assert target(targets, "T1")["rows"][0]["best_adamw_method"] == "adamw_lr1e-04"
    assert target(targets, "T2")["met"] is True
    assert target(targets, "T3")["met"] is True
    t4 = target(targets, "T4")
    assert t4["rows"][0]["speedup"] == pytest.approx(1.8)
    assert t4["parts"] == {"budget_met": True, "full_ft_met": True, "beats_lora_met": True, "beats_bitfit_met": True,
                           "speedup_met": True}
    assert t4["met"] is True


def test_targets_not_met_on_bad_numbers():
    means = {"adamw_lr1e-04": 0.70, "adamw_lr1e-03": 0.66, "hidlr": 0.68, "hidlr_from_1e-06": 0.60,
             "hidlr_from_1e-03": 0.675, "prodigy": 0.69, "lora_r8": 0.66, "bitfit": 0.64}
    autopeft = make_run("rte", "autopeft_1pct", 0, 0.65, trainable_params_final=2_000_000,
                        median_step_seconds_after_freeze=0.8)
    targets = check_targets(tasks_from({"rte": means}, [autopeft]))
    t1 = target(targets, "T1")
    assert t1["met"] is False and t1["rows"][0]["gap"] == pytest.approx(2.0)
    t2 = target(targets, "T2")
    assert t2["met"] is False
    row_1e3 = next(r for r in t2["rows"] if r["start"] == "1e-03")
    assert row_1e3["hidlr_from_within_1"] is True and row_1e3["adamw_more_than_1_behind"] is True
    row_1e6 = next(r for r in t2["rows"] if r["start"] == "1e-06")
    assert row_1e6["adamw"] is None  # adamw_lr1e-06 not run, yet Hi-DLR from 1e-6 already misses by 8 points
    assert row_1e6["hidlr_from_within_1"] is False and row_1e6["met"] is False
    t3 = target(targets, "T3")
    assert t3["met"] is False
    assert next(r for r in t3["rows"] if r["rival"] == "prodigy")["met"] is False
    assert next(r for r in t3["rows"] if r["rival"] == "gen_optim")["met"] is None  # not run
    t4 = target(targets, "T4")
    assert t4["parts"]["budget_met"] is False and t4["parts"]["full_ft_met"] is False
    assert t4["parts"]["beats_lora_met"] is False and t4["parts"]["beats_bitfit_met"] is True
    assert t4["parts"]["speedup_met"] is False and t4["met"] is False


def test_best_of_five_needs_all_five_rates_to_be_met():
    close = check_targets(tasks_from({"rte": {"adamw_lr1e-04": 0.66, "hidlr": 0.66}}))
    assert target(close, "T1")["met"] is None  # 1 of 5 AdamW rates: not decidable as met
    behind = check_targets(tasks_from({"rte": {"adamw_lr1e-04": 0.70, "hidlr": 0.66}}))
    assert target(behind, "T1")["met"] is False  # already more than 0.5 behind one of them


def test_targets_not_run_without_data():
    targets = check_targets({})
    assert [t["id"] for t in targets] == ["T1", "T2", "T3", "T4"]
    assert all(t["met"] is None for t in targets)
