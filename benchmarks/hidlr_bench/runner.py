"""The run cache: one file per (task, method, seed), written when the run ends; what is there is never run again.

Quality runs are cached under ``<out>/runs/<task>/<method>/seed<k>.json`` (a failed run records ``{"error": ...}``),
so an interrupted benchmark continues where it stopped. Each run trains in its own subprocess
(``scripts/benchmark.py --_run TASK METHOD SEED``), which isolates failures and gives each run its own peak-memory
reading.

Which seeds a method gets is partly decided by results (:func:`~hidlr_bench.protocol.seed_rule`): an AdamW grid rate
runs on the later seeds only if it was best on the tuning seed, a T3 rival only where its seed-0 score came within a
point of ``hidlr``'s. The plan lists every candidate run; :func:`run_needed` decides each one when it comes up,
from the seed-0 run files then present.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import REPO, SCRIPT
from .environment import code_fingerprint, command_line, machine_info
from .methods import train_one
from .protocol import (
    ADAMW_GRID,
    ALL_METHODS,
    CLOSE,
    CLOSE_MARGIN,
    HIDLR,
    METHOD_SPECS,
    SEED0,
    TASKS,
    TUNING,
    TUNING_SEED,
    method_tasks,
    pick_tuned,
    protocol_of,
    rival_is_close,
    seed_rule,
)
from .records import read_json, write_json_atomic

ORDERS = ("priority", "task")


def run_path(out: Path, task: str, method: str, seed: int) -> Path:
    """The cache file of one run: ``<out>/runs/<task>/<method>/seed<seed>.json``."""
    return Path(out) / "runs" / task / method / f"seed{seed}.json"


def plan_runs(tasks, methods, seeds, order: str = "priority") -> list[tuple[str, str, int]]:
    """The candidate runs (task, method, seed) of ``methods`` on ``tasks`` and ``seeds``, each method on its own tasks
    (:func:`~hidlr_bench.protocol.method_tasks`) and, if it runs on seed 0 only, on seed 0 only.

    ``order="priority"``: seed 0 of every method on every task first (so every cell has a run, and the rules that
    look at seed 0 can decide), then seed 1, then seed 2; within a seed task by task in ``tasks``' order, methods in
    ``methods``' order. ``order="task"``: one task at a time, all its seeds, before the next task.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
    runs = [(t, m, int(s)) for s in seeds for t in tasks for m in methods
            if t in method_tasks(m) and (seed_rule(m) != SEED0 or int(s) == TUNING_SEED)]
    if order == "task":
        rank = {t: i for i, t in enumerate(tasks)}
        runs.sort(key=lambda run: rank[run[0]])  # stable: seed-major within a task
    return runs


def is_done(path: Path, retry_errors: bool = False) -> bool:
    """A finished run file exists (a failed run counts unless ``retry_errors``); unreadable files do not count."""
    if not Path(path).is_file():
        return False
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return False
    return not (retry_errors and "error" in record)


def pending_runs(out: Path, plan, retry_errors: bool = False) -> list[tuple[str, str, int]]:
    """The planned runs that have no finished file yet."""
    return [(t, m, s) for t, m, s in plan if not is_done(run_path(out, t, m, s), retry_errors)]


def tuned_adamw_from_files(out: Path, task: str) -> str | None:
    """The tuned AdamW rate of ``task`` from the tuning seed's run files; None while a grid run is missing."""
    scores = {}
    for method in ADAMW_GRID:
        path = run_path(out, task, method, TUNING_SEED)
        if not is_done(path):
            return None
        record = read_json(path)
        if "error" not in record:
            scores[method] = (record["value"], record.get("train_loss"))
    return pick_tuned(scores)


def seed0_points(out: Path, task: str, method: str) -> float | None:
    """The seed-0 score (points) of ``method`` on ``task`` from its run file; None if missing or failed."""
    path = run_path(out, task, method, TUNING_SEED)
    if not is_done(path):
        return None
    record = read_json(path)
    return None if "error" in record else 100.0 * float(record["value"])


def run_needed(out: Path, task: str, method: str, seed: int, adamw_grid: str = "tuned") -> tuple[bool, str]:
    """Whether a planned run belongs to the protocol, decided from the seed-0 run files present now, and why not
    when it does not: an AdamW grid rate off the tuning seed only if it was tuned; a T3 rival off seed 0 only if it
    came within :data:`~hidlr_bench.protocol.CLOSE_MARGIN` of ``hidlr`` on seed 0 (or above it)."""
    rule = seed_rule(method)
    if seed == TUNING_SEED:
        return True, ""
    if rule == SEED0:
        return False, f"runs on seed {TUNING_SEED} only"
    if rule == TUNING and adamw_grid != "every_seed":
        tuned = tuned_adamw_from_files(Path(out), task)
        if tuned is None:
            return False, (f"the AdamW grid on tuning seed {TUNING_SEED} is incomplete for {task}; run it first, or "
                           "pass --adamw_grid every_seed")
        return method == tuned, f"not the tuned rate ({tuned} was best on seed {TUNING_SEED})"
    if rule == CLOSE:
        rival, hidlr = seed0_points(out, task, method), seed0_points(out, task, HIDLR)
        close = rival_is_close(rival, hidlr)
        if close is None:
            return False, (f"needs seed {TUNING_SEED} of {method} and {HIDLR} on {task} to decide whether it comes "
                           f"within {CLOSE_MARGIN:g} point of {HIDLR}; run those first")
        return close, (f"seed {TUNING_SEED}: {rival:.2f} against {HIDLR} {hidlr:.2f}, more than {CLOSE_MARGIN:g} "
                       "point behind")
    return True, ""


