"""The benchmark's protocol and command line (benchmarks/hidlr_bench): tasks, methods, suites, seed rules, defaults."""

import re
import types
from pathlib import Path

import pytest
from conftest import GLUE_DIR, REPO

from hidlr_bench.aggregate import load_runs
from hidlr_bench.cli import build_parser, resolve_args
from hidlr_bench.overhead import load_overhead_runs
from hidlr_bench.protocol import (
    ABLATION_METHODS,
    ABLATIONS,
    ADAMW_DEFAULT,
    ADAMW_GRID,
    ALL_METHODS,
    AUTOPEFT_METHODS,
    CLOSE,
    DEFAULT_METHODS,
    EVERY_SEED,
    EXPECTED_STEPS,
    HIDLR_METHODS,
    HIDLR_STARTS,
    LORA,
    METHOD_SPECS,
    PEFT_METHODS,
    RIVALS,
    SEED0,
    SUITES,
    TASK_PROTOCOL,
    TASKS,
    TUNING,
    pick_tuned,
    planned_steps,
    protocol_of,
    rival_is_close,
    seed_rule,
)
from hidlr_bench.summary import stale_runs
from hidlr_bench.targets import TARGET_METHODS


def test_committed_results_ran_this_protocol():
    """Every committed run file (quality and overhead) records the protocol and method spec in code now: a changed
    constant would make the committed results lie. (The stale-run check itself is tested on fabricated files.)"""
    results = REPO / "benchmarks" / "results"
    assert stale_runs(load_runs(results)) == []
    assert stale_runs(load_overhead_runs(results)) == []


def test_committed_runs_trained_the_protocols_length():
    """Every committed quality run trained its task's full length (a run cut short, or one that trained 0 steps,
    would rank nothing), and that length is realistic: at least 400 optimizer steps on every task."""
    assert min(EXPECTED_STEPS.values()) >= 400
    runs = [r for r in load_runs(REPO / "benchmarks" / "results") if "error" not in r]
    assert runs, "no committed quality runs"
    short = [f"{r['task']}/{r['method']}/seed{r['seed']}: {r.get('steps')} steps" for r in runs
             if r.get("steps") != EXPECTED_STEPS[r["task"]]]
    assert short == []


def test_the_default_suite_is_the_issues_list():
    assert set(ADAMW_GRID) == {f"adamw_lr{lr}" for lr in ("1e-05", "3e-05", "5e-05", "1e-04", "3e-04", "1e-03")}
    assert set(DEFAULT_METHODS) == set(ADAMW_GRID) | {"adamw_lr1e-06", "hidlr", "hidlr_from_1e-06",
                                                      "hidlr_from_1e-03"} | set(RIVALS)
    assert DEFAULT_METHODS[:2] == ("hidlr", ADAMW_DEFAULT)  # the T1 comparison runs first on every seed
    assert not set(PEFT_METHODS) & set(DEFAULT_METHODS) and not set(ABLATION_METHODS) & set(DEFAULT_METHODS)
    assert {"lora_r8", "lora_plus", "bitfit", "autopeft_1pct"} <= set(SUITES["peft"])
    # Issue 15's scouting variants: per layer, per module type, and over LoRA on every linear layer.
    assert set(AUTOPEFT_METHODS) <= set(SUITES["peft"])
    assert [METHOD_SPECS[m]["grouping"] for m in AUTOPEFT_METHODS[:3]] == ["module_type_by_layer", "module_type",
                                                                           "module_type_by_layer"]
    # Per layer with both LoRA factors in one group: every layer of MiniLM, the pooler's LoRA and the head.
    by_layer = METHOD_SPECS["autopeft_lora_layers_1pct"]["grouping"]
    assert list(by_layer) == [f"layers.{i}.lora" for i in range(6)] + ["pooler.lora", "head"]
    name = "base_model.model.bert.encoder.layer.{}.attention.self.query.lora_{}.default.weight"
    assert all(re.search(by_layer[f"layers.{i}.lora"], name.format(i, f)) for i in range(6) for f in "AB")
    assert not re.search(by_layer["layers.1.lora"], name.format(0, "A"))
    assert not re.search(by_layer["layers.1.lora"], "base_model.model.bert.encoder.layer.1.attention.self.query.base_layer.weight")
    assert METHOD_SPECS["autopeft_lora_1pct"]["lora_targets"] == "all-linear"
    assert METHOD_SPECS["autopeft_lora_1pct"]["lora_dropout"] == 0.0 and "lora_dropout" not in METHOD_SPECS["lora_r8"]
    assert set(SUITES["ablation"]) == set(HIDLR_STARTS) | set(ABLATION_METHODS)
    assert len(ABLATION_METHODS) == len(ABLATIONS) * len(HIDLR_STARTS) == 24
    assert set(ALL_METHODS) == set(METHOD_SPECS)
    assert TASKS == ("mrpc", "sst2", "cola", "rte")  # RTE, the noisiest, last


