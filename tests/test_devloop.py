"""scripts/devloop.py: the engine's dev loop registers its variant as a benchmark method and logs one line a run."""

import argparse
import importlib.util
import json

import pytest
from conftest import REPO


@pytest.fixture
def devloop():
    spec = importlib.util.spec_from_file_location("devloop", REPO / "scripts" / "devloop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_are_hidlr_fields_with_numbers_where_numbers(devloop):
    assert devloop.parse_setting("hidlr_horizon=32") == ("hidlr_horizon", 32.0)
    assert devloop.parse_setting("hidlr_every=auto") == ("hidlr_every", "auto")
    key, size = devloop.parse_setting("hidlr_probe_batch_size=64")
    assert size == 64 and isinstance(size, int)  # a count: 64.0 would reach a slice and fail mid-run
    assert devloop.parse_setting("hidlr_saddle_free=false") == ("hidlr_saddle_free", False)
    for bad in ("horizon=32", "hidlr_horizon"):
        with pytest.raises(argparse.ArgumentTypeError, match="hidlr_<field>=<value>"):
            devloop.parse_setting(bad)


def test_a_run_trains_the_variant_and_logs_its_line(devloop, tmp_path, monkeypatch):
    seen = {}

    def fake_train_one(task, method, seed, protocol, workdir, realised_window=0):
        seen.update(task=task, seed=seed, spec=dict(devloop.protocol.METHOD_SPECS[method]), protocol=protocol,
                    realised_window=realised_window)
        return {"metric": "accuracy", "value": 0.8125, "train_loss": 0.4321,
                "hidlr": {"group_names": ["attention", "head"], "base_rates": [5e-5, 2e-3], "rounds": 9,
                          "probe_seconds": 12.5}}

    monkeypatch.setattr(devloop, "train_one", fake_train_one)
    monkeypatch.setattr(devloop.protocol, "METHOD_SPECS", dict(devloop.protocol.METHOD_SPECS))  # no leak to others
    assert devloop.main(["--task", "mrpc", "--lr", "1e-4", "--tag", "h32", "--set", "hidlr_horizon=32",
                         "--out", str(tmp_path)]) == 0
    assert seen["task"] == "mrpc" and seen["seed"] == 0 and seen["protocol"]["epochs"] == 2
    assert seen["realised_window"] == 0  # the diagnostic only when asked for
    assert seen["spec"]["kind"] == "hidlr" and seen["spec"]["lr"] == 1e-4
    assert seen["spec"]["hidlr_args"] == {"hidlr_horizon": 32.0} and seen["spec"]["grouping"] == "module_type"
    record = json.loads((tmp_path / "h32" / "mrpc_lr0.0001_s0.json").read_text())
    assert record["value"] == 0.8125 and "commit" in record
    (line,) = (tmp_path / "results.log").read_text().splitlines()
    assert line.startswith("h32 mrpc lr=0.0001 seed=0 accuracy=0.8125 train_loss=0.432 ")
    assert "rounds=9 probe_s=12 base_rates=attention:5.0e-05 head:2.0e-03 set=hidlr_horizon=32" in line


def test_the_realised_slope_summary_is_printed_when_asked_for(devloop, tmp_path, monkeypatch, capsys):
    entry = {"step": 40, "phase": "steady", "groups": ["attention"], "b": [2.0], "A": [100.0], "base_rate": [1e-3],
             "rate_in_force": [5e-4], "slopes": [{"attention": 1e-3}, {"attention": 3e-3}], "clipped": [False, True]}

    def fake_train_one(task, method, seed, protocol, workdir, realised_window=0):
        assert realised_window == 8
        return {"metric": "accuracy", "value": 0.5, "train_loss": 0.7, "realised": [entry],
                "hidlr": {"group_names": ["attention"], "base_rates": [1e-3], "rounds": 1, "probe_seconds": 1.0}}

    monkeypatch.setattr(devloop, "train_one", fake_train_one)
    monkeypatch.setattr(devloop.protocol, "METHOD_SPECS", dict(devloop.protocol.METHOD_SPECS))
    assert devloop.main(["--task", "sst2", "--tag", "r", "--realised-window", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  40 stead attention  5.0e-04 +9.75e-04 +2.00e-03 (1.0e-03; +1.00e-03 / +3.00e-03) 2 50%" in out


def test_a_negative_realised_window_is_refused_before_training(devloop, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(devloop, "train_one", lambda *a, **k: pytest.fail("trained despite a bad flag"))
    with pytest.raises(SystemExit):
        devloop.main(["--tag", "r", "--realised-window", "-1", "--out", str(tmp_path)])
    assert "--realised-window must be 0 (off) or a number of steps (got -1)" in capsys.readouterr().err
