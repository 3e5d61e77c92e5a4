"""Parameter grouping on tiny random transformers, with and without peft LoRA, and custom schemes."""

import json
import re
import warnings

import pytest
import torch
from conftest import tiny_roberta
from torch import nn

from hidlr_hf import HiDLRError
from hidlr_hf.core.grouping import (
    BUILTIN_SCHEMES,
    ParameterGroup,
    group_of_parameter,
    group_parameters,
    load_scheme,
    optimizer_param_groups,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

# peft calls a transformers method that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

CANONICAL = ["embeddings", "attention", "mlp", "norm", "bias", "pooler", "head", "lora_A", "lora_B", "other"]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99)
GPT2 = dict(n_embd=32, n_layer=2, n_head=2, vocab_size=99, n_positions=64, bos_token_id=0, eos_token_id=0)


def t5_config(**kw):
    return transformers.T5Config(
        vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2, decoder_start_token_id=0, **kw
    )


BUILDERS = {
    "roberta": lambda: transformers.RobertaForSequenceClassification(
        transformers.RobertaConfig(**TINY, max_position_embeddings=64, num_labels=3)
    ),
    "bert": lambda: transformers.BertForSequenceClassification(
        transformers.BertConfig(**TINY, max_position_embeddings=64)
    ),
    "deberta": lambda: transformers.DebertaV2ForSequenceClassification(
        transformers.DebertaV2Config(
            **TINY, max_position_embeddings=64, relative_attention=True, position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
        )
    ),
    "gpt2_cls": lambda: transformers.GPT2ForSequenceClassification(transformers.GPT2Config(**GPT2, pad_token_id=0)),
    "gpt2_lm_tied": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)),
    "llama": lambda: transformers.LlamaForSequenceClassification(
        transformers.LlamaConfig(**TINY, num_key_value_heads=1, pad_token_id=0)
    ),
    "vit": lambda: transformers.ViTForImageClassification(
        transformers.ViTConfig(**TINY, image_size=16, patch_size=8, num_labels=3)
    ),
    "t5": lambda: transformers.T5ForConditionalGeneration(t5_config()),
}

# The module_type groups each tiny model must produce, in order.
EXPECTED_GROUPS = {
    "roberta": ["embeddings", "attention", "mlp", "norm", "bias", "head"],
    "bert": ["embeddings", "attention", "mlp", "norm", "bias", "pooler", "head"],
    "deberta": ["embeddings", "attention", "mlp", "norm", "bias", "head"],
    "gpt2_cls": ["embeddings", "attention", "mlp", "norm", "bias", "head"],
    "gpt2_lm_tied": ["embeddings", "attention", "mlp", "norm", "bias"],
    "llama": ["embeddings", "attention", "mlp", "norm", "head"],
    "vit": ["embeddings", "attention", "mlp", "norm", "bias", "head"],
    "t5": ["embeddings", "attention", "mlp", "norm"],
}

