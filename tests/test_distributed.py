"""Hi-DLR under 2 CPU processes (gloo): torchrun and accelerate launch give the rates of one process with the same
global batch; freezing works under DDP and resumes on the same or a different number of processes; every process
of a launch writes into the same folders without getting in another's way."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
from conftest import REPO, save_tiny_bert

SCRIPT = REPO / "tests" / "scripts" / "train_tiny.py"
COMMON = [
    "--use_cpu", "true", "--max_steps", "6", "--logging_steps", "2", "--report_to", "none", "--learning_rate", "3e-4",
    "--seed", "0", "--hidlr_every", "1", "--disable_tqdm", "true", "--hidlr_max_probe_scale", "16",
    # Trust-region moves only (jump limit = trust region 2). A verified jump of up to 100x, and the ratio limit that
    # ties each group to the others' mean, turn float summation order into rate differences of up to 70% on this toy
    # model (measured from 3e-5); with factors of at most 2 per round the rates agree to about 2%. The saddle-free
    # rule and the body's longer horizon put more of this random model's rounds at the rounding-noise level, where
    # summation order decides a trust-region move: one rate of six differed by 14% with only the body horizon at 32,
    # three by up to 20% with only the saddle-free rule off. This test is about the processes agreeing, so it runs
    # without both.
    "--hidlr_jump_limit", "2", "--hidlr_saddle_free", "false", "--hidlr_body_horizon", "32",
]
# Same global batch: 8 rows per step and 32 probe rows per round, split over the processes.
ONE = ["--per_device_train_batch_size", "8", "--hidlr_probe_batch_size", "32"]
TWO = ["--per_device_train_batch_size", "4", "--hidlr_probe_batch_size", "16"]
# Rates are equal up to float summation order in the gradient all-reduce and the probe-loss mean. Adam turns
# near-zero gradient coordinates into +-1, so these differences reach the direction, and the curvature A is a
# second difference of probe losses, which magnifies them: about 2% after 6 rounds on this toy model (32 probe
# rows keep its signal clear of the noise bound, where float order could flip a round's verdict). A rank using its
# own probe loss, or skipping a round, differs in the round history itself, which is compared first.
RTOL = 5e-2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    e.pop("CUDA_VISIBLE_DEVICES", None)
    return e


def run(launcher, out, *extra):
    bin_dir = os.path.dirname(sys.executable)
    if launcher == "single":
        cmd = [sys.executable, str(SCRIPT)]
    elif launcher == "torchrun":
        cmd = [os.path.join(bin_dir, "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), str(SCRIPT)]
    else:
        cmd = [
            os.path.join(bin_dir, "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(SCRIPT),
        ]
    proc = subprocess.run(
        cmd + ["--output_dir", str(out), *COMMON, *extra], env=env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run("single", tmp_path_factory.mktemp("single"), *ONE)


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(tmp_path, single, launcher):
    two = run(launcher, tmp_path, *TWO)
    assert two["world_size"] == 2 and single["world_size"] == 1
    assert two["steps"] == single["steps"] == 6 and two["rounds"] == single["rounds"] == 6
    assert two["logged_rate_keys"] == single["logged_rate_keys"] and two["logged_rate_keys"]
    # Round by round: the same steps, phases and verdicts, and the same probe loss up to float order.
    assert [(h["step"], h["phase"], h["status"]) for h in two["history"]] == [
        (h["step"], h["phase"], h["status"]) for h in single["history"]
    ]
    assert [h["loss"] for h in two["history"]] == pytest.approx([h["loss"] for h in single["history"]], rel=1e-3)
    assert two["base_rates"] == pytest.approx(single["base_rates"], rel=RTOL)
    # Parameter checksums agree loosely only: Adam normalises near-zero gradient coordinates to +-1, so float
    # summation order in the all-reduce can flip a few of them (each moves by at most its group's rate per step,
    # up to about 3e-3 here).
    top = max(single["base_rates"])
    for name, value in single["params"].items():
        assert two["params"][name] == pytest.approx(value, rel=1e-2, abs=10 * top), name


def test_freeze_under_ddp_then_resume_on_other_world_sizes(tmp_path):
    freeze = ["--hidlr_grouping", "module_type_by_layer", "--hidlr_freeze_at", "3", "--hidlr_trainable_budget", "0.3",
              "--save_strategy", "steps", "--save_steps", "4"]
    first = run("torchrun", tmp_path / "ddp", *TWO, *freeze)
    assert first["kept"] is not None and not all(first["kept"])
    # Gradient clipping (on by default) sees the kept groups' gradients only, as in one process: the frozen groups'
    # gradients, which DDP still computes, are dropped before the clip norm is taken; counted, they clipped the kept
    # groups harder than one process does.
    one = run("single", tmp_path / "one", *ONE, *freeze)
    assert one["kept"] == first["kept"]
    assert len(first["clipped"]) == 6 and first["clipped"] == one["clipped"]
    assert first["clipped"][3] < first["clipped"][2]  # frozen after step 3
    ckpt = tmp_path / "ddp" / "checkpoint-4"
    assert (ckpt / "hidlr_state.json").is_file()
    assert json.loads((ckpt / "hidlr_state.json").read_text())["frozen"]["kept"] == first["kept"]

    # Resume on 2 processes: the same run continues.
    shutil.copytree(ckpt, tmp_path / "ckpt2")
    again = run("torchrun", tmp_path / "resume2", *TWO, *freeze, "--resume", str(tmp_path / "ckpt2"))
    assert again["kept"] == first["kept"]
    assert again["base_rates"] == pytest.approx(first["base_rates"], rel=RTOL)
    # Resume on 1 process with the same global batch: the same groups stay frozen and the rates go on from the
    # checkpoint's. With per-layer groups of a model this small some probe signals sit at the rounding-noise threshold,
    # where float summation order (one process or two) can decide one round's move: at most one trust-region step.
    solo = run("single", tmp_path / "resume1", *ONE, *freeze, "--resume", str(tmp_path / "ckpt2"))
    assert solo["kept"] == first["kept"]
    for rate, reference in zip(solo["base_rates"], first["base_rates"]):
        assert (rate == 0) == (reference == 0)
        assert rate == 0 or 1 / 2.0 <= rate / reference <= 2.0
    assert solo["trainable"] < again["total"]  # frozen parameters stay frozen (requires_grad off) after resume


def test_concurrent_folder_checks_do_not_collide(tmp_path):
    """Every process of a launch checks the output folder at once (before a process group exists); a probe file of
    one fixed name was removed by one process under another's feet, failing one run in three at 2 processes."""
    from hidlr_hf.files import check_writable_dir, write_json_atomic

    errors = []

    def hammer(i):
        try:
            for j in range(300):
                check_writable_dir(tmp_path, "--output_dir")
                write_json_atomic(tmp_path / "state.json", {"writer": i, "round": j})
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert sorted(os.listdir(tmp_path)) == ["state.json"]  # no probe or temporary file left behind
    assert json.loads((tmp_path / "state.json").read_text())["round"] == 299


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer, 16-wide random BERT saved with the (real) MiniLM tokenizer, for ``hidlr-glue`` runs."""
    pytest.importorskip("datasets")
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _write_mrpc(folder, rows: int) -> None:
    """A small MRPC in the classic GLUE layout (the real one takes longer to load than the run takes)."""
    words = ["a man plays a guitar", "the cat sleeps", "two dogs run", "a chef cooks pasta", "the train leaves"]
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    lines += [f"{i % 2}\t{i}\t{i + 1000}\t{words[i % 5]}\t{words[(i * 3 + 1) % 5]}" for i in range(rows)]
    folder.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("\n".join(lines) + "\n")


def test_two_process_glue_runs_end_cleanly_every_time(tmp_path, tiny_bert):
    """``torchrun --nproc_per_node 2 hidlr-glue`` ended with status 1 in 2 of 7 runs: both ranks wrote and removed
    the same probe file in the output folder. Repeated so a one-in-three failure shows (0.3 chance to pass 3 runs)."""
    glue_dir = tmp_path / "glue"
    _write_mrpc(glue_dir / "MRPC", rows=32)
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "2", "--master_port",
            str(free_port()), "-m", "hidlr_hf.glue.cli", "--task_name", "mrpc", "--data_dir", str(glue_dir),
            "--model_name_or_path", tiny_bert, "--output_dir", str(out), "--use_cpu", "true", "--max_steps", "4",
            "--per_device_train_batch_size", "4", "--hidlr_every", "2", "--logging_steps", "2", "--save_steps", "2",
            "--max_seq_length", "32", "--disable_tqdm", "true",
            "--hidlr_max_probe_scale", "16", "--report_to", "none",
        ]
        proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"run {attempt}: " + proc.stdout[-2000:] + proc.stderr[-4000:]
        assert json.loads((out / "hidlr_state.json").read_text())["engine"]["num_steps"] == 4
        for folder in (out, out / "checkpoint-2", out / "checkpoint-4"):
            assert (folder / "hidlr_state.json").is_file()
            assert not [n for n in os.listdir(folder) if n.endswith(".tmp") or "write_probe" in n], os.listdir(folder)


def run_engine_ranks(tmp_path, mode):
    """``tests/scripts/engine_ranks.py``: the engine alone on 2 gloo processes; the two ranks' results."""
    script = REPO / "tests" / "scripts" / "engine_ranks.py"
    proc = subprocess.run([sys.executable, str(script), mode, str(tmp_path)], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_a_probe_failing_on_one_rank_is_discarded_on_all(tmp_path):
    """A closure that raises on one rank only: that rank sends NaN losses instead of leaving the others waiting in
    the all-reduce, every rank discards the round, and the run goes on with identical rates and parameters."""
    zero, one = run_engine_ranks(tmp_path, "one_rank_fails")
    assert zero["error"] is None and one["error"] is None
    assert [s == "ok" for s in zero["statuses"]] == [s == "ok" for s in one["statuses"]] == [True, True, False, True]
    assert "RuntimeError: probe batch failed on rank 1 only" in one["statuses"][2]
    assert "non-finite probe loss" in zero["statuses"][2]
    assert zero["rates"] == one["rates"] and zero["rates"][2] == zero["rates"][1]
    assert zero["params"] == one["params"]


def test_ranks_with_different_rates_are_an_error_on_every_rank(tmp_path):
    """_sync_check provoked: rates changed on one rank behind the engine's back are caught after the next round."""
    results = run_engine_ranks(tmp_path, "mismatch")
    for result in results:
        assert result["error"] and "rates differ across ranks after step 2" in result["error"]
        assert len(result["statuses"]) == 2  # steps 0 and 1 ran; step 2 raised


class _FakeArgs:
    hidlr = True


class _FakeTrainer:
    """Just enough of a Trainer to reach the start-up checks of HiDLRCallback.attach."""

    def __init__(self, deepspeed=False, fsdp=None):
        from types import SimpleNamespace

        self.args = _FakeArgs()
        self.is_deepspeed_enabled = deepspeed
        self.is_fsdp_enabled = fsdp is not None
        self.accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=fsdp))


def test_deepspeed_refused_at_start():
    from hidlr_hf import HiDLRCallback, HiDLRError

    with pytest.raises(HiDLRError, match="DeepSpeed"):
        HiDLRCallback.attach(_FakeTrainer(deepspeed=True))


def test_fsdp1_without_orig_params_refused_at_start():
    from types import SimpleNamespace

    from hidlr_hf import HiDLRCallback, HiDLRError

    with pytest.raises(HiDLRError, match="use_orig_params"):
        HiDLRCallback.attach(_FakeTrainer(fsdp=SimpleNamespace(fsdp_version=1, use_orig_params=False)))
