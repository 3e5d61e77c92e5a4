"""The benchmark's plans and run cache (benchmarks/hidlr_bench/runner.py, cli.py, overhead.py) on fabricated run
files: which runs each suite plans, the seed rules decided when a run comes up, resume."""

import json
from argparse import Namespace

from bench_fixtures import make_run, overhead_pair, write_overhead, write_runs

from hidlr_bench.aggregate import load_runs
from hidlr_bench.cli import build_parser, build_plan, resolve_args
from hidlr_bench.overhead import overhead_path, run_overhead
from hidlr_bench.protocol import (
    ABLATION_METHODS,
    ADAMW_DEFAULT,
    ADAMW_GRID,
    DEFAULT_METHODS,
    HIDLR_STARTS,
    PEFT_METHODS,
    RIVALS,
    TASKS,
)
from hidlr_bench.records import write_json_atomic
from hidlr_bench.runner import pending_runs, plan_runs, run_path, run_quality, tuned_adamw_from_files
from hidlr_bench.summary import build_summary


def _plan(*argv):
    return build_plan(resolve_args(build_parser().parse_args(list(argv))))


def _fake_runner(out, seed0_scores, calls, later=0.5):
    """A fake runner: seed 0 of a method scores ``seed0_scores.get(method, 0.5)``, later seeds ``later``."""

    def runner(task, method, seed):
        calls.append((task, method, seed))
        value = seed0_scores.get(method, 0.5) if seed == 0 else later
        write_runs(out, [make_run(task, method, seed, value, train_loss=0.5)])

    return runner


def test_each_suite_plans_its_methods_tasks_and_seeds():
    default = _plan()
    assert {m for _, m, _ in default} == set(DEFAULT_METHODS) and {t for t, _, _ in default} == set(TASKS)
    for method in ("hidlr", ADAMW_DEFAULT) + HIDLR_STARTS:
        assert {(t, s) for t, m, s in default if m == method} == {(t, s) for t in TASKS for s in (0, 1, 2)}, method
    assert {s for _, m, s in default if m == "adamw_lr1e-06"} == {0}
    assert len(default) == len(TASKS) * (13 * 3 + 1)  # 160 candidates; the seed rules decide the later seeds
    ablation = _plan("--suite", "ablation")
    assert {t for t, _, _ in ablation} == {"mrpc", "sst2"} and {s for _, _, s in ablation} == {0}
    assert {m for _, m, _ in ablation} == set(HIDLR_STARTS) | set(ABLATION_METHODS) and len(ablation) == 2 * 27
    peft = _plan("--suite", "peft")
    assert {m for _, m, _ in peft} == set(PEFT_METHODS) and len(peft) == len(TASKS) * len(PEFT_METHODS) * 3
    # An ablation method named with --methods still runs on its own tasks and seed 0 only.
    assert _plan("--methods", "hidlr_no_jumps", "--tasks", "rte,sst2") == [("sst2", "hidlr_no_jumps", 0)]


def test_priority_order_puts_seed_0_of_every_task_first_and_task_order_finishes_a_task():
    plan = plan_runs(["mrpc", "cola"], ["hidlr", "prodigy"], [0, 1, 2])
    assert plan[:4] == [("mrpc", "hidlr", 0), ("mrpc", "prodigy", 0), ("cola", "hidlr", 0), ("cola", "prodigy", 0)]
    assert [s for _, _, s in plan] == sorted(s for _, _, s in plan)
    by_task = plan_runs(["mrpc", "cola"], ["hidlr", "prodigy"], [0, 1, 2], order="task")
    assert [t for t, _, _ in by_task] == ["mrpc"] * 6 + ["cola"] * 6
    assert by_task[:2] == [("mrpc", "hidlr", 0), ("mrpc", "prodigy", 0)]  # seed 0 first within a task
    assert sorted(plan) == sorted(by_task)


