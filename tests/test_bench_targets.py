"""The targets T1-T4 (benchmarks/hidlr_bench/targets.py) on fabricated runs: each met, not met, provisional, not run."""

import pytest
from bench_fixtures import make_run, overhead_pair, target

from hidlr_bench.aggregate import aggregate_tasks
from hidlr_bench.overhead import summarize_overhead
from hidlr_bench.protocol import ADAMW_GRID, DEFAULT_METHODS, RIVALS, TASKS, pick_tuned, rival_is_close, seed_rule
from hidlr_bench.report import render_markdown
from hidlr_bench.summary import build_summary
from hidlr_bench.targets import autopeft_check, check_targets

BASE = {"hidlr": 0.80, "adamw_lr5e-05": 0.798, "hidlr_from_1e-06": 0.795, "hidlr_from_1e-03": 0.805,
        "adamw_lr1e-05": 0.75, "adamw_lr3e-05": 0.79, "adamw_lr1e-04": 0.802, "adamw_lr3e-04": 0.70,
        "adamw_lr1e-03": 0.68, "adamw_lr1e-06": 0.60, "hidlr_single_group": 0.795, "gen_optim": 0.77,
        "prodigy": 0.75, "schedule_free_adamw": 0.76}


def complete_runs(score):
    """Every run of the default suite's plan, as the seed rules decide it, ``score(task, method, seed)`` each."""
    runs = []
    for t in TASKS:
        tuned = pick_tuned({m: (score(t, m, 0), 0.5) for m in ADAMW_GRID})
        for m in DEFAULT_METHODS:
            rule = seed_rule(m)
            if rule == "tuning":
                seeds = (0, 1, 2) if m == tuned else (0,)
            elif rule == "close":
                seeds = (0, 1, 2) if rival_is_close(100 * score(t, m, 0), 100 * score(t, "hidlr", 0)) else (0,)
            elif rule == "seed 0":
                seeds = (0,)
            else:
                seeds = (0, 1, 2)
            runs += [make_run(t, m, s, score(t, m, s), train_loss=0.5) for s in seeds]
    return runs


def _targets(runs, overhead_runs=()):
    return check_targets(aggregate_tasks(runs)[0], summarize_overhead(list(overhead_runs)))


def _good_overhead():
    return [r for t in ("sst2", "mrpc") for rep in (0, 1) for r in overhead_pair(t, rep)]


def test_every_target_met_on_good_complete_runs():
    targets = _targets(complete_runs(lambda t, m, s: BASE[m] + 0.001 * s), _good_overhead())
    for tid in ("T1", "T2", "T3", "T4"):
        assert target(targets, tid)["verdict"] == "met", (tid, target(targets, tid)["missing"])
    t1 = target(targets, "T1")
    row = t1["rows"][0]
    assert row["tuned"]["method"] == "adamw_lr1e-04" and row["tuned"]["values"] == pytest.approx([80.2, 80.3, 80.4])
    assert row["margin_vs_tuned"] == pytest.approx(-0.2) and row["margin_vs_default"] == pytest.approx(0.2)
    assert t1["average_margin_vs_tuned"] == pytest.approx(-0.2) and t1["aim_above_tuned"] is False  # reported only
    t3 = target(targets, "T3")
    single = next(r for r in t3["rows"] if r["rival"] == "hidlr_single_group")
    assert single["per_task"][0]["seeds"] == [0, 1, 2] and single["margin"] == pytest.approx(0.5)
    gen = next(r for r in t3["rows"] if r["rival"] == "gen_optim")
    assert gen["per_task"][0]["seeds"] == [0] and gen["margin"] == pytest.approx(3.0)  # paired on seed 0 only


@pytest.mark.parametrize("method, value, tid, field", [
    ("adamw_lr5e-05", 0.806, "T1", "met_vs_default"),  # 0.6 point behind the Trainer default: swapping in hurts
    ("adamw_lr1e-04", 0.806, "T1", "met_vs_tuned"),  # 0.6 point behind tuned AdamW
    ("hidlr_from_1e-06", 0.789, "T2", "met"),  # 1.1 points below hidlr
    ("hidlr_from_1e-03", 0.811, "T2", "met"),  # 1.1 points above: the end point still depends on the start
])
def test_t1_and_t2_not_met_by_more_than_their_margin_on_one_task(method, value, tid, field):
    def score(t, m, s):
        return value if (t, m) == ("cola", method) else BASE[m]

    found = target(_targets(complete_runs(score)), tid)
    assert found["verdict"] == "not met"
    failing = [r for r in found["rows"] if r[field] is False]
    assert [r["task"] for r in failing] == ["cola"]