def test_seed_rules():
    assert seed_rule(ADAMW_DEFAULT) == EVERY_SEED  # what a user gets without tuning: every seed, tuned or not
    assert all(seed_rule(m) == TUNING for m in ADAMW_GRID if m != ADAMW_DEFAULT)
    assert all(seed_rule(m) == EVERY_SEED for m in HIDLR_STARTS + PEFT_METHODS)
    assert all(seed_rule(m) == CLOSE for m in RIVALS)
    assert all(seed_rule(m) == SEED0 for m in ABLATION_METHODS + ("adamw_lr1e-06",))
    assert rival_is_close(80.1, 81.0) is True and rival_is_close(79.9, 81.0) is False
    assert rival_is_close(85.0, 81.0) is True  # above hidlr: T3 hinges on it, so it gets every seed
    assert rival_is_close(None, 81.0) is None and rival_is_close(80.0, None) is None


def test_method_specs_agree_with_their_names_and_the_targets():
    for name, spec in METHOD_SPECS.items():
        assert spec["desc"], name
        rate = re.fullmatch(r"adamw_lr(\d+e-\d+)|hidlr(?:_no_\w+?)?_from_(\d+e-\d+)", name)
        if rate:  # the rate in the name is the rate the method runs at (or starts from)
            assert spec["lr"] == float(rate.group(1) or rate.group(2)), name
        elif name in ("hidlr",) or name in ABLATION_METHODS:
            assert spec["lr"] == 5e-5, name
        assert (spec["kind"] == "hidlr") == (name in HIDLR_METHODS), name
    for tid, methods in TARGET_METHODS.items():
        assert set(methods) <= set(ALL_METHODS), tid


def test_each_ablation_switches_one_mechanism_off_and_the_trainer_accepts_it():
    from hidlr_hf import HiDLRTrainingArguments
    from hidlr_hf.trainer.config import HiDLRConfig

    defaults = HiDLRConfig()
    for name in ABLATION_METHODS:
        spec = METHOD_SPECS[name]
        flags = spec["hidlr_args"]
        # One mechanism each; the horizon is one mechanism with two settings (the head's and the body's).
        assert (len(flags) == 1 or set(flags) == {"hidlr_horizon", "hidlr_body_horizon"}), name
        assert spec["baseline"] in HIDLR_STARTS, name
        for flag, value in flags.items():
            assert flag in HiDLRTrainingArguments.__dataclass_fields__ and getattr(defaults, flag) != value, name
        assert {k: v for k, v in spec.items() if k not in ("hidlr_args", "ablation", "baseline", "desc")} == \
            {k: v for k, v in METHOD_SPECS[spec["baseline"]].items() if k != "desc"}, name
        HiDLRConfig(**flags)  # valid settings: a run would not fail at start