SPOT_CHECKS = {
    "roberta": {
        "roberta.embeddings.word_embeddings.weight": "embeddings",
        "roberta.embeddings.position_embeddings.weight": "embeddings",
        "roberta.embeddings.LayerNorm.weight": "norm",
        "roberta.embeddings.LayerNorm.bias": "norm",
        "roberta.encoder.layer.0.attention.self.query.weight": "attention",
        "roberta.encoder.layer.0.attention.self.query.bias": "bias",
        "roberta.encoder.layer.0.attention.output.dense.weight": "attention",
        "roberta.encoder.layer.0.attention.output.LayerNorm.weight": "norm",
        "roberta.encoder.layer.0.intermediate.dense.weight": "mlp",
        "roberta.encoder.layer.0.output.dense.weight": "mlp",
        "roberta.encoder.layer.1.output.dense.bias": "bias",
        "roberta.encoder.layer.1.output.LayerNorm.bias": "norm",
        "classifier.dense.weight": "head",
        "classifier.dense.bias": "head",
        "classifier.out_proj.weight": "head",
    },
    "bert": {
        "bert.embeddings.token_type_embeddings.weight": "embeddings",
        "bert.encoder.layer.1.attention.self.value.weight": "attention",
        "bert.encoder.layer.1.attention.output.dense.weight": "attention",
        "bert.encoder.layer.1.output.dense.weight": "mlp",
        "bert.pooler.dense.weight": "pooler",
        "bert.pooler.dense.bias": "pooler",
        "classifier.weight": "head",
        "classifier.bias": "head",
    },
    "deberta": {
        "deberta.embeddings.word_embeddings.weight": "embeddings",
        "deberta.encoder.rel_embeddings.weight": "embeddings",
        "deberta.encoder.layer.0.attention.self.query_proj.weight": "attention",
        "deberta.encoder.layer.0.attention.self.pos_key_proj.weight": "attention",
        "deberta.encoder.layer.0.attention.output.dense.weight": "attention",
        "deberta.encoder.layer.0.output.dense.weight": "mlp",
        "deberta.encoder.layer.0.intermediate.dense.bias": "bias",
        # DeBERTa's ContextPooler sits outside the backbone and is trained from scratch with the classifier.
        "pooler.dense.weight": "head",
        "classifier.weight": "head",
    },
    "gpt2_cls": {
        "transformer.wte.weight": "embeddings",
        "transformer.wpe.weight": "embeddings",
        "transformer.h.0.attn.c_attn.weight": "attention",
        "transformer.h.0.attn.c_proj.weight": "attention",
        "transformer.h.0.mlp.c_fc.weight": "mlp",
        "transformer.h.0.mlp.c_proj.weight": "mlp",
        "transformer.h.0.mlp.c_proj.bias": "bias",
        "transformer.h.0.ln_1.weight": "norm",
        "transformer.ln_f.bias": "norm",
        "score.weight": "head",
    },
    "gpt2_lm_tied": {"transformer.wte.weight": "embeddings", "transformer.h.1.attn.c_proj.weight": "attention"},
    "llama": {
        "model.embed_tokens.weight": "embeddings",
        "model.layers.0.self_attn.q_proj.weight": "attention",
        "model.layers.0.self_attn.o_proj.weight": "attention",
        "model.layers.0.mlp.gate_proj.weight": "mlp",
        "model.layers.0.mlp.down_proj.weight": "mlp",
        "model.layers.0.input_layernorm.weight": "norm",
        "model.norm.weight": "norm",
        "score.weight": "head",
    },
    "vit": {
        "vit.embeddings.cls_token": "embeddings",
        "vit.embeddings.position_embeddings": "embeddings",
        "vit.embeddings.patch_embeddings.projection.weight": "embeddings",
        "vit.embeddings.patch_embeddings.projection.bias": "bias",
        "vit.layers.0.attention.q_proj.weight": "attention",
        "vit.layers.0.mlp.fc1.weight": "mlp",
        "vit.layers.0.layernorm_before.weight": "norm",
        "vit.layernorm.bias": "norm",
        "classifier.weight": "head",
    },
    "t5": {
        "shared.weight": "embeddings",
        "encoder.block.0.layer.0.SelfAttention.q.weight": "attention",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": "attention",
        "decoder.block.1.layer.1.EncDecAttention.o.weight": "attention",
        "encoder.block.0.layer.1.DenseReluDense.wi.weight": "mlp",
        "decoder.block.1.layer.2.DenseReluDense.wo.weight": "mlp",
        "encoder.block.0.layer.0.layer_norm.weight": "norm",
        "decoder.final_layer_norm.weight": "norm",
    },
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build() for name, build in BUILDERS.items()}


def strip_peft(name):
    """The plain-model name of a peft-wrapped parameter."""
    name = name.removeprefix("base_model.model.")
    for part in (".base_layer", ".modules_to_save.default", ".original_module"):
        name = name.replace(part, "")
    return name


def check_partition(model, groups, include_frozen=False):
    expected = [n for n, p in model.named_parameters() if include_frozen or p.requires_grad]
    seen = [n for g in groups for n in g.param_names]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))
    named = dict(model.named_parameters())
    for g in groups:
        assert g.params, g.name
        assert len(g.params) == len(g.param_names) == len(g.no_decay)
        assert all(p is named[n] for n, p in zip(g.param_names, g.params))
    assert len({g.name for g in groups}) == len(groups)