def run_quality(args, plan, runner=None) -> dict:
    """Run what is missing of ``plan``, one subprocess per run; returns counts. ``runner(task, method, seed)``
    is replaceable (tests); it must leave a file at ``run_path`` or raise."""
    out = Path(args.out)
    runner = runner or (lambda t, m, s: spawn_run(args, t, m, s))
    todo = pending_runs(out, plan, getattr(args, "retry_errors", False))
    skipped = len(plan) - len(todo)
    print(f"[quality] {len(plan)} runs planned, {skipped} already done, {len(todo)} to run", flush=True)
    ran = failed = not_needed = 0
    for i, (task, method, seed) in enumerate(todo, 1):
        started = time.time()
        # Decided when the run comes up: the plan goes seed by seed, so the tuning seed's grid is finished by then.
        needed, why = run_needed(out, task, method, seed, getattr(args, "adamw_grid", "tuned"))
        if not needed:
            not_needed += 1
            print(f"[quality] ({i}/{len(todo)}) {task} {method} seed{seed}: not run, {why}", flush=True)
            continue
        print(f"[quality] ({i}/{len(todo)}) {task} {method} seed{seed} ...", flush=True)
        runner(task, method, seed)
        ran += 1
        path = run_path(out, task, method, seed)
        record = read_json(path) if path.is_file() else {"error": "no result file"}
        if "error" in record:
            failed += 1
            print(f"[quality]   failed: {record['error'][:300]}", flush=True)
        else:
            print(f"[quality]   {record['metric']}={record['value']:.4f}  {record['seconds_per_step']:.2f} s/step  "
                  f"({time.time() - started:.0f} s)", flush=True)
    return {"planned": len(plan), "skipped": skipped, "ran": ran, "failed": failed, "not_needed": not_needed}


def spawn_run(args, task: str, method: str, seed: int) -> None:
    """Train one (task, method, seed) in a fresh Python process; record an error if it dies without a result."""
    out = Path(args.out)
    path = run_path(out, task, method, seed)
    log = path.with_suffix(".log")
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(SCRIPT), "--_run", task, method, str(seed), "--out", str(out)]
    cmd += child_options(args)
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO))
        try:
            rc = proc.wait(timeout=args.run_timeout)
            why = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc} (out of memory?)"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc, why = -1, f"timed out after {args.run_timeout} s"
        except BaseException:  # Ctrl-C: stop the child, record nothing, so the run is redone on resume
            proc.kill()
            proc.wait()
            raise
    if rc != 0 and not path.is_file():
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        write_json_atomic(path, {"task": task, "method": method, "seed": seed, "error": f"run process {why}",
                                 "log_tail": tail, "protocol": run_protocol(args, task)})


def child_options(args) -> list[str]:
    """The options that fix a child run's protocol (``--quick``, ``--max_eval``)."""
    cmd = ["--quick"] if getattr(args, "quick", False) else []
    if getattr(args, "max_eval", None) is not None:
        cmd += ["--max_eval", str(args.max_eval)]
    return cmd


def run_protocol(args, task: str) -> dict:
    """The protocol one run of ``task`` runs under with these options."""
    return protocol_of(task, quick=getattr(args, "quick", False), max_eval=getattr(args, "max_eval", None))


def child_run(args) -> int:
    """``--_run TASK METHOD SEED``: train one run and write its file (an error record if it fails)."""
    task, method, seed = args._run[0], args._run[1], int(args._run[2])
    path = run_path(Path(args.out), task, method, seed)
    protocol = run_protocol(args, task)
    base = {"task": task, "method": method, "seed": seed, "protocol": protocol, "machine": machine_info(),
            "code": code_fingerprint(), "command": command_line()}
    started = time.time()
    try:
        if method not in METHOD_SPECS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(ALL_METHODS)}")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        with tempfile.TemporaryDirectory(prefix="hidlr-bench-") as tmp:
            record = train_one(task, method, seed, protocol, Path(tmp))
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the benchmark goes on
        traceback.print_exc()
        write_json_atomic(path, {**base, "error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc()[-4000:]})
        return 1
    record.update(base, finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_seconds=time.time() - started)
    write_json_atomic(path, record)
    print(f"{task} {method} seed{seed}: {record['metric']}={record['value']:.4f} in {record['train_seconds']:.1f} s")
    return 0
