"""Routed experts folded into one entry per (layer, module, dtype, shape): same counts, same estimates.

``metadata.group_experts`` is what lets a 91,991-tensor DeepSeek-V3 checkpoint be described in a
fraction of a second. These tests pin that the folded picture is the unfolded one, number for number.
"""

from __future__ import annotations

import dataclasses

import pytest

from helpers import snapshot_config, write_header_only
from hubvram import snapshot
from hubvram.api import load_model
from hubvram.architecture import ParamTensor, describe
from hubvram.inventory import tensors_from_config
from hubvram.memory import Setup, estimate
from hubvram.metadata import TensorInfo, expert_group_name, group_experts


def test_expert_group_name():
    assert expert_group_name("model.layers.3.mlp.experts.17.w1.weight") == "model.layers.3.mlp.experts.*.w1.weight"
    assert (expert_group_name("model.layers.3.block_sparse_moe.experts.7.w3.weight")
            == "model.layers.3.block_sparse_moe.experts.*.w3.weight")
    # shared experts, fused 3-D experts and everything else keep their names
    assert expert_group_name("model.layers.3.mlp.shared_experts.gate_proj.weight") == \
        "model.layers.3.mlp.shared_experts.gate_proj.weight"
    assert expert_group_name("model.layers.1.mlp.experts.gate_up_proj") == "model.layers.1.mlp.experts.gate_up_proj"
    assert expert_group_name("model.layers.10.self_attn.q_proj.weight") == "model.layers.10.self_attn.q_proj.weight"


def test_group_experts_folds_only_equal_dtype_and_shape():
    ts = [TensorInfo("model.embed_tokens.weight", "BF16", (10, 4)),
          TensorInfo("model.layers.0.mlp.experts.0.w1.weight", "BF16", (8, 4)),
          TensorInfo("model.layers.0.mlp.experts.1.w1.weight", "BF16", (8, 4)),
          TensorInfo("model.layers.0.mlp.experts.2.w1.weight", "F32", (8, 4)),   # another dtype
          TensorInfo("model.layers.0.mlp.experts.3.w1.weight", "BF16", (6, 4)),  # another shape
          TensorInfo("model.layers.1.mlp.experts.0.w1.weight", "BF16", (8, 4)),  # another layer
          TensorInfo("model.norm.weight", "BF16", (4,))]
    assert group_experts(ts) == (
        TensorInfo("model.embed_tokens.weight", "BF16", (10, 4)),
        TensorInfo("model.layers.0.mlp.experts.*.w1.weight", "BF16", (8, 4), 2),
        TensorInfo("model.layers.0.mlp.experts.*.w1.weight", "F32", (8, 4)),
        TensorInfo("model.layers.0.mlp.experts.*.w1.weight", "BF16", (6, 4)),
        TensorInfo("model.layers.1.mlp.experts.*.w1.weight", "BF16", (8, 4)),
        TensorInfo("model.norm.weight", "BF16", (4,)))
    assert group_experts(group_experts(ts)) == group_experts(ts)  # folding twice changes nothing


@pytest.mark.parametrize("model_id, raw, folded", [
    ("deepseek-ai/DeepSeek-V3", 91_991, 1_721),
    ("Qwen/Qwen3-30B-A3B", 18_867, 579),
    ("mistralai/Mixtral-8x7B-v0.1", 995, 323),
])
def test_folded_architecture_equals_unfolded(model_id, raw, folded):
    meta = snapshot.load(model_id)
    unfolded, _ = tensors_from_config(meta.config)
    assert (len(unfolded), len(meta.tensors)) == (raw, folded)
    # the inventory folds as it goes (no per-expert names made), exactly as group_experts folds afterwards
    assert tensors_from_config(meta.config, fold_experts=True)[0] == group_experts(unfolded) == meta.tensors
    a = describe(meta)
    b = describe(dataclasses.replace(meta, tensors=unfolded))
    assert a.counts == b.counts and a.linears == b.linears and a.warnings == b.warnings
    assert sum(t.count for t in a.tensors) == raw
    for method in ("full", "lora", "qlora"):
        assert estimate(a, Setup(method=method)).to_dict() == estimate(b, Setup(method=method)).to_dict()


def test_headers_are_folded_and_counted_exactly(tmp_path):
    """A local MoE checkpoint: 2 layers x 4 experts x 3 projections on disk -> 2 x 3 folded entries."""
    cfg = snapshot_config("mistralai/Mixtral-8x7B-v0.1")
    cfg.update(num_hidden_layers=2, num_local_experts=4, hidden_size=64, intermediate_size=128,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=256)
    (tmp_path / "config.json").write_text(__import__("json").dumps(cfg))
    tensors, _ = tensors_from_config(cfg)
    write_header_only(tmp_path / "model.safetensors", [(t.name, t.dtype, t.shape) for t in tensors])
    arch = load_model(str(tmp_path))
    experts = [t for t in arch.tensors if ".experts." in t.name]
    # per layer: q k v o, 2 norms, the router; then embed, norm, lm_head
    assert len(tensors) == 2 * 4 * 3 + 2 * 7 + 3 and len(experts) == 2 * 3
    assert {t.name for t in experts} == {f"model.layers.{i}.block_sparse_moe.experts.*.{w}.weight"
                                         for i in range(2) for w in ("w1", "w2", "w3")}
    assert all(t.count == 4 and t.params == 4 * 128 * 64 and t.stored_bytes == 4 * 128 * 64 * 2 for t in experts)
    assert arch.counts.total == sum(t.numel for t in tensors)
    assert [(m.name, m.count) for m in arch.linears if m.is_expert] == [("w1", 8), ("w2", 8), ("w3", 8)]


def test_snapshot_json_round_trip_keeps_counts():
    meta = snapshot.load("Qwen/Qwen3-30B-A3B")
    items = snapshot.tensors_to_json(meta.tensors)
    assert [len(i) for i in items if ".experts.*." in i[0]] == [4] * (48 * 3)
    assert snapshot.tensors_from_json(items) == meta.tensors
    # an entry written before folding (one item per expert) reads back folded
    unfolded, _ = tensors_from_config(meta.config)
    assert snapshot.tensors_from_json(snapshot.tensors_to_json(unfolded)) == meta.tensors


def test_param_tensors_are_ordinary_frozen_dataclasses():
    """annotate builds ParamTensors without their __init__ (architecture._param_tensor): same values, frozen."""
    arch = describe(snapshot.load("deepseek-ai/DeepSeek-V3"))
    for t in arch.tensors:
        assert ParamTensor(**dataclasses.asdict(t)) == t
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.tensors[0].params = 1
    assert hash(arch.tensors[0]) == hash(ParamTensor(**dataclasses.asdict(arch.tensors[0])))