def grouped_quietly(model, scheme="module_type", **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = group_parameters(model, scheme, **kw)
    assert not [w for w in caught if "other" in str(w.message)]
    return groups


# ------------------------------------------------------------------------------------------ built-in schemes


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_module_type_partition_and_names(models, arch):
    model = models[arch]
    groups = grouped_quietly(model)
    check_partition(model, groups)
    assert [g.name for g in groups] == EXPECTED_GROUPS[arch]
    mapping = group_of_parameter(model)
    for name, group in SPOT_CHECKS[arch].items():
        assert mapping[name] == group, name


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_by_layer_partition_and_consistency(models, arch):
    model = models[arch]
    groups = grouped_quietly(model, "module_type_by_layer")
    check_partition(model, groups)
    flat = group_of_parameter(model)
    layered = group_of_parameter(model, "module_type_by_layer")
    for name, group in layered.items():
        assert group.rsplit(".", 1)[-1] == flat[name], name  # same kind, only split per layer
    names = [g.name for g in groups]
    if "embeddings" in names:
        assert names[0] == "embeddings"
    # Layer groups come in one block, in ascending layer order per stack.
    layer_idx = [i for i, n in enumerate(names) if ".layers." in n or n.startswith("layers.")]
    assert layer_idx == list(range(layer_idx[0], layer_idx[0] + len(layer_idx)))
    assert {int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in names if "layers." in n} == {0, 1}


def test_by_layer_roberta_exact(models):
    names = [g.name for g in group_parameters(models["roberta"], "module_type_by_layer")]
    per_layer = ["attention", "mlp", "norm", "bias"]
    assert names == (
        ["embeddings"]
        + [f"layers.{i}.{k}" for i in range(2) for k in per_layer]
        + ["norm", "head"]  # the embedding LayerNorm is in no layer
    )
    mapping = group_of_parameter(models["roberta"], "module_type_by_layer")
    assert mapping["roberta.encoder.layer.1.attention.output.dense.weight"] == "layers.1.attention"
    assert mapping["roberta.encoder.layer.1.output.dense.weight"] == "layers.1.mlp"
    assert mapping["roberta.embeddings.LayerNorm.weight"] == "norm"


def test_by_layer_t5_encoder_decoder(models):
    mapping = group_of_parameter(models["t5"], "module_type_by_layer")
    assert mapping["encoder.block.0.layer.0.SelfAttention.q.weight"] == "encoder.layers.0.attention"
    assert mapping["encoder.block.1.layer.1.DenseReluDense.wo.weight"] == "encoder.layers.1.mlp"
    assert mapping["decoder.block.1.layer.1.EncDecAttention.k.weight"] == "decoder.layers.1.attention"
    assert mapping["decoder.block.0.layer.2.layer_norm.weight"] == "decoder.layers.0.norm"
    assert mapping["decoder.final_layer_norm.weight"] == "norm"
    assert mapping["shared.weight"] == "embeddings"
    names = [g.name for g in group_parameters(models["t5"], "module_type_by_layer")]
    expected = ["embeddings"]
    for stack in ("encoder", "decoder"):
        expected += [f"{stack}.layers.{i}.{k}" for i in range(2) for k in ("attention", "mlp", "norm")]
    assert names == expected + ["norm"]


def test_untied_output_heads():
    t5 = transformers.T5ForConditionalGeneration(t5_config(feed_forward_proj="gated-gelu"))
    t5.config.tie_word_embeddings = False  # T5Config ignores the kwarg; set it before building a second model
    t5 = transformers.T5ForConditionalGeneration(t5.config)
    mapping = group_of_parameter(t5)
    assert mapping["lm_head.weight"] == "head"
    assert mapping["shared.weight"] == "embeddings"
    assert mapping["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"] == "mlp"
    assert mapping["decoder.block.0.layer.2.DenseReluDense.wi_1.weight"] == "mlp"
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2, tie_word_embeddings=False))
    assert group_of_parameter(gpt2)["lm_head.weight"] == "head"


def test_include_frozen_and_no_trainable(models):
    model = BUILDERS["roberta"]()
    for p in model.roberta.parameters():
        p.requires_grad_(False)
    assert [g.name for g in group_parameters(model)] == ["head"]
    full = group_parameters(model, include_frozen=True)
    check_partition(model, full, include_frozen=True)
    assert group_of_parameter(model, include_frozen=True) == group_of_parameter(models["roberta"])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(HiDLRError, match="no trainable parameters"):
        group_parameters(model)


# ------------------------------------------------------------------------------------------------ peft


