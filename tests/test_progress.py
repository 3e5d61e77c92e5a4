"""One INFO line per Hi-DLR probe round (logger ``hidlr_hf``): step, phase, seconds and rates."""

import logging
import re

import torch

from hidlr_hf import HiDLR
from hidlr_hf.core.progress import round_message


def test_round_message_names_groups_and_summarises_the_rest():
    line = round_message(3, 20, "body", ["head", "body"], [2e-5, 1e-4], [1.5, 1.0], 1.234, 9)
    assert line == ("Hi-DLR round 3 at step 20 (body phase): 1.23 s, 9 forward passes; "
                    "rates head=2e-05 (x1.5), body=0.0001")
    names = [f"g{i}" for i in range(12)]
    many = round_message(1, 1, "calibration", names, [float(i + 1) for i in range(12)], [1.0] * 12, 0.5, 4)
    assert "g7=8" in many and "g8" not in many and many.endswith("... 4 more (9 to 12)")


def test_every_probe_round_logs_one_info_line(caplog):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(2)]
    target = torch.randn(8)

    def loss():
        return ((torch.cat(params) - target) ** 2).sum()

    opt = torch.optim.SGD([{"params": [p], "lr": 0.05} for p in params])
    hidlr = HiDLR(opt, every=2)
    with caplog.at_level(logging.INFO, logger="hidlr_hf"):
        for _ in range(5):
            opt.zero_grad()
            loss().backward()
            hidlr.step(loss)
    lines = [r for r in caplog.records if r.getMessage().startswith("Hi-DLR round")]
    assert len(lines) == hidlr.num_rounds >= 2
    assert all(r.levelno == logging.INFO and r.name.startswith("hidlr_hf") for r in lines)
    done = [entry for entry in hidlr.history if entry["status"] == "ok"]
    assert len(done) == len(lines)
    for number, (record, entry) in enumerate(zip(lines, done), start=1):
        text = record.getMessage()
        assert text.startswith(f"Hi-DLR round {number} at step {entry['step']} ({entry['phase']} phase): ")
        assert re.search(r": \d+\.\d\d s, \d+ forward passes; rates ", text)
        for name, rate in zip(hidlr.group_names, entry["rates"]):
            assert f"{name}={rate:.3g}" in text
