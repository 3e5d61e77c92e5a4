"""Benchmarks of Hi-DLR on GLUE with real MiniLM weights: quality, overhead, scaling, and a generated report.

One entry point, four sections (``--only`` picks some; without it all run, then the report)::

    python scripts/benchmark.py                      # everything: quality, overhead, scaling, report
    python scripts/benchmark.py --quick              # smoke check (< 10 min on 2 cores), under benchmarks/results/quick/
    python scripts/benchmark.py --only quality --tasks rte --methods hidlr,adamw_lr1e-04 --seeds 0
    python scripts/benchmark.py --only report        # summary.json + docs/BENCHMARKS.md + docs/img/*.png

Quality runs are cached one file per (task, method, seed) (:mod:`hidlr_bench.runner`), so an interrupted benchmark
continues where it stopped. The report (``summary.json``, ``BENCHMARKS.md``) is computed only from what exists;
missing cells say "not run". Everything that BENCHMARKS.md states is a number held in summary.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import REPO
from .overhead import child_memory, run_overhead
from .protocol import ADAMW_EVERY_SEED, ADAMW_GRID_MODES, ALL_METHODS, FULL, METHOD_SPECS, QUICK, TASKS, TUNING_SEED
from .records import split_csv, write_json_atomic
from .report import note_command, write_report
from .runner import child_run, plan_runs, run_quality
from .scaling import run_scaling

SECTIONS = ("quality", "overhead", "scaling", "report")


def build_parser() -> argparse.ArgumentParser:
    """The command line of scripts/benchmark.py."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Methods: " + ", ".join(ALL_METHODS))
    p.add_argument("--quick", action="store_true", help="smoke check (< 10 min on 2 cores): SST-2, 3 methods, 1 seed, "
                   "64 rows, 8 steps, 64 dev rows, small overhead and scaling; writes under benchmarks/results/quick/")
    p.add_argument("--tasks", help=f"comma-separated GLUE tasks (default {','.join(TASKS)})")
    p.add_argument("--methods", help="comma-separated methods (default: all of the issue's list)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--train_rows", type=int, help="training rows per task (default 1000)")
    p.add_argument("--steps", type=int, help="optimizer steps per run (default 60: one pass over 960 of the 1000 rows)")
    p.add_argument("--max_eval", type=int, help="dev rows to evaluate (default: the full dev set)")
    p.add_argument("--out", help="results folder (default benchmarks/results, or benchmarks/results/quick with --quick)")
    p.add_argument("--docs", help="where BENCHMARKS.md and img/ go (default docs/, or <out>/docs with --quick)")
    p.add_argument("--only", help="comma-separated sections: quality, overhead, scaling, report (default: all)")
    p.add_argument("--adamw_grid", choices=ADAMW_GRID_MODES, default="tuned",
                   help=f"tuned (default): every AdamW rate on seed {TUNING_SEED}, then only the best of them (and "
                        f"{', '.join(ADAMW_EVERY_SEED)}) on the other seeds; every_seed: the whole grid on every seed")
    p.add_argument("--retry_errors", action="store_true", help="rerun cached runs that recorded an error")
    p.add_argument("--force", action="store_true", help="redo the overhead and scaling sections even if present")
    p.add_argument("--run_timeout", type=int, default=3600, help="seconds before one quality run is killed")
    p.add_argument("--overhead_steps", type=int, help="steps per overhead run (default 25)")
    p.add_argument("--overhead_reps", type=int, help="A/B repetitions per hidlr_every setting (default 2)")
    p.add_argument("--overhead_rows", type=int, help="SST-2 rows for the overhead runs (default 512)")
    p.add_argument("--_run", nargs=3, metavar=("TASK", "METHOD", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--_mem", choices=("plain", "hidlr"), help=argparse.SUPPRESS)
    return p


def resolve_args(args) -> argparse.Namespace:
    """Fill unset options from the full or the quick defaults and check names."""
    base = QUICK if args.quick else FULL
    args.tasks = split_csv(args.tasks) if args.tasks else base["tasks"]
    args.methods = split_csv(args.methods) if args.methods else base["methods"]
    args.seeds = split_csv(args.seeds, int) if args.seeds else base["seeds"]
    for key in ("train_rows", "steps", "overhead_steps", "overhead_reps", "overhead_rows"):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
    if args.max_eval is None and args._run is None:
        args.max_eval = base["max_eval"]
    args.scaling_groups = base["scaling_groups"]
    args.scaling_sizes = base["scaling_sizes"]
    if args.out is None:
        args.out = str(REPO / "benchmarks" / "results" / ("quick" if args.quick else ""))
    if args.docs is None:
        args.docs = str(Path(args.out) / "docs") if args.quick else str(REPO / "docs")
    from_tasks = {t for t in args.tasks if t.lower() not in TASKS}
    if from_tasks:
        raise SystemExit(f"unknown task(s) {sorted(from_tasks)}; choose from {', '.join(TASKS)}")
    args.tasks = tuple(t.lower() for t in args.tasks)
    unknown = [m for m in args.methods if m not in METHOD_SPECS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    sections = split_csv(args.only) if args.only else SECTIONS
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad} in --only; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    return args


def main(argv=None) -> int:
    """``scripts/benchmark.py``: run the sections asked for (or one run, or one memory reading, in a child)."""
    args = build_parser().parse_args(argv)
    if args._run is not None:
        if args.out is None:
            raise SystemExit("--_run needs --out")
        args = resolve_args(args)
        return child_run(args)
    args = resolve_args(args)
    if args._mem is not None:
        return child_memory(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    note_command(out, args.sections)
    started = time.time()
    if "quality" in args.sections:
        run_quality(args, plan_runs(args.tasks, args.methods, args.seeds))
    for section, runner in (("overhead", run_overhead), ("scaling", run_scaling)):
        if section not in args.sections:
            continue
        path = out / f"{section}.json"
        if path.is_file() and not args.force:
            print(f"[{section}] {path} exists; skipped (--force to redo)", flush=True)
            continue
        t0 = time.time()
        write_json_atomic(path, runner(args))
        print(f"[{section}] done in {time.time() - t0:.0f} s -> {path}", flush=True)
    if "report" in args.sections:
        write_report(out, Path(args.docs))
    print(f"[benchmark] finished in {time.time() - started:.0f} s", flush=True)
    return 0