def test_peft_lora_roberta(models):
    model = BUILDERS["roberta"]()
    plain = group_of_parameter(model, include_frozen=True)
    plain_layered = group_of_parameter(model, "module_type_by_layer")
    config = peft.LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], r=4)
    wrapped = peft.get_peft_model(model, config)
    groups = grouped_quietly(wrapped)
    check_partition(wrapped, groups)
    assert [g.name for g in groups] == ["head", "lora_A", "lora_B"]
    head = groups[0]
    assert all(".modules_to_save.default." in n for n in head.param_names) and len(head.param_names) == 4
    assert all("lora_A" in n for n in groups[1].param_names) and len(groups[1].param_names) == 4
    assert not any("base_layer" in n for g in groups for n in g.param_names)
    # With frozen weights included, every base parameter lands where it does without peft.
    full = group_of_parameter(wrapped, include_frozen=True)
    for name, group in full.items():
        if "lora_" not in name:
            assert group == plain[strip_peft(name)], name
    # by_layer: adapters split per layer; frozen base weights keep their per-layer names too.
    layered = [g.name for g in group_parameters(wrapped, "module_type_by_layer")]
    assert layered == ["layers.0.lora_A", "layers.0.lora_B", "layers.1.lora_A", "layers.1.lora_B", "head"]
    full_layered = group_of_parameter(wrapped, "module_type_by_layer", include_frozen=True)
    for name, group in full_layered.items():
        if "lora_" not in name and strip_peft(name) in plain_layered:
            assert group == plain_layered[strip_peft(name)], name


def test_peft_lora_all_linear_bert(models):
    model = BUILDERS["bert"]()
    plain = group_of_parameter(model, include_frozen=True)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", target_modules="all-linear", r=4))
    groups = grouped_quietly(wrapped)
    check_partition(wrapped, groups)
    assert [g.name for g in groups] == ["head", "lora_A", "lora_B"]
    lora_modules = {n.split(".lora_A.")[0] for n in groups[1].param_names}
    assert "base_model.model.bert.encoder.layer.0.output.dense" in lora_modules
    full = grouped_quietly(wrapped, include_frozen=True)
    check_partition(wrapped, full, include_frozen=True)
    for group in full:
        for name in group.param_names:
            if "lora_" not in name:
                assert group.name == plain[strip_peft(name)], name
    layered = group_of_parameter(wrapped, "module_type_by_layer")
    assert layered["base_model.model.bert.encoder.layer.1.output.dense.lora_B.default.weight"] == "layers.1.lora_B"
    assert layered["base_model.model.bert.pooler.dense.lora_A.default.weight"] == "lora_A"  # pooler: no layer


def test_peft_lora_embedding_and_llama():
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))
    config = peft.LoraConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "embed_tokens", "down_proj"], r=4)
    wrapped = peft.get_peft_model(model, config)
    mapping = group_of_parameter(wrapped, "module_type_by_layer")
    assert mapping["base_model.model.model.embed_tokens.lora_embedding_A.default"] == "lora_A"
    assert mapping["base_model.model.model.embed_tokens.lora_embedding_B.default"] == "lora_B"
    assert mapping["base_model.model.model.layers.1.mlp.down_proj.lora_A.default.weight"] == "layers.1.lora_A"
    frozen = group_of_parameter(wrapped, include_frozen=True)
    assert frozen["base_model.model.model.layers.0.mlp.down_proj.base_layer.weight"] == "mlp"
    assert frozen["base_model.model.lm_head.weight"] == "head"


# -------------------------------------------------------------------------------------------- weight decay


def trainer_decay_names(model):
    names = transformers.Trainer.get_decay_parameter_names(None, model)  # `self` is unused
    return set(names) & {n for n, _ in model.named_parameters()}  # it also lists tied duplicates


@pytest.mark.parametrize("arch", ["roberta", "llama", "t5", "vit"])
def test_no_decay_matches_trainer(models, arch):
    model = models[arch]
    groups = group_parameters(model)
    decay = {n for g in groups for n, nd in zip(g.param_names, g.no_decay) if not nd}
    assert decay == trainer_decay_names(model)


def test_no_decay_matches_trainer_with_lora():
    model = peft.get_peft_model(
        BUILDERS["roberta"](), peft.LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], r=4)
    )
    groups = group_parameters(model, include_frozen=True)
    decay = {n for g in groups for n, nd in zip(g.param_names, g.no_decay) if not nd}
    assert decay == trainer_decay_names(model)
    assert all(not nd for g in groups if g.name.startswith("lora") for nd in g.no_decay)


