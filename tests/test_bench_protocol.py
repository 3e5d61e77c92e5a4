"""The benchmark's protocol and command line (benchmarks/hidlr_bench): methods, defaults, the tuning rule."""

import json
import re
from pathlib import Path

import pytest
from conftest import REPO

from hidlr_bench.cli import build_parser, resolve_args
from hidlr_bench.protocol import (
    ADAMW_EVERY_SEED,
    ALL_METHODS,
    EXTRA_METHODS,
    HIDLR_METHODS,
    METHOD_SPECS,
    METHODS,
    TASKS,
    pick_tuned,
    protocol_of,
)
from hidlr_bench.targets import TARGET_METHODS


def test_committed_results_ran_this_protocol():
    """The protocol in code is the one the committed run files record: the same tasks and methods, each method's
    spec and the shared settings as they were when it ran (a changed constant would make the results lie)."""
    results = REPO / "benchmarks" / "results" / "runs"
    assert sorted(p.name for p in results.iterdir()) == sorted(TASKS)
    args = resolve_args(build_parser().parse_args([]))
    for task in TASKS:
        assert sorted(p.name for p in (results / task).iterdir()) == sorted(ALL_METHODS), task
        for path in (results / task).glob("*/seed*.json"):
            run = json.loads(path.read_text())
            assert run["spec"] == {k: v for k, v in METHOD_SPECS[run["method"]].items() if k != "desc"}, path
            assert run["protocol"] == protocol_of(args), path


def test_method_specs_agree_with_their_names_and_the_targets():
    assert set(ALL_METHODS) == set(METHOD_SPECS) and not set(EXTRA_METHODS) & set(METHODS)
    for name, spec in METHOD_SPECS.items():
        assert spec["desc"], name
        rate = re.fullmatch(r"(?:adamw_lr|hidlr_from_)(\d+e-\d+)", name)
        if rate:  # the rate in the name is the rate the method runs at (or starts from)
            assert spec["lr"] == float(rate.group(1)), name
        assert (spec["kind"] == "hidlr") == (name in HIDLR_METHODS), name
    for tid, methods in TARGET_METHODS.items():
        assert set(methods) <= set(ALL_METHODS), tid
    assert set(ADAMW_EVERY_SEED) <= set(ALL_METHODS) and all(m.startswith("adamw_lr") for m in ADAMW_EVERY_SEED)


def test_cli_defaults_and_quick(tmp_path):
    args = resolve_args(build_parser().parse_args([]))
    assert args.tasks == TASKS and args.methods == METHODS and args.seeds == (0, 1, 2)
    assert (args.train_rows, args.steps, args.max_eval) == (1000, 60, None)
    assert Path(args.out) == REPO / "benchmarks" / "results"
    quick = resolve_args(build_parser().parse_args(["--quick"]))
    assert Path(quick.out) == REPO / "benchmarks" / "results" / "quick"  # never the real cache
    assert Path(quick.docs) == Path(quick.out) / "docs"
    assert quick.steps <= 10 and quick.max_eval == 64 and len(quick.seeds) == 1 and quick.train_rows == 64
    custom = resolve_args(build_parser().parse_args(
        ["--tasks", "rte,sst2", "--methods", "hidlr,bitfit", "--seeds", "3", "--only", "quality,report"]))
    assert custom.tasks == ("rte", "sst2") and custom.methods == ("hidlr", "bitfit") and custom.seeds == (3,)
    assert custom.sections == ("quality", "report")
    with pytest.raises(SystemExit):
        resolve_args(build_parser().parse_args(["--methods", "adamw"]))
    with pytest.raises(SystemExit):
        resolve_args(build_parser().parse_args(["--only", "everything"]))


def test_tuned_rate_ties_go_to_the_lower_training_loss_then_the_grid_order():
    assert pick_tuned({"adamw_lr1e-04": (0.0, 0.62), "adamw_lr3e-04": (0.0, 0.61), "adamw_lr1e-05": (0.0, 0.7)}) \
        == "adamw_lr3e-04"
    assert pick_tuned({"adamw_lr1e-03": (0.5, None), "adamw_lr1e-05": (0.5, None)}) == "adamw_lr1e-05"
    assert pick_tuned({"adamw_lr1e-03": (0.7, 0.9), "adamw_lr1e-05": (0.5, 0.1)}) == "adamw_lr1e-03"
    assert pick_tuned({}) is None
