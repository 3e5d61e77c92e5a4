"""Overhead (target T4): whole runs of plain AdamW and ``hidlr`` at the same settings, side by side, and where their
cost ratio goes for longer runs.

Each pair trains the full protocol of one task twice, plain AdamW at 5e-5 then ``hidlr`` from 5e-5 (A B, then the next
pair: A B A B), each run in its own subprocess (``scripts/benchmark.py --_overhead TASK MODE REP``) with the quality
runs' code (:func:`hidlr_bench.methods.train_one`), so a run's wall clock, probe rounds and peak memory are measured
as a user would see them. Runs are cached as ``<out>/overhead/<task>/rep<k>_<mode>.json``; a pair with a missing or
failed half is run again whole, so the two halves of a pair always ran back to back.

The projection to longer runs (:func:`project_ratio`) replays the engine's own rules (the head phase of
:class:`hidlr_hf.core.rates.RateControl`, the schedule of :class:`hidlr_hf.core.schedule.ProbeSchedule`) with the
settings the run recorded, and prices each round at the seconds measured for rounds of its phase.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import REPO, SCRIPT
from .environment import code_fingerprint, command_line, machine_info
from .protocol import ADAMW_DEFAULT, BUSY_LOAD, HIDLR, PROJECTION_STEPS
from .records import read_json, rounded, write_json_atomic

MODES = {"plain": ADAMW_DEFAULT, "hidlr": HIDLR}  # A, then B


def overhead_path(out: Path, task: str, rep: int, mode: str) -> Path:
    """The cache file of one overhead run."""
    return Path(out) / "overhead" / task / f"rep{rep}_{mode}.json"


def _finished(path: Path) -> bool:
    try:
        return "error" not in read_json(path)
    except (OSError, ValueError):
        return False


def run_overhead(args, runner=None) -> dict:
    """Run the missing pairs, in the order rep 0 of every task, then rep 1, ...; each pair A (plain) then B (hidlr).
    ``runner(task, mode, rep)`` is replaceable (tests); it must leave the run's file or raise."""
    out = Path(args.out)
    runner = runner or (lambda t, m, r: spawn_overhead(args, t, m, r))
    if getattr(args, "force", False):
        shutil.rmtree(out / "overhead", ignore_errors=True)
    pairs = [(t, rep) for rep in range(args.overhead_reps) for t in args.overhead_tasks]
    todo = [(t, rep) for t, rep in pairs if not all(_finished(overhead_path(out, t, rep, m)) for m in MODES)]
    print(f"[overhead] {len(pairs)} pairs planned, {len(pairs) - len(todo)} done, {len(todo)} to run; time them on an "
          "otherwise idle machine", flush=True)
    for i, (task, rep) in enumerate(todo, 1):
        for mode in MODES:
            print(f"[overhead] ({i}/{len(todo)}) {task} rep {rep} {mode} ...", flush=True)
            runner(task, mode, rep)
            path = overhead_path(out, task, rep, mode)
            record = read_json(path) if path.is_file() else {"error": "no result file"}
            if "error" in record:
                print(f"[overhead]   failed: {record['error'][:300]}", flush=True)
            else:
                print(f"[overhead]   {record['train_seconds']:.0f} s of training, other load "
                      f"{record.get('other_cpu_load') or 0:.2f} cores", flush=True)
    return {"pairs": len(pairs), "ran": len(todo)}