def test_optimizer_param_groups(models):
    model = models["roberta"]
    groups = group_parameters(model)
    dicts = optimizer_param_groups(groups, weight_decay=0.01)
    by_name = {}
    for d in dicts:
        assert d["params"] and len(d["params"]) == len(d["param_names"])
        assert "lr" not in d
        by_name.setdefault(d["hidlr_group"], []).append(d)
    assert [d["weight_decay"] for d in by_name["attention"]] == [0.01]
    assert [d["weight_decay"] for d in by_name["norm"]] == [0.0]
    assert [d["weight_decay"] for d in by_name["bias"]] == [0.0]
    assert [d["weight_decay"] for d in by_name["head"]] == [0.01, 0.0]  # decay dict first, then no-decay
    assert [d["param_names"] for d in by_name["head"]] == [
        ["classifier.dense.weight", "classifier.out_proj.weight"],
        ["classifier.dense.bias", "classifier.out_proj.bias"],
    ]
    assert len(dicts) == len(groups) + 1
    assert sum(len(d["params"]) for d in dicts) == sum(1 for p in model.parameters() if p.requires_grad)
    with_lr = optimizer_param_groups(groups, weight_decay=0.1, lr=3e-4)
    assert all(d["lr"] == 3e-4 for d in with_lr)
    assert sum(g.numel for g in groups) == sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(with_lr, lr=1e-3)
    assert [g["hidlr_group"] for g in optimizer.param_groups] == [d["hidlr_group"] for d in with_lr]
    loss = model(input_ids=torch.tensor([[3, 4, 5, 6]])).logits.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


# -------------------------------------------------------------------------------------------- plain torch


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
        self.norm = nn.LayerNorm(4)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([Block(), Block()])
        self.mystery = nn.Linear(4, 2)


def test_plain_torch_model_and_other_warning():
    model = TinyNet()
    with pytest.warns(UserWarning, match=r"'other'.*mystery\.weight"):
        groups = group_parameters(model, "module_type_by_layer")
    check_partition(model, groups)
    names = [g.name for g in groups]
    assert names == [
        "embeddings",
        "layers.0.attention", "layers.0.mlp", "layers.0.norm", "layers.0.bias",
        "layers.1.attention", "layers.1.mlp", "layers.1.norm", "layers.1.bias",
        "bias", "other",
    ]
    assert groups[-1].param_names == ["mystery.weight"]


class FlatBlock(nn.Module):
    """Projections held directly by the layer, as in ALBERT: only their own names say what they are."""

    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(4, 4)
        self.fc1 = nn.Linear(4, 4)


class FlatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([FlatBlock(), FlatBlock()])


def test_peft_wrappers_on_plain_torch_model():
    plain = group_of_parameter(FlatNet(), "module_type_by_layer")
    assert plain["blocks.1.q_proj.weight"] == "layers.1.attention"
    assert plain["blocks.1.fc1.weight"] == "layers.1.mlp"
    config = peft.LoraConfig(target_modules=["q_proj"], modules_to_save=["fc1"], r=2)
    wrapped = peft.get_peft_model(FlatNet(), config)
    mapping = grouped_quietly(wrapped, "module_type_by_layer", include_frozen=True)
    mapping = {n: g.name for g in mapping for n in g.param_names}
    prefix = "base_model.model.blocks.1."
    assert mapping[prefix + "q_proj.base_layer.weight"] == "layers.1.attention"
    assert mapping[prefix + "q_proj.lora_B.default.weight"] == "layers.1.lora_B"
    assert mapping[prefix + "fc1.modules_to_save.default.weight"] == "layers.1.mlp"
    assert mapping[prefix + "fc1.original_module.weight"] == "layers.1.mlp"




# ------------------------------------------------------------------------------------------ custom schemes


def test_custom_scheme_list_dict_and_merge(models):
    model = models["roberta"]
    scheme = [
        (r"LayerNorm", "norms"),
        (r"\.bias$", "biases"),
        (r"^classifier\.", "top"),
        (r"embeddings", "emb"),
        (r"layer\.0\.", "low"),
        (r"layer\.1\.", "low"),  # merges into the same group
    ]
    groups = group_parameters(model, scheme)
    check_partition(model, groups)
    assert [g.name for g in groups] == ["norms", "biases", "top", "emb", "low"]
    top = next(g for g in groups if g.name == "top")
    assert top.param_names == ["classifier.dense.weight", "classifier.out_proj.weight"]
    assert all(top.no_decay[i] is False for i in range(2))
    assert all(next(g for g in groups if g.name == "norms").no_decay)
    as_dict = {"norms": "LayerNorm", "biases": r"\.bias$", "top": "^classifier", "rest": ".*"}
    assert [g.name for g in group_parameters(model, as_dict)] == ["norms", "biases", "top", "rest"]
    assert load_scheme([["a", "x"], ("b", "y")]) == [("a", "x"), ("b", "y")]
    assert load_scheme("module_type_by_layer") == "module_type_by_layer"
    assert set(BUILTIN_SCHEMES) == {"module_type", "module_type_by_layer"}


