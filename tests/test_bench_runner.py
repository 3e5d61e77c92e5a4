"""The benchmark's run cache (benchmarks/hidlr_bench/runner.py) on fabricated run files: plan, resume, the AdamW grid."""

import json
from argparse import Namespace

from bench_fixtures import make_run, write_runs

from hidlr_bench.aggregate import load_runs
from hidlr_bench.protocol import ADAMW_METHODS
from hidlr_bench.records import write_json_atomic
from hidlr_bench.runner import pending_runs, plan_runs, run_path, run_quality, tuned_adamw_from_files
from hidlr_bench.summary import build_summary


def _grid_runner(out, seed0_scores, calls):
    """A fake runner: AdamW rates score ``seed0_scores`` on seed 0 (training loss 0.5 each), everything else 0.5."""

    def runner(task, method, seed):
        calls.append((task, method, seed))
        value = seed0_scores.get(method, 0.5) if seed == 0 else 0.5
        write_runs(out, [make_run(task, method, seed, value, train_loss=0.5)])

    return runner


def test_write_json_atomic_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json_atomic(path, {"x": float("nan"), "y": (1, 2)})
    assert json.loads(path.read_text()) == {"x": None, "y": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_plan_is_seed_major_and_pending_skips_finished_runs(tmp_path):
    plan = plan_runs(["rte", "cola"], ["hidlr", "bitfit"], [0, 1])
    assert plan[:4] == [("rte", "hidlr", 0), ("rte", "bitfit", 0), ("cola", "hidlr", 0), ("cola", "bitfit", 0)]
    assert len(plan) == 8
    write_runs(tmp_path, [make_run("rte", "hidlr", 0, 0.6)])
    write_json_atomic(run_path(tmp_path, "cola", "hidlr", 0), {"error": "boom"})
    broken = run_path(tmp_path, "rte", "bitfit", 0)
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")  # a half-written file (not from write_json_atomic) is not a finished run
    pending = pending_runs(tmp_path, plan)
    assert ("rte", "hidlr", 0) not in pending and ("cola", "hidlr", 0) not in pending
    assert ("rte", "bitfit", 0) in pending and len(pending) == 6
    assert ("cola", "hidlr", 0) in pending_runs(tmp_path, plan, retry_errors=True)


def test_run_quality_does_not_rerun_present_files_and_resumes(tmp_path):
    write_runs(tmp_path, [make_run("rte", "hidlr", 0, 0.6)])
    leftover = run_path(tmp_path, "rte", "bitfit", 0).with_name("seed0.json.x1y2.tmp")
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_text("{}")  # what an interrupted write leaves: not a result
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


def test_only_the_tuned_adamw_rate_runs_after_the_tuning_seed(tmp_path):
    scores = {"adamw_lr1e-05": 0.60, "adamw_lr3e-05": 0.64, "adamw_lr1e-04": 0.61, "adamw_lr3e-04": 0.62,
              "adamw_lr1e-03": 0.50}
    calls = []
    plan = plan_runs(["rte"], list(ADAMW_METHODS) + ["hidlr"], [0, 1, 2])
    args = Namespace(out=str(tmp_path), retry_errors=False, adamw_grid="tuned")
    counts = run_quality(args, plan, runner=_grid_runner(tmp_path, scores, calls))
    later = {(m, s) for _, m, s in calls if s > 0}
    # 3e-05 won seed 0; 1e-03 is T2's comparator, so it gets every seed too.
    assert later == {(m, s) for m in ("adamw_lr3e-05", "adamw_lr1e-03", "hidlr") for s in (1, 2)}
    assert counts["ran"] == 6 + 6 and counts["not_needed"] == 6
    assert tuned_adamw_from_files(tmp_path, "rte") == "adamw_lr3e-05"
    summary = build_summary(load_runs(tmp_path), machine={"cpu": "x"}, command="b.py")
    short = summary["coverage"]["cells_with_fewer_seeds"]
    assert not any("rte" in short.get(m, {}) for m in ADAMW_METHODS)  # untuned rates need the tuning seed only
    # every_seed runs the rest of the grid; nothing is rerun.
    calls.clear()
    args.adamw_grid = "every_seed"
    run_quality(args, plan, runner=_grid_runner(tmp_path, scores, calls))
    assert sorted(calls) == sorted((("rte", m, s) for m in ("adamw_lr1e-05", "adamw_lr1e-04", "adamw_lr3e-04")
                                    for s in (1, 2)))


def test_a_later_seed_of_an_adamw_rate_waits_for_the_tuning_grid(tmp_path, capsys):
    calls = []
    args = Namespace(out=str(tmp_path), retry_errors=False, adamw_grid="tuned")
    plan = plan_runs(["mrpc"], ["adamw_lr1e-04", "adamw_lr1e-03"], [1])
    counts = run_quality(args, plan, runner=_grid_runner(tmp_path, {}, calls))
    assert calls == [("mrpc", "adamw_lr1e-03", 1)] and counts["not_needed"] == 1
    assert "the AdamW grid on tuning seed 0 is incomplete for mrpc" in capsys.readouterr().out