def test_t3_not_met_when_a_rival_is_better_on_average():
    def score(t, m, s):
        return 0.81 if m == "prodigy" else BASE[m]

    t3 = target(_targets(complete_runs(score)), "T3")
    assert t3["verdict"] == "not met"
    assert [r["rival"] for r in t3["rows"] if r["met"] is False] == ["prodigy"]
    prodigy = next(r for r in t3["rows"] if r["rival"] == "prodigy")
    assert prodigy["margin"] == pytest.approx(-1.0) and prodigy["per_task"][0]["seeds"] == [0, 1, 2]


@pytest.mark.parametrize("change, part", [
    ({"hidlr_seconds": 460.0}, "wall_clock_met"),  # 1.15
    ({"hidlr_peak": 1700.0}, "memory_met"),  # 1.13
    ({"round_scale": 5.0}, "projected_2000_met"),  # rounds so costly that the projection misses 1.03
])
def test_t4_not_met(change, part):
    runs = [r for t in ("sst2", "mrpc") for rep in (0, 1) for r in overhead_pair(t, rep, **(change if t == "mrpc" else {}))]
    t4 = target(_targets([], runs), "T4")
    assert t4["verdict"] == "not met"
    mrpc = next(r for r in t4["rows"] if r["task"] == "mrpc")
    assert mrpc[part] is False and mrpc["met"] is False
    assert next(r for r in t4["rows"] if r["task"] == "sst2")["met"] is True


def test_t4_on_a_busy_machine_is_provisional():
    runs = [r for t in ("sst2", "mrpc") for r in overhead_pair(t, 0, other_load=1.0)]
    t4 = target(_targets([], runs), "T4")
    assert t4["met"] is True and t4["verdict"] == "provisional"
    assert any("not idle" in m for m in t4["missing"])


def test_missing_seeds_make_a_verdict_provisional_either_way():
    runs = complete_runs(lambda t, m, s: BASE[m])
    partial = [r for r in runs if not (r["method"] == "hidlr_from_1e-03" and r["seed"] == 2)]
    t2 = target(_targets(partial), "T2")
    assert t2["met"] is True and t2["verdict"] == "provisional"
    assert t2["missing"] == [f"hidlr_from_1e-03 on {t}: 2 of 3 seeds" for t in TASKS]
    behind = [dict(r, value=0.7) if r["method"] == "hidlr_from_1e-06" else r for r in partial]
    t2 = target(_targets(behind), "T2")
    assert t2["met"] is False and t2["verdict"] == "provisional"  # failing so far, but not final
    text = render_markdown(build_summary(behind, machine={"cpu": "x"}, command="b.py"))
    assert "Verdict: **provisional: not met on the runs so far**, 4 cells or runs missing (hidlr_from_1e-03 on mrpc: " \
        "2 of 3 seeds;" in text


def test_seed_0_alone_leaves_later_seeds_undecided():
    seed0 = [r for r in complete_runs(lambda t, m, s: BASE[m]) if r["seed"] == 0]
    targets = _targets(seed0)
    assert [target(targets, t)["verdict"] for t in ("T1", "T2", "T3")] == ["provisional"] * 3
    assert "hidlr on mrpc: 1 of 3 seeds" in target(targets, "T1")["missing"]
    # The rivals within a point of hidlr (single-group Hi-DLR at 79.5 against 80.0) are owed two more seeds.
    assert "hidlr_single_group on mrpc: 1 of 3 seeds" in target(targets, "T3")["missing"]
    assert not any(m.startswith("gen_optim") for m in target(targets, "T3")["missing"])


def test_quick_runs_never_decide_a_target():
    runs = [dict(r, protocol={**r["protocol"], "name": "quick"}) for r in complete_runs(lambda t, m, s: BASE[m])]
    overhead = [dict(r, protocol={**r["protocol"], "name": "quick"}) for r in _good_overhead()]
    summary = build_summary(runs, overhead, machine={"cpu": "x"}, command="b.py")
    assert [t["verdict"] for t in summary["targets"]] == ["not run yet"] * 4
    assert summary["tasks"]["mrpc"]["methods"]["hidlr"]["mean"] == pytest.approx(80.0)  # shown, not judged