def test_custom_scheme_files(models, tmp_path):
    model = models["roberta"]
    expected = ["cls", "rest"]
    files = {
        "objects.json": json.dumps([{"pattern": "^classifier", "group": "cls"}, {"pattern": ".*", "group": "rest"}]),
        "pairs.json": json.dumps([["^classifier", "cls"], [".*", "rest"]]),
        "mapping.yaml": "cls: ^classifier\nrest: .*\n",
        "objects.yml": "- pattern: ^classifier\n  group: cls\n- pattern: .*\n  group: rest\n",
        "pairs.yaml": "- ['^classifier', cls]\n- ['.*', rest]\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        assert load_scheme(str(path)) == [("^classifier", "cls"), (".*", "rest")], name
        assert [g.name for g in group_parameters(model, path)] == expected, name


def test_custom_scheme_errors(models, tmp_path):
    model = models["roberta"]
    unmatched = r"match no pattern.*roberta\.embeddings\.word_embeddings\.weight.*'\.\*', 'rest'"
    with pytest.raises(HiDLRError, match=unmatched):
        group_parameters(model, [("classifier", "head")])
    with pytest.raises(HiDLRError, match=r"Group 'ghost'.*'nothing_here'"):
        group_parameters(model, [("nothing_here", "ghost"), (".*", "rest")])
    with pytest.raises(HiDLRError, match=r"Group 'late'.*'classifier'"):  # shadowed by the catch-all
        group_parameters(model, [(".*", "rest"), ("classifier", "late")])
    with pytest.raises(HiDLRError, match=r"Unknown grouping scheme 'by_type'.*module_type.*regex"):
        group_parameters(model, "by_type")
    with pytest.raises(HiDLRError, match=r"pattern '\(unclosed'.*group 'bad'"):
        load_scheme([("(unclosed", "bad")])
    with pytest.raises(HiDLRError, match=r"does not exist"):
        load_scheme(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("[[")
    with pytest.raises(HiDLRError, match=r"broken\.json.*not valid JSON"):
        load_scheme(str(broken))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [unclosed\n")
    with pytest.raises(HiDLRError, match=r"not valid YAML"):
        load_scheme(bad_yaml)
    wrong_shape = tmp_path / "shape.json"
    wrong_shape.write_text(json.dumps([{"regex": ".*", "group": "x"}]))
    with pytest.raises(HiDLRError, match=r"'pattern' and 'group'"):
        load_scheme(str(wrong_shape))
    with pytest.raises(HiDLRError, match=r"empty"):
        load_scheme([])
    with pytest.raises(HiDLRError, match=r"cannot be a int"):
        load_scheme(3)
    assert issubclass(HiDLRError, ValueError)


def test_parameter_group_numel():
    a, b = nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(4))
    assert ParameterGroup("g", ["a", "b"], [a, b], [False, True]).numel == 10


def test_custom_scheme_that_matches_nothing_or_leaves_parameters(tmp_path):
    model = tiny_roberta()
    with pytest.raises(HiDLRError, match="matches no") as info:
        group_parameters(model, load_scheme([("attention", "attn"), ("nonexistent_module", "ghost"), (".*", "rest")]))
    assert "ghost" in str(info.value)
    with pytest.raises(HiDLRError, match="catch-all"):
        group_parameters(model, load_scheme([("attention", "attn")]))


def test_lora_groups_on_a_model_without_lora():
    with pytest.raises(HiDLRError, match=r"Group 'lora_A' of the custom scheme \(pattern 'lora_A'\) matches no trainable "
                       r"parameter .*the model has no LoRA adapter: attach one \(peft.get_peft_model\)"):
        group_parameters(tiny_roberta(), load_scheme([("lora_A", "lora_A"), ("lora_B", "lora_B"), (".*", "rest")]))


def test_unsafe_yaml_scheme_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "scheme.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(HiDLRError):
        load_scheme(str(path))
    assert not marker.exists()
