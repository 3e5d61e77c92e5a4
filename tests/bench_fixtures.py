"""Fabricated benchmark run files and sections, shared by the tests of benchmarks/hidlr_bench (no model trained)."""

from hidlr_bench.aggregate import aggregate_tasks
from hidlr_bench.overhead import overhead_path
from hidlr_bench.protocol import EXPECTED_STEPS, protocol_of, spec_record
from hidlr_bench.records import write_json_atomic
from hidlr_bench.runner import run_path

RATE_SETTINGS = {"horizon": 8.0, "ratio_limit": 4.0, "smoothing": 0.1, "trust_region": 2.0, "calibration_rounds": 6,
                 "head_phase": 0.06, "jump_limit": 100.0, "verify_ratio": 0.5, "lr_min": 1e-8, "lr_max": 1.0}


def hidlr_record(steps=460, probe_seconds=10.0, start=5e-5, round_scale=1.0):
    """A run file's ``hidlr`` record: two groups (``attention``, ``head``), a head phase, calibration, steady rounds
    (the first round 3 s, a head round 0.2 s, the others 0.5 s, times ``round_scale``)."""
    head_steps = round(0.06 * steps)
    phases = ["head"] * 3 + ["calibration"] * 4 + ["steady"] * 3
    steps_of = [0, 2, 4, head_steps, head_steps + 1, head_steps + 2, head_steps + 3, 100, 200, 300]
    passes = {"head": 3, "calibration": 5, "steady": 5}
    return {
        "group_names": ["attention", "head"],
        "base_rates": [1e-4, 2e-3],
        "rates_in_force": [5e-5, 1e-3],
        "influence": [1e-9, 1e-6],
        "history": [{"step": s, "phase": p, "status": "ok", "rates": [start * (1 + i), start * (2 + i)], "loss": 0.6}
                    for i, (s, p) in enumerate(zip(steps_of, phases))],
        "round_details": [{"step": s, "phase": p, "status": "ok", "forward_passes": passes[p],
                           "seconds": round_scale * (3.0 if i == 0 else 0.2 if p == "head" else 0.5)}
                          for i, (s, p) in enumerate(zip(steps_of, phases))],
        "rounds": len(phases),
        "probe_seconds": probe_seconds,
        "forward_passes": sum(passes[p] for p in phases),
        "rate_settings": dict(RATE_SETTINGS),
        "schedule": {"every": "auto", "overhead_budget": 0.05, "step_cost": 3.0, "total_steps": steps},
        "head_groups": [1],
        "head_steps": head_steps,
        "final_phase": "steady",
    }


def make_run(task, method, seed, value, **extra):
    """A finished run file of ``method`` on ``task`` (the realistic protocol) scoring ``value`` (0-1); ``extra``
    overrides fields."""
    steps = EXPECTED_STEPS[task]
    run = {
        "task": task,
        "method": method,
        "seed": seed,
        "metric": "matthews_correlation" if task == "cola" else "accuracy",
        "value": value,
        "loss_curve": [[10, 0.69], [20, 0.6 - 0.01 * seed]],
        "steps": steps,
        "train_seconds": 400.0,
        "seconds_per_step": 400.0 / steps,
        "median_step_seconds": 0.8,
        "peak_rss_mb": 1400.0,
        "trainable_params": 22_713_986,
        "trainable_params_final": 22_713_986,
        "total_params": 22_713_986,
        "protocol": protocol_of(task),
        "spec": spec_record(method),
        "machine": {"cpu": "Test CPU", "cores": 2, "torch": "2.13.0", "transformers": "5.24.0"},
    }
    if method.startswith("hidlr") or method.startswith("autopeft"):
        run["hidlr"] = hidlr_record(steps)
    run.update(extra)
    return run


def write_runs(out, runs):
    """Write each fabricated run where the runner caches it."""
    for run in runs:
        write_json_atomic(run_path(out, run["task"], run["method"], run["seed"]), run)


def tasks_from(means: dict, extra_runs=()):
    """Summary 'tasks' from {task: {method: value}} (value in 0-1), each on seed 0."""
    runs = [make_run(t, m, 0, v) for t, methods in means.items() for m, v in methods.items()]
    runs += list(extra_runs)
    return aggregate_tasks(runs)[0]


def target(targets, tid):
    """The target ``tid`` (T1-T4) of a list of targets."""
    return next(t for t in targets if t["id"] == tid)


def overhead_pair(task, rep, plain_seconds=400.0, hidlr_seconds=412.0, probe_seconds=10.0, plain_peak=1500.0,
                  hidlr_peak=1560.0, other_load=0.02, round_scale=1.0):
    """The two run files of one overhead pair (plain AdamW, then ``hidlr``): by default a whole-run ratio of 1.03, 2 s
    of it outside probe rounds, a memory ratio of 1.04."""
    steps = EXPECTED_STEPS[task]
    plain = make_run(task, "adamw_lr5e-05", 0, 0.8, mode="plain", rep=rep, train_seconds=plain_seconds,
                     peak_rss_mb=plain_peak, other_cpu_load=other_load)
    hidlr = make_run(task, "hidlr", 0, 0.8, mode="hidlr", rep=rep, train_seconds=hidlr_seconds, peak_rss_mb=hidlr_peak,
                     other_cpu_load=other_load, hidlr=hidlr_record(steps, probe_seconds, round_scale=round_scale))
    return [plain, hidlr]


def write_overhead(out, runs):
    """Write fabricated overhead runs where the overhead section caches them."""
    for run in runs:
        write_json_atomic(overhead_path(out, run["task"], run["rep"], run["mode"]), run)


def fabricated_scaling():
    """A scaling section with every field the report reads."""
    return {
        "batch": "8 x 64 tokens", "command": "scripts/benchmark.py --only scaling",
        "by_groups": [{"K": k, "seconds": 0.1 * (2 * k + 1), "forward_passes": 2 * k + 1, "groups": k} for k in (2, 4, 8)],
        "groups_fit": {"slope": 0.2, "intercept": 0.1, "r2": 1.0, "linear": True},
        "groups_fit_forward_passes": {"slope": 2.0, "intercept": 1.0, "r2": 1.0, "linear": True},
        "seconds_vs_forward_passes_fit": {"slope": 0.1, "intercept": 0.0, "r2": 1.0, "linear": True},
        "by_size": [{"model": "tiny", "label": "tiny BERT", "params": 4_400_000, "groups": 7, "seconds": 0.5,
                     "forward_passes": 15},
                    {"model": "minilm", "label": "MiniLM", "params": 22_713_986, "groups": 7, "seconds": 1.6,
                     "forward_passes": 15}],
        "size_fit": {"slope": 0.06, "intercept": 0.24, "r2": 1.0, "linear": True},
    }
