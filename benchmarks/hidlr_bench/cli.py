"""Benchmarks of Hi-DLR on GLUE with real MiniLM weights: quality, overhead, scaling, and a generated report.

One entry point, four sections (``--only`` picks some; without it all run, then the report)::

    python scripts/benchmark.py --only quality               # the default suite (targets T1-T3), resumable
    python scripts/benchmark.py --only quality --suite ablation
    python scripts/benchmark.py --only overhead              # target T4: on an otherwise idle machine
    python scripts/benchmark.py --only report                # summary.json + docs/BENCHMARKS.md + docs/img/*.png
    python scripts/benchmark.py --quick                      # smoke check, under benchmarks/results/quick/

Quality runs are cached one file per (task, method, seed) (:mod:`hidlr_bench.runner`), overhead runs one file per
run (:mod:`hidlr_bench.overhead`), so an interrupted benchmark continues where it stopped. The report
(``summary.json``, ``BENCHMARKS.md``) is computed only from what exists; missing cells say "not run yet". Everything
that BENCHMARKS.md states is a number held in summary.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import REPO
from .overhead import child_overhead, run_overhead
from .protocol import (
    ADAMW_GRID_MODES,
    ALL_METHODS,
    FULL,
    METHOD_SPECS,
    QUICK,
    SUITE_SEEDS,
    SUITE_TASKS,
    SUITES,
    TASKS,
    TUNING_SEED,
)
from .records import split_csv, write_json_atomic
from .report import note_command, write_report
from .runner import ORDERS, child_run, plan_runs, run_quality
from .scaling import run_scaling

SECTIONS = ("quality", "overhead", "scaling", "report")


def build_parser() -> argparse.ArgumentParser:
    """The command line of scripts/benchmark.py."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Suites: " + "; ".join(f"{s}: {', '.join(m)}" for s, m in SUITES.items()))
    p.add_argument("--quick", action="store_true", help="smoke check (a few minutes on 2 cores): SST-2, 3 methods, seed "
                   "0, 64 rows, 8 steps, 64 dev rows, one overhead pair, small scaling; writes under "
                   "benchmarks/results/quick/; never a result")
    p.add_argument("--suite", help=f"comma-separated method suites: {', '.join(SUITES)} or all (default: default)")
    p.add_argument("--methods", help="comma-separated methods, instead of the suite's (any of the epilog's)")
    p.add_argument("--tasks", help=f"comma-separated GLUE tasks (default {','.join(TASKS)}; the ablation runs on "
                   "mrpc,sst2 only)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; the ablation suite 0); which later seeds a "
                   "method runs on is decided by its seed rule")
    p.add_argument("--order", choices=ORDERS, default="priority", help="priority (default): seed 0 of every planned "
                   "method on every task first, then seed 1, then seed 2; task: one task at a time, all its seeds")
    p.add_argument("--max_eval", type=int, help="dev rows to evaluate (default: the full dev set)")
    p.add_argument("--out", help="results folder (default benchmarks/results, or benchmarks/results/quick with --quick)")
    p.add_argument("--docs", help="where BENCHMARKS.md and img/ go (default docs/, or <out>/docs with --quick)")
    p.add_argument("--only", help="comma-separated sections: quality, overhead, scaling, report (default: all)")
    p.add_argument("--adamw_grid", choices=ADAMW_GRID_MODES, default="tuned",
                   help=f"tuned (default): every AdamW grid rate on seed {TUNING_SEED}, then only the best of them on "
                        "the other seeds (AdamW at 5e-5 runs on every seed regardless); every_seed: the whole grid on "
                        "every seed")
    p.add_argument("--retry_errors", action="store_true", help="rerun cached runs that recorded an error")
    p.add_argument("--force", action="store_true", help="redo the overhead and scaling sections even if present")
    p.add_argument("--run_timeout", type=int, default=3600, help="seconds before one run is killed")
    p.add_argument("--overhead_tasks", help="tasks of the overhead pairs (default sst2,mrpc)")
    p.add_argument("--overhead_reps", type=int, help="overhead pairs per task (default 2)")
    p.add_argument("--_run", nargs=3, metavar=("TASK", "METHOD", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--_overhead", nargs=3, metavar=("TASK", "MODE", "REP"), help=argparse.SUPPRESS)
    return p


def _tasks(text, default) -> tuple:
    tasks = tuple(t.lower() for t in split_csv(text)) if text else default
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    return tasks


def resolve_args(args) -> argparse.Namespace:
    """Fill unset options from the full or the quick defaults and check names."""
    base = QUICK if args.quick else FULL
    args.tasks = _tasks(args.tasks, base["tasks"])
    args.overhead_tasks = _tasks(args.overhead_tasks, base["overhead_tasks"])
    suites = split_csv(args.suite) if args.suite else ("default",)
    if "all" in suites:
        suites = tuple(SUITES)
    bad = [s for s in suites if s not in SUITES]
    if bad:
        raise SystemExit(f"unknown suite(s) {bad}; choose from {', '.join(SUITES)} or all")
    args.suites = suites
    if args.methods:
        args.methods = split_csv(args.methods)
        unknown = [m for m in args.methods if m not in METHOD_SPECS]
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    elif args.quick:
        args.methods = base["methods"]
    args.seeds = split_csv(args.seeds, int) if args.seeds else None
    if args.quick and args.seeds is None:
        args.seeds = base["seeds"]
    if args.overhead_reps is None:
        args.overhead_reps = base["overhead_reps"]
    if args.max_eval is None and args._run is None and args._overhead is None:
        args.max_eval = base["max_eval"]
    args.scaling_groups = base["scaling_groups"]
    args.scaling_sizes = base["scaling_sizes"]
    if args.out is None:
        args.out = str(REPO / "benchmarks" / "results" / ("quick" if args.quick else ""))
    if args.docs is None:
        args.docs = str(Path(args.out) / "docs") if args.quick else str(REPO / "docs")
    sections = split_csv(args.only) if args.only else SECTIONS
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad} in --only; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    return args


def build_plan(args) -> list[tuple[str, str, int]]:
    """The candidate quality runs: ``--methods`` (on ``--seeds``, default 0,1,2), or each chosen suite's methods on
    its seeds, suite after suite; ``--tasks`` and ``--seeds`` restrict them."""
    if args.methods:
        groups = [(tuple(args.methods), args.tasks, args.seeds or FULL["seeds"])]
    else:
        groups = [(SUITES[s], [t for t in args.tasks if t in SUITE_TASKS[s]], args.seeds or SUITE_SEEDS[s])
                  for s in args.suites]
    plan = []
    for methods, tasks, seeds in groups:
        plan += plan_runs(tasks, methods, seeds, args.order)
    return list(dict.fromkeys(plan))


def main(argv=None) -> int:
    """``scripts/benchmark.py``: run the sections asked for (or, in a child process, one run)."""
    args = build_parser().parse_args(argv)
    if args._run is not None or args._overhead is not None:
        if args.out is None:
            raise SystemExit("--_run and --_overhead need --out")
        args = resolve_args(args)
        return child_run(args) if args._run is not None else child_overhead(args)
    args = resolve_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    note_command(out, args.sections)
    started = time.time()
    if "quality" in args.sections:
        run_quality(args, build_plan(args))
    if "overhead" in args.sections:
        run_overhead(args)
    if "scaling" in args.sections:
        path = out / "scaling.json"
        if path.is_file() and not args.force:
            print(f"[scaling] {path} exists; skipped (--force to redo)", flush=True)
        else:
            t0 = time.time()
            write_json_atomic(path, run_scaling(args))
            print(f"[scaling] done in {time.time() - t0:.0f} s -> {path}", flush=True)
    if "report" in args.sections:
        write_report(out, Path(args.docs))
    print(f"[benchmark] finished in {time.time() - started:.0f} s", flush=True)
    return 0
