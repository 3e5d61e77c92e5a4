"""Fabricated benchmark run files and sections, shared by the tests of benchmarks/hidlr_bench (no model trained)."""

from hidlr_bench.aggregate import aggregate_tasks
from hidlr_bench.records import write_json_atomic
from hidlr_bench.runner import run_path

PROTOCOL = {"model": "MiniLM", "train_rows": 1000, "steps": 125, "max_eval": None}


def make_run(task, method, seed, value, **extra):
    """A finished run file of ``method`` on ``task`` scoring ``value`` (0-1); ``extra`` overrides fields."""
    run = {
        "task": task,
        "method": method,
        "seed": seed,
        "metric": "matthews_correlation" if task == "cola" else "accuracy",
        "value": value,
        "loss_curve": [[5, 0.69], [10, 0.6 - 0.01 * seed]],
        "steps": 125,
        "seconds_per_step": 1.0,
        "median_step_seconds": 0.9,
        "peak_rss_mb": 1400.0,
        "trainable_params": 22_713_986,
        "trainable_params_final": 22_713_986,
        "total_params": 22_713_986,
        "protocol": PROTOCOL,
        "machine": {"cpu": "Test CPU", "cores": 2, "torch": "2.13.0", "transformers": "5.24.0"},
    }
    if method.startswith("hidlr") or method.startswith("autopeft"):
        run["hidlr"] = {
            "group_names": ["attention", "head"],
            "base_rates": [1e-4, 2e-3],
            "rates_in_force": [5e-5, 1e-3],
            "influence": [1e-9, 1e-6],
            "history": [{"step": 0, "rates": [5e-5, 5e-5]}, {"step": 1, "rates": [8e-5, 1e-4]}],
            "rounds": 12,
            "probe_seconds": 30.0,
        }
    run.update(extra)
    return run


def write_runs(out, runs):
    """Write each fabricated run where the runner caches it."""
    for run in runs:
        write_json_atomic(run_path(out, run["task"], run["method"], run["seed"]), run)


def tasks_from(means: dict, extra_runs=()):
    """Summary 'tasks' from {task: {method: value}} (value in 0-1)."""
    runs = [make_run(t, m, 0, v) for t, methods in means.items() for m, v in methods.items()]
    runs += list(extra_runs)
    return aggregate_tasks(runs)[0]


def target(targets, tid):
    """The target ``tid`` (T1-T4) of a list of targets."""
    return next(t for t in targets if t["id"] == tid)


def fabricated_sections():
    """An overhead and a scaling section with every field the report reads."""
    overhead = {
        "steps_per_run": 30, "reps": 2, "command": "scripts/benchmark.py --only overhead",
        "settings": {
            every: {"step_time_ratio_median": 1.02 + i / 100, "step_time_ratio_mean": 1.5 - i / 10,
                    "plain_median_step_seconds": 0.61, "hidlr_median_step_seconds": 0.63, "rounds_per_run": 12.0,
                    "seconds_per_round": 1.73, "first_round_seconds": 3.9, "rounds_measured_apart_from_first": 22, "forward_passes_per_round": 17.5,
                    "projected_ratio": {"125": 1.4, "1000": 1.07, "10000": 1.05}}
            for i, every in enumerate(["auto", "1", "10", "100"])
        },
        "memory": {"plain": {"peak_rss_mb": 1500.0, "rss_before_train_mb": 600.0, "how": "VmHWM",
                             "peak_rss_after_first_step_mb": 1500.0},
                   "hidlr": {"peak_rss_mb": 1650.0, "rss_before_train_mb": 600.0, "how": "VmHWM",
                             "peak_rss_after_first_step_mb": 1560.0}},
    }
    scaling = {
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
    return overhead, scaling