def test_targets_not_run_without_data():
    targets = check_targets({}, None)
    assert [t["id"] for t in targets] == ["T1", "T2", "T3", "T4"]
    assert all(t["met"] is None and t["verdict"] == "not run yet" for t in targets)
    assert set(RIVALS) == {r["rival"] for r in target(targets, "T3")["rows"]}


def _peft_runs(adamw_load, peft_load):
    """SST-2, seed 0: AdamW at 5e-5 (400 s, steps 0.8 s) and the type-scouting automatic PEFT (300 s, steps 0.4 s after
    freezing), with the given loads of other work; the baselines it is judged against."""
    runs = [make_run("sst2", m, 0, v) for m, v in (("hidlr", 0.85), ("adamw_lr1e-04", 0.855), ("lora_r8", 0.81),
                                                   ("bitfit", 0.76))]
    runs.append(make_run("sst2", "adamw_lr5e-05", 0, 0.84, other_cpu_load=adamw_load))
    runs.append(make_run("sst2", "autopeft_1pct_types", 0, 0.85, train_seconds=300.0, trainable_params_final=179_330,
                         median_step_seconds_after_freeze=0.4, other_cpu_load=peft_load))
    return runs


def test_autopeft_whole_run_compares_idle_runs_of_the_same_seed_only():
    row = autopeft_check(aggregate_tasks(_peft_runs(0.02, 0.05))[0])["rows"][0]
    assert (row["method"], row["task"], row["idle_seeds"]) == ("autopeft_1pct_types", "sst2", [0])
    assert row["wall_clock_ratio"] == pytest.approx(300.0 / 400.0) and row["wall_clock_met"] is True
    # Step speed-up against the idle AdamW run's median step (0.8 s) over the median step after freezing (0.4 s).
    assert row["speedup"] == pytest.approx(2.0) and "idle AdamW" in row["speedup_from"]
    # 85.0 against best full FT 85.5 (within 1 point), LoRA 81, BitFit 76, 0.79% trainable: every part met.
    assert row["met"] is True
    # AdamW's run shared the machine: no wall clock is compared, and the check cannot be decided.
    busy = autopeft_check(aggregate_tasks(_peft_runs(0.9, 0.05))[0])["rows"][0]
    assert busy["wall_clock_ratio"] is None and busy["wall_clock_met"] is None and busy["met"] is None
    assert "grid" in busy["speedup_from"]
    # A whole run slower than AdamW's fails the check even where every score part is met.
    slow = _peft_runs(0.02, 0.05)
    slow[-1]["train_seconds"] = 440.0
    assert autopeft_check(aggregate_tasks(slow)[0])["rows"][0]["wall_clock_met"] is False


def test_autopeft_faces_each_peft_baseline_at_its_best_rate():
    """LoRA r8 at 2e-3 (0.86) beats both its 5e-4 run and the automatic PEFT (0.85): the row names it and fails."""
    runs = _peft_runs(0.02, 0.05) + [make_run("sst2", "lora_r8_lr2e-03", 0, 0.86),
                                     make_run("sst2", "bitfit_lr3e-03", 0, 0.70)]
    check = autopeft_check(aggregate_tasks(runs)[0])
    row = check["rows"][0]
    assert (row["lora_r8_method"], row["lora_r8"]) == ("lora_r8_lr2e-03", pytest.approx(86.0))
    # BitFit's second rate scored lower: its first one stays the reference.
    assert (row["bitfit_method"], row["bitfit"]) == ("bitfit", pytest.approx(76.0))
    assert row["beats_lora_met"] is False and row["beats_bitfit_met"] is True and row["met"] is False
    assert check["baselines"]["lora_r8"] == ["lora_r8", "lora_r8_lr2e-03"]
    # Without any LoRA run the comparison is undecided, not passed.
    no_lora = [r for r in runs if not r["method"].startswith("lora")]
    row = autopeft_check(aggregate_tasks(no_lora)[0])["rows"][0]
    assert row["lora_r8"] is None and row["beats_lora_met"] is None