def test_cli_defaults_and_quick():
    args = resolve_args(build_parser().parse_args([]))
    assert args.tasks == TASKS and args.suites == ("default",) and args.methods is None and args.seeds is None
    assert args.max_eval is None and args.order == "priority" and args.overhead_tasks == ("sst2", "mrpc")
    assert Path(args.out) == REPO / "benchmarks" / "results"
    quick = resolve_args(build_parser().parse_args(["--quick"]))
    assert Path(quick.out) == REPO / "benchmarks" / "results" / "quick"  # never the real cache
    assert Path(quick.docs) == Path(quick.out) / "docs"
    assert quick.max_eval == 64 and quick.seeds == (0,) and quick.overhead_reps == 1
    custom = resolve_args(build_parser().parse_args(
        ["--tasks", "rte,sst2", "--methods", "hidlr,bitfit", "--seeds", "3", "--only", "quality,report",
         "--suite", "all"]))
    assert custom.tasks == ("rte", "sst2") and custom.methods == ("hidlr", "bitfit") and custom.seeds == (3,)
    assert custom.sections == ("quality", "report") and custom.suites == tuple(SUITES)
    for bad in (["--methods", "adamw"], ["--only", "everything"], ["--suite", "fast"], ["--tasks", "qnli"]):
        with pytest.raises(SystemExit):
            resolve_args(build_parser().parse_args(bad))


def test_run_protocol_is_per_task():
    mrpc, sst2 = protocol_of("mrpc"), protocol_of("sst2")
    assert (mrpc["train_rows"], mrpc["epochs"], sst2["train_rows"], sst2["epochs"]) == (None, 2, 8000, 1)
    assert mrpc["name"] == "realistic" and mrpc["max_eval"] is None and mrpc["logging_steps"] == 10
    quick = protocol_of("sst2", quick=True, max_eval=64)
    assert quick["name"] == "quick" and planned_steps(quick["train_rows"], quick["epochs"]) <= 10


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="GLUE data not available")
def test_expected_steps_follow_from_the_data():
    """The step counts the protocol states (MRPC 460, SST-2 500, CoLA 535, RTE 468) are what the data gives."""
    from hidlr_hf.glue.data import load_glue
    from hidlr_hf.glue.tasks import get_task

    for task, tp in TASK_PROTOCOL.items():
        rows = len(load_glue(get_task(task), data_dir=GLUE_DIR)["train"])
        used = rows if tp["train_rows"] is None else min(tp["train_rows"], rows)
        assert planned_steps(used, tp["epochs"]) == EXPECTED_STEPS[task], task


def test_tuned_rate_ties_go_to_the_lower_training_loss_then_the_grid_order():
    assert pick_tuned({"adamw_lr1e-04": (0.0, 0.62), "adamw_lr3e-04": (0.0, 0.61), "adamw_lr1e-05": (0.0, 0.7)}) \
        == "adamw_lr3e-04"
    assert pick_tuned({"adamw_lr1e-03": (0.5, None), "adamw_lr5e-05": (0.5, None)}) == "adamw_lr5e-05"
    assert pick_tuned({"adamw_lr1e-03": (0.7, 0.9), "adamw_lr1e-05": (0.5, 0.1)}) == "adamw_lr1e-03"
    assert pick_tuned({}) is None


def test_add_lora_takes_the_specs_targets_and_dropout(monkeypatch):
    import hidlr_hf.glue.modeling as modeling
    from hidlr_bench import methods

    seen = []
    monkeypatch.setattr(modeling, "apply_peft", lambda model, args: seen.append(args) or model)
    monkeypatch.setattr(methods, "minilm_args", lambda: types.SimpleNamespace())
    methods.add_lora("model", "all-linear", 0.0)
    methods.add_lora("model")
    assert (seen[0].lora_target_modules, seen[0].lora_dropout) == ("all-linear", 0.0)
    assert (seen[1].lora_target_modules, seen[1].lora_dropout) == ("query,value", LORA["lora_dropout"])