def spawn_overhead(args, task: str, mode: str, rep: int) -> None:
    """One overhead run in a fresh Python process; an error record if it dies without a result."""
    from .runner import child_options, run_protocol

    path = overhead_path(args.out, task, rep, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(SCRIPT), "--_overhead", task, mode, str(rep), "--out", str(args.out)]
    cmd += child_options(args)
    with open(path.with_suffix(".log"), "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO), timeout=args.run_timeout).returncode
    if rc != 0 and not path.is_file():
        write_json_atomic(path, {"task": task, "method": MODES.get(mode), "seed": 0, "mode": mode, "rep": rep,
                                 "error": f"run process exit status {rc}", "protocol": run_protocol(args, task)})


def child_overhead(args) -> int:
    """``--_overhead TASK MODE REP``: one full-protocol run of ``MODES[MODE]`` (seed 0), written to its cache file."""
    from .methods import train_one
    from .runner import run_protocol

    task, mode, rep = args._overhead[0], args._overhead[1], int(args._overhead[2])
    path = overhead_path(args.out, task, rep, mode)
    base = {"task": task, "method": MODES.get(mode), "seed": 0, "mode": mode, "rep": rep,
            "protocol": run_protocol(args, task), "machine": machine_info(),
            "code": code_fingerprint(), "command": command_line()}
    try:
        if mode not in MODES:
            raise ValueError(f"unknown overhead mode {mode!r}; choose from {', '.join(MODES)}")
        with tempfile.TemporaryDirectory(prefix="hidlr-overhead-") as tmp:
            record = train_one(task, MODES[mode], 0, base["protocol"], Path(tmp))
    except Exception as exc:  # noqa: BLE001 - recorded; the pair is rerun on the next invocation
        traceback.print_exc()
        write_json_atomic(path, {**base, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    record.update(base, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_json_atomic(path, record)
    return 0


# -- the projection ------------------------------------------------------------------------------------------------

def phase_costs(rounds: list[dict]) -> tuple[dict, float]:
    """Median seconds and forward passes of a probe round in each phase (``head``, ``calibration``, ``steady``) from a
    run's rounds, and how much longer the first round took than a round of its phase (it also checks linearity,
    once). The first round counts for its phase only when it is that phase's only round (then its extra is 0: the
    phase's cost is overstated instead). A phase without any measured round borrows the nearest measured phase's
    costs (marked ``"from"``)."""
    from hidlr_hf.core.rates import PHASES

    ok = [r for r in rounds if r.get("status", "ok") == "ok"]
    costs = {}
    for phase in PHASES:
        these = [r for r in ok[1:] if r.get("phase") == phase]
        first_only = not these and bool(ok) and ok[0].get("phase") == phase
        if first_only:
            these = ok[:1]
        if these:
            costs[phase] = {"rounds": len(these), "seconds": statistics.median(r["seconds"] for r in these),
                            "forward_passes": statistics.median(r["forward_passes"] for r in these),
                            **({"first_only": True} if first_only else {})}
    for phase in PHASES:
        if phase not in costs and any(p in costs for p in PHASES):
            nearest = min((p for p in PHASES if p in costs and "from" not in costs[p]),
                          key=lambda p: abs(PHASES.index(p) - PHASES.index(phase)))
            costs[phase] = {**costs[nearest], "rounds": 0, "from": nearest}
    first_extra = 0.0
    if ok and ok[0].get("phase") in costs:
        first_extra = max(0.0, ok[0]["seconds"] - costs[ok[0]["phase"]]["seconds"])
    return costs, first_extra


def replay_rounds(hid: dict, costs: dict, steps: int) -> dict:
    """The probe rounds a run of ``steps`` steps would make under the engine's rules with the settings ``hid`` (a run
    file's ``hidlr`` record) holds: the head phase from ``RateControl`` (``head_steps`` for this length) and its gap,
    a round at every step in calibration, calibration ending after as many rounds as the measured run took (the cap
    if it never ended), then ``ProbeSchedule``'s spacing under the whole-run budget. Each round costs its phase's
    forward passes and seconds (:func:`phase_costs`)."""
    from hidlr_hf.core.rates import CALIBRATION, STEADY, RateControl, RateSettings
    from hidlr_hf.core.schedule import ProbeSchedule

    settings = RateSettings(**hid["rate_settings"])
    plan = hid["schedule"]
    control = RateControl(len(hid["group_names"]), hid.get("head_groups") or [], settings, total_steps=steps)
    schedule = ProbeSchedule(plan["every"], plan["overhead_budget"], plan["step_cost"], total_steps=steps)
    history = [h for h in hid.get("history") or [] if h.get("status", "ok") == "ok"]
    measured = sum(h.get("phase") == CALIBRATION for h in history)
    calibration = max(1, measured) if hid.get("final_phase") == STEADY else settings.calibration_rounds
    rounds = {phase: 0 for phase in costs}
    round_steps = []
    seconds = spent = 0.0
    done = 0
    # The engine's loop (HiDLR.probe_due, then the end of HiDLR._probe_round), with calibration's end taken from the
    # measured run instead of its rates; tests/test_bench_overhead.py checks this replay against a real engine.
    for step in range(steps):
        if control.begin_step(step) and schedule.every == "auto":
            schedule.next_step = min(schedule.next_step, step)  # calibration starts at once (HiDLR._begin_step)
        if not schedule.due(step):
            continue
        phase = control.phase
        round_steps.append(step)
        passes = max(1, int(round(costs[phase]["forward_passes"])))
        spent += passes
        seconds += costs[phase]["seconds"]
        rounds[phase] += 1
        if phase == CALIBRATION:
            done += 1
            if done >= calibration:
                control.phase = STEADY
        schedule.after_round(step, passes, dense_gap=control.dense_gap if control.dense else None, spent=int(spent))
    return {"steps": steps, "rounds": rounds, "round_steps": round_steps, "forward_passes": int(spent),
            "probe_seconds": seconds, "head_steps": control.head_steps, "calibration_rounds": calibration}


def project_ratio(plain: dict, hidlr: dict, lengths=PROJECTION_STEPS) -> dict:
    """One pair's whole-run ratio measured, and projected to ``lengths`` steps: ``1 + (other x N + probing(N)) /
    (plain step x N)``, where ``other`` is the pair's measured extra time outside probe rounds per step (probe batches,
    the engine's bookkeeping; it may come out negative by timing noise) and ``probing(N)`` the replayed rounds'
    seconds plus the first round's extra. The replay at the measured length checks the model against the
    measured probe seconds."""
    hid = hidlr["hidlr"]
    steps = plain["steps"]
    plain_step = plain["train_seconds"] / steps
    other = hidlr["train_seconds"] - hid["probe_seconds"] - plain["train_seconds"]
    costs, first_extra = phase_costs(hid.get("round_details") or [])
    out = {"measured_ratio": hidlr["train_seconds"] / plain["train_seconds"], "plain_step_seconds": plain_step,
           "probe_seconds": hid["probe_seconds"], "other_seconds": other, "phase_costs": costs,
           "first_round_extra_seconds": first_extra, "projected": {}}
    if not costs:
        out["why_no_projection"] = "no probe rounds measured"
        return out
    try:
        replayed = replay_rounds(hid, costs, steps)
        out["replayed"] = {**replayed, "probe_seconds": replayed["probe_seconds"] + first_extra}
        for n in lengths:
            r = replay_rounds(hid, costs, int(n))
            out["projected"][str(n)] = 1.0 + (other / steps * n + r["probe_seconds"] + first_extra) / (plain_step * n)
            out.setdefault("projected_rounds", {})[str(n)] = r["rounds"]
    except (KeyError, TypeError, ValueError) as exc:  # a run recorded by an engine whose settings differ
        out["why_no_projection"] = f"cannot replay the recorded settings: {type(exc).__name__}: {exc}"
    return out


def summarize_overhead(runs: list[dict]) -> dict:
    """The overhead section: per task, every pair's wall-clock and memory ratios and projections, their
    aggregates, and which timed runs shared the machine with other work."""
    tasks = {}
    busy = []
    for run in runs:
        load = run.get("other_cpu_load")
        if "error" not in run and load is not None and load > BUSY_LOAD:
            busy.append(f"{run['task']} rep {run['rep']} {run['mode']}: {load:.2f} cores of other work")
    for task in sorted({r.get("task") for r in runs if r.get("task")}):
        by_rep: dict = {}
        for run in runs:
            if run.get("task") == task and "error" not in run:
                by_rep.setdefault(run["rep"], {})[run["mode"]] = run
        pairs = []
        for rep in sorted(by_rep):
            pair = by_rep[rep]
            if set(pair) < set(MODES):
                continue
            plain, hidlr = pair["plain"], pair["hidlr"]
            projection = project_ratio(plain, hidlr)
            peaks = plain.get("peak_rss_mb"), hidlr.get("peak_rss_mb")
            memory = peaks[1] / peaks[0] if all(peaks) else None
            pairs.append({
                "rep": rep, "steps": plain["steps"], "plain_seconds": rounded(plain["train_seconds"], 2),
                "hidlr_seconds": rounded(hidlr["train_seconds"], 2), "ratio": rounded(projection["measured_ratio"], 4),
                "probe_seconds": rounded(projection["probe_seconds"], 2),
                "other_seconds": rounded(projection["other_seconds"], 2),
                "rounds": hidlr["hidlr"].get("rounds"), "forward_passes": hidlr["hidlr"].get("forward_passes"),
                "replayed_probe_seconds": rounded((projection.get("replayed") or {}).get("probe_seconds"), 2),
                "projected": {k: rounded(v, 4) for k, v in projection["projected"].items()},
                "projected_rounds": projection.get("projected_rounds"),
                "why_no_projection": projection.get("why_no_projection"),
                "phase_costs": {p: {k: (rounded(v, 3) if isinstance(v, float) else v) for k, v in c.items()}
                                for p, c in projection["phase_costs"].items()},
                "plain_peak_rss_mb": rounded(peaks[0], 1), "hidlr_peak_rss_mb": rounded(peaks[1], 1),
                "memory_ratio": rounded(memory, 4),
                "other_cpu_load": [rounded(plain.get("other_cpu_load"), 3), rounded(hidlr.get("other_cpu_load"), 3)],
                "protocol": plain.get("protocol", {}).get("name"),
            })
        if not pairs:
            continue
        lengths = sorted({k for p in pairs for k in p["projected"]}, key=int)
        memories = [p["memory_ratio"] for p in pairs if p["memory_ratio"] is not None]
        tasks[task] = {
            "pairs": pairs, "pairs_count": len(pairs), "steps": pairs[0]["steps"],
            "wall_clock_ratio": rounded(sum(p["hidlr_seconds"] for p in pairs) / sum(p["plain_seconds"] for p in pairs), 4),
            "pair_ratios": [p["ratio"] for p in pairs],
            "memory_ratio": rounded(statistics.median(memories), 4) if memories else None,
            "projected": {n: rounded(statistics.fmean(p["projected"][n] for p in pairs if n in p["projected"]), 4)
                          for n in lengths},
        }
    return {"tasks": tasks, "busy_runs": busy, "busy_threshold_cores": BUSY_LOAD,
            "protocols": sorted({p["protocol"] or "unknown" for t in tasks.values() for p in t["pairs"]})}


def load_overhead_runs(out: Path) -> list[dict]:
    """Every overhead run file under ``<out>/overhead``."""
    from .aggregate import load_runs

    return load_runs(out, "overhead/*/rep*_*.json")