def test_pending_skips_finished_runs(tmp_path):
    plan = plan_runs(["rte", "cola"], ["hidlr", "bitfit"], [0, 1])
    write_runs(tmp_path, [make_run("rte", "hidlr", 0, 0.6)])
    write_json_atomic(run_path(tmp_path, "cola", "hidlr", 0), {"error": "boom"})
    broken = run_path(tmp_path, "rte", "bitfit", 0)
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")  # a half-written file (not from write_json_atomic) is not a finished run
    pending = pending_runs(tmp_path, plan)
    assert ("rte", "hidlr", 0) not in pending and ("cola", "hidlr", 0) not in pending
    assert ("rte", "bitfit", 0) in pending and len(pending) == 6
    assert ("cola", "hidlr", 0) in pending_runs(tmp_path, plan, retry_errors=True)


def test_write_json_atomic_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json_atomic(path, {"x": float("nan"), "y": (1, 2)})
    assert json.loads(path.read_text()) == {"x": None, "y": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_run_quality_does_not_rerun_present_files_and_resumes(tmp_path):
    write_runs(tmp_path, [make_run("rte", "hidlr", 0, 0.6)])
    calls = []

    def runner(task, method, seed):
        calls.append((task, method, seed))
        if method == "prodigy":
            write_json_atomic(run_path(tmp_path, task, method, seed),
                              {"task": task, "method": method, "seed": seed, "error": "diverged"})
        else:
            write_runs(tmp_path, [make_run(task, method, seed, 0.5)])

    args = Namespace(out=str(tmp_path), retry_errors=False)
    plan = plan_runs(["rte"], ["hidlr", "bitfit", "prodigy"], [0])
    counts = run_quality(args, plan, runner=runner)
    assert calls == [("rte", "bitfit", 0), ("rte", "prodigy", 0)]
    assert counts == {"planned": 3, "skipped": 1, "ran": 2, "failed": 1, "not_needed": 0}
    calls.clear()
    assert run_quality(args, plan, runner=runner)["ran"] == 0 and calls == []  # resume: nothing left
    args.retry_errors = True
    run_quality(args, plan, runner=runner)
    assert calls == [("rte", "prodigy", 0)]


def test_the_tuned_rate_and_adamw_5e5_run_on_every_seed(tmp_path):
    scores = {"adamw_lr1e-05": 0.60, "adamw_lr3e-05": 0.64, "adamw_lr5e-05": 0.62, "adamw_lr1e-04": 0.61,
              "adamw_lr3e-04": 0.63, "adamw_lr1e-03": 0.50}
    calls = []
    plan = plan_runs(["rte"], list(ADAMW_GRID) + ["hidlr"], [0, 1, 2])
    args = Namespace(out=str(tmp_path), retry_errors=False, adamw_grid="tuned")
    counts = run_quality(args, plan, runner=_fake_runner(tmp_path, scores, calls))
    later = {(m, s) for _, m, s in calls if s > 0}
    # 3e-05 won seed 0; 5e-05, the Trainer's default, runs on every seed although it was not the best.
    assert later == {(m, s) for m in ("adamw_lr3e-05", ADAMW_DEFAULT, "hidlr") for s in (1, 2)}
    assert counts["ran"] == 7 + 6 and counts["not_needed"] == 8
    assert tuned_adamw_from_files(tmp_path, "rte") == "adamw_lr3e-05"
    summary = build_summary(load_runs(tmp_path), machine={"cpu": "x"}, command="b.py")
    cells = summary["coverage"]["default"]["cells"]
    assert cells["adamw_lr1e-04"]["rte"] == {"have": 1, "want": 1, "decided": True}
    assert cells["adamw_lr3e-05"]["rte"] == {"have": 3, "want": 3, "decided": True}
    # every_seed runs the rest of the grid; nothing is rerun.
    calls.clear()
    args.adamw_grid = "every_seed"
    run_quality(args, plan, runner=_fake_runner(tmp_path, scores, calls))
    assert sorted(calls) == sorted(("rte", m, s) for m in ("adamw_lr1e-05", "adamw_lr1e-04", "adamw_lr3e-04",
                                                           "adamw_lr1e-03") for s in (1, 2))


def test_when_5e5_is_the_tuned_rate_no_other_grid_rate_gets_more_seeds(tmp_path):
    scores = {m: 0.6 for m in ADAMW_GRID} | {ADAMW_DEFAULT: 0.7}
    calls = []
    args = Namespace(out=str(tmp_path), retry_errors=False, adamw_grid="tuned")
    run_quality(args, plan_runs(["mrpc"], list(ADAMW_GRID), [0, 1, 2]), runner=_fake_runner(tmp_path, scores, calls))
    assert {(m, s) for _, m, s in calls if s > 0} == {(ADAMW_DEFAULT, 1), (ADAMW_DEFAULT, 2)}


def test_a_later_seed_of_a_grid_rate_waits_for_the_tuning_grid(tmp_path, capsys):
    calls = []
    args = Namespace(out=str(tmp_path), retry_errors=False, adamw_grid="tuned")
    plan = plan_runs(["mrpc"], ["adamw_lr1e-04", ADAMW_DEFAULT], [1])
    counts = run_quality(args, plan, runner=_fake_runner(tmp_path, {}, calls))
    assert calls == [("mrpc", ADAMW_DEFAULT, 1)] and counts["not_needed"] == 1
    assert "the AdamW grid on tuning seed 0 is incomplete for mrpc" in capsys.readouterr().out


def test_a_rival_within_a_point_of_hidlr_on_seed_0_gets_every_seed(tmp_path, capsys):
    # hidlr 80.0 on seed 0; prodigy 79.2 (within 1 point), gen_optim 78.5 (1.5 behind), schedule-free 83 (above),
    # single-group Hi-DLR exactly 1 point behind (within).
    scores = {"hidlr": 0.80, "prodigy": 0.792, "gen_optim": 0.785, "schedule_free_adamw": 0.83,
              "hidlr_single_group": 0.79}
    calls = []
    args = Namespace(out=str(tmp_path), retry_errors=False, adamw_grid="tuned")
    counts = run_quality(args, plan_runs(["mrpc"], ["hidlr"] + list(RIVALS), [0, 1, 2]),
                         runner=_fake_runner(tmp_path, scores, calls))
    later = {m for _, m, s in calls if s > 0}
    assert later == {"hidlr", "prodigy", "schedule_free_adamw", "hidlr_single_group"}
    assert counts["not_needed"] == 2 and "gen_optim seed1: not run, seed 0: 78.50 against hidlr 80.00" in \
        capsys.readouterr().out
    cov = build_summary(load_runs(tmp_path), machine={"cpu": "x"}, command="b.py")["coverage"]["default"]["cells"]
    assert cov["gen_optim"]["mrpc"] == {"have": 1, "want": 1, "decided": True}
    assert cov["prodigy"]["mrpc"] == {"have": 3, "want": 3, "decided": True}


def test_a_rivals_later_seeds_wait_for_seed_0_of_both(tmp_path, capsys):
    write_runs(tmp_path, [make_run("cola", "prodigy", 0, 0.3)])  # hidlr's seed 0 is missing
    calls = []
    args = Namespace(out=str(tmp_path), retry_errors=False, adamw_grid="tuned")
    counts = run_quality(args, [("cola", "prodigy", 1)], runner=_fake_runner(tmp_path, {}, calls))
    assert calls == [] and counts["not_needed"] == 1
    assert "needs seed 0 of prodigy and hidlr on cola" in capsys.readouterr().out


def test_overhead_runs_alternate_and_a_half_pair_is_run_again_whole(tmp_path):
    calls = []

    def runner(task, mode, rep):
        calls.append((task, mode, rep))
        write_overhead(tmp_path, [r for r in overhead_pair(task, rep) if r["mode"] == mode])

    args = Namespace(out=str(tmp_path), overhead_tasks=("sst2", "mrpc"), overhead_reps=2, force=False)
    assert run_overhead(args, runner=runner) == {"pairs": 4, "ran": 4}
    assert calls == [(t, m, r) for r in (0, 1) for t in ("sst2", "mrpc") for m in ("plain", "hidlr")]  # A B A B
    calls.clear()
    overhead_path(tmp_path, "mrpc", 1, "hidlr").unlink()  # an interrupted pair
    run_overhead(args, runner=runner)
    assert calls == [("mrpc", "plain", 1), ("mrpc", "hidlr", 1)]  # both halves again, back to back
    calls.clear()
    args.force = True
    run_overhead(args, runner=runner)
    assert len(calls) == 8
