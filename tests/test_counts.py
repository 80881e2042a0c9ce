"""Exact parameter counts: from config.json alone, and from safetensors headers on the real index names."""

from __future__ import annotations

import json

import pytest

from hubvram import load_model
from hubvram.architecture import describe
from hubvram.inventory import tensors_from_config
from hubvram.metadata import Metadata, Provenance, TensorInfo
from hubvram.render import hub_total_notes

from helpers import SNAPSHOTS, snapshot_config, write_header_only

# (model, trained parameters, Hub total = Σ numel of stored tensors). Hub totals are the published figures of
# fixtures/hub-snapshots/param_counts.csv; "derived" rows have no published figure (SOURCES.md quotes the same
# config-derived numbers for Llama-2-13b/70b and Mixtral-8x22B).
EXPECTED = [
    ("meta-llama/Meta-Llama-3-8B", 8_030_261_248, 8_030_261_248),
    ("meta-llama/Llama-3.1-8B", 8_030_261_248, 8_030_261_248),
    ("meta-llama/Llama-3.1-70B", 70_553_706_496, 70_553_706_496),
    ("meta-llama/Llama-3.1-405B", 405_853_388_800, 405_853_388_800),
    ("meta-llama/Llama-3.2-1B", 1_235_814_400, 1_235_814_400),
    ("mistralai/Mistral-7B-v0.1", 7_241_732_096, 7_241_732_096),
    ("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704, 46_702_792_704),
    ("Qwen/Qwen2.5-0.5B", 494_032_768, 494_032_768),
    ("Qwen/Qwen2.5-7B", 7_615_616_512, 7_615_616_512),
    ("Qwen/Qwen2.5-72B", 72_706_203_648, 72_706_203_648),
    ("Qwen/Qwen3-8B", 8_190_735_360, 8_190_735_360),
    ("microsoft/phi-2", 2_779_683_840, 2_779_683_840),
    ("bigcode/gpt_bigcode-santacoder", 1_124_886_528, 1_124_886_528),
    ("stabilityai/stablelm-base-alpha-3b", 3_637_321_728, 3_637_321_728),
    # RW-era falcon-7b: the head is tied, but the checkpoint stores it a second time.
    ("tiiuae/falcon-7b", 6_921_720_704, 7_217_189_760),
    # DeepSeek-V3: MTP layer included; the Hub total adds 15,104 router score biases and the FP8 scale_inv.
    ("deepseek-ai/DeepSeek-V3", 684_489_830_400, 684_531_386_000),
    # derived (no published total in the fixtures)
    ("meta-llama/Llama-2-13b-hf", 13_015_864_320, 13_015_864_320),
    ("meta-llama/Llama-2-70b-hf", 68_976_648_192, 68_976_648_192),
    ("mistralai/Mixtral-8x22B-v0.1", 140_620_634_112, 140_620_634_112),
    ("meta-llama/Llama-3.2-3B", 3_212_749_824, 3_212_749_824),
    ("Qwen/Qwen2.5-14B", 14_770_033_664, 14_770_033_664),
    ("Qwen/Qwen2.5-32B", 32_763_876_352, 32_763_876_352),
    ("Qwen/Qwen3-30B-A3B", 30_532_122_624, 30_532_122_624),
    ("deepseek-ai/DeepSeek-V2-Lite", 15_706_484_224, 15_706_484_224),
    ("01-ai/Yi-34B", 34_388_917_248, 34_388_917_248),
    # Llama-2-7b from config alone: the 2,048 stored inv_freq values are only visible in the index (below).
    ("meta-llama/Llama-2-7b-hf", 6_738_415_616, 6_738_415_616),
]


def _from_config(cfg: dict, model: str = "m") -> "object":
    tensors, _ = tensors_from_config(cfg, model=model)
    return describe(Metadata(model, None, "local", cfg, tensors, "config", Provenance("c", "t", "r")))


@pytest.mark.parametrize("model,trained,hub_total", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_count_from_config_alone(model, trained, hub_total):
    arch = _from_config(snapshot_config(model), model)
    assert arch.counts.total == trained
    assert arch.counts.stored_elements == hub_total


def test_every_snapshot_model_is_pinned():
    on_disk = {f"{p.parent.parent.name}/{p.parent.name}" for p in SNAPSHOTS.glob("*/*/config*.json")}
    assert on_disk == {e[0] for e in EXPECTED}


def test_deepseek_v3_explains_the_hub_total():
    arch = _from_config(snapshot_config("deepseek-ai/DeepSeek-V3"))
    assert arch.counts.buffers == 58 * 256 + 256  # e_score_correction_bias: 58 MoE layers + the MTP layer
    assert hub_total_notes(arch) == [
        "Hub total 684,531,386,000 = 684,489,830,400 trained parameters + 15,104 elements of non-trained buffers "
        "stored in the checkpoint (rotary inv_freq, causal masks, router score biases); 41,540,496 elements of "
        "quantization side tensors (scales, zeros, absmax)"]
    assert arch.counts.by_dtype == {"BF16": 3_918_786_560, "F8_E4M3": 680_571_043_840}
    assert arch.dims.mtp_layers == 1 and arch.dims.mla.kv_lora_rank == 512
    assert arch.dims.moe.moe_layers == 58 and arch.dims.moe.dense_layers == 3


def test_groups_llama3_8b():
    arch = _from_config(snapshot_config("meta-llama/Meta-Llama-3-8B"))
    assert arch.counts.by_group == {
        "embedding": 525_336_576, "attention": 1_342_177_280, "mlp": 5_637_144_576, "experts": 0,
        "norms": 266_240, "lm_head": 525_336_576, "vision": 0, "other": 0, "buffers": 0}
    d = arch.dims
    assert (d.num_layers, d.hidden_size, d.num_heads, d.num_kv_heads, d.head_dim, d.intermediate_size,
            d.vocab_size, d.tied_embeddings, d.max_position) == (32, 4096, 32, 8, 128, 14336, 128256, False, 8192)
    lora_r16 = sum(16 * (m.in_features + m.out_features) * m.count for m in arch.linears if m.group != "lm_head")
    assert lora_r16 == 41_943_040


def test_mixtral_experts_group():
    arch = _from_config(snapshot_config("mistralai/Mixtral-8x7B-v0.1"))
    assert arch.counts.by_group["experts"] == 32 * 8 * 3 * 4096 * 14336
    assert arch.counts.by_group["mlp"] == 32 * 8 * 4096  # routers
    assert arch.dims.moe.top_k == 2 and arch.dims.sliding_window is None


# "Unseen" models of the same families: configs typed from their Hub pages, totals from the Hub API.
UNSEEN = [
    ("TinyLlama-1.1B", dict(model_type="llama", hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                            num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                            tie_word_embeddings=False), 1_100_048_384),
    ("google/gemma-2b", dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                             num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000),
     2_506_172_416),
    ("HuggingFaceTB/SmolLM2-135M", dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                                        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                        vocab_size=49152, tie_word_embeddings=True), 134_515_008),
    ("microsoft/Phi-3-mini-4k-instruct", dict(model_type="phi3", hidden_size=3072, intermediate_size=8192,
                                              num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                              vocab_size=32064, tie_word_embeddings=False), 3_821_079_552),
    ("Qwen/Qwen2-7B", dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                           num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                           tie_word_embeddings=False), 7_615_616_512),
    # learned parameters; the Hub total 1,078,891,008 adds 16 x (2048^2 + 32) mask and inv_freq buffers
    ("EleutherAI/pythia-1b", dict(model_type="gpt_neox", hidden_size=2048, intermediate_size=8192,
                                  num_hidden_layers=16, num_attention_heads=8, vocab_size=50304,
                                  max_position_embeddings=2048, tie_word_embeddings=False), 1_011_781_632),
    # learned parameters; the Hub total 137,022,720 adds 12 x 1024^2 causal-mask buffers
    ("openai-community/gpt2", dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257,
                                   n_positions=1024), 124_439_808),
]


@pytest.mark.parametrize("name,cfg,total", UNSEEN, ids=[u[0] for u in UNSEEN])
def test_unseen_models_of_known_families(name, cfg, total):
    assert _from_config(cfg, name).counts.total == total


# ---- headers generated on the real index files' tensor names, read back from a local folder ----------
INDEXED = [("meta-llama/Meta-Llama-3-8B", 8_030_261_248, 8_030_261_248, 16_060_522_496),
           ("meta-llama/Llama-2-7b-hf", 6_738_415_616, 6_738_417_664, 13_476_839_424),
           ("mistralai/Mistral-7B-v0.1", 7_241_732_096, 7_241_732_096, 14_483_464_192),
           ("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704, 46_702_792_704, 93_405_585_408),
           ("microsoft/phi-2", 2_779_683_840, 2_779_683_840, 5_559_367_680)]


@pytest.mark.parametrize("model,trained,hub_total,total_size", INDEXED, ids=[i[0] for i in INDEXED])
def test_counts_from_generated_headers_on_real_index_names(tmp_path, model, trained, hub_total, total_size):
    src = SNAPSHOTS / model
    cfg = snapshot_config(model)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == total_size
    shapes = {t.name: t for t in tensors_from_config(cfg)[0]}
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    by_shard: dict[str, list] = {}
    for name, shard in index["weight_map"].items():
        t = shapes.get(name) or TensorInfo(name, "F32", (head_dim // 2,))  # rotary inv_freq buffers
        assert name in shapes or name.endswith("rotary_emb.inv_freq"), name
        by_shard.setdefault(shard, []).append((t.name, t.dtype, t.shape))
    for shard, tensors in by_shard.items():
        write_header_only(tmp_path / shard, tensors, {"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    arch = load_model(str(tmp_path))
    assert arch.metadata.tensors_from == "safetensors" and arch.metadata.source == "local"
    assert arch.counts.total == trained
    assert arch.counts.stored_elements == hub_total
    assert arch.counts.stored_bytes == total_size
    assert arch.warnings == ()


def test_llama2_bin_only_repo_derives_from_config_and_checks_total_size(tmp_path):
    src = SNAPSHOTS / "meta-llama/Llama-2-7b-hf"
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    (tmp_path / "pytorch_model.bin.index.json").write_bytes((src / "pytorch_model.bin.index.json").read_bytes())
    arch = load_model(str(tmp_path))
    assert arch.metadata.tensors_from == "config"
    assert "derived from config.json" in arch.metadata.provenance.tensors
    assert arch.counts.total == 6_738_415_616
    assert arch.counts.buffers == 2048
    assert arch.counts.stored_bytes == 13_476_839_424 == arch.metadata.index_total_size
    assert arch.warnings == ()


def test_falcon_bin_index_total_size_matches_stored_tied_copy(tmp_path):
    src = SNAPSHOTS / "tiiuae/falcon-7b"
    (tmp_path / "config.json").write_bytes((src / "config.rev-2023-08-13.json").read_bytes())
    (tmp_path / "pytorch_model.bin.index.json").write_bytes((src / "pytorch_model.bin.index.json").read_bytes())
    arch = load_model(str(tmp_path))
    assert arch.counts.total == 6_921_720_704
    assert arch.counts.stored_bytes == 14_434_379_520
    assert arch.dims.tied_embeddings and arch.dims.num_kv_heads == 1 and arch.dims.parallel_attention
    assert arch.warnings == ()


def test_gpt2_conv1d_shapes_read_as_in_out():
    name, cfg, _ = UNSEEN[-1]
    arch = _from_config(cfg, name)
    assert [(m.name, m.group, m.in_features, m.out_features, m.bias) for m in arch.linears] == [
        ("c_attn", "attention", 768, 2304, True), ("c_proj", "attention", 768, 768, True),
        ("c_fc", "mlp", 768, 3072, True), ("c_proj", "mlp", 3072, 768, True)]


def test_config_and_tensors_disagreeing_is_reported(tmp_path):
    cfg = snapshot_config("Qwen/Qwen2.5-0.5B")
    tensors = [(t.name, t.dtype, t.shape) for t in tensors_from_config(cfg)[0]]
    write_header_only(tmp_path / "model.safetensors", tensors)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, num_hidden_layers=20, tie_word_embeddings=False)))
    arch = load_model(str(tmp_path))
    assert arch.warnings == (
        "config.json says tie_word_embeddings=false but the checkpoint stores no lm_head (treated as tied)",
        "config.json num_hidden_layers=20 but the checkpoint stores 24 decoder layers")
    assert arch.counts.total == 494_032_768  # the tensors win
    assert arch.dims.tied_embeddings


def test_multimodal_repo_dims_from_text_config_and_vision_group(tmp_path):
    text = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "text_config": text,
           "vision_config": {"hidden_size": 32}, "torch_dtype": "bfloat16"}
    lm = [("language_model." + t.name, "BF16", t.shape) for t in tensors_from_config(text)[0]]
    vision = [("vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight", "BF16", (32, 32)),
              ("multi_modal_projector.linear_1.weight", "BF16", (64, 32))]
    write_header_only(tmp_path / "model.safetensors", lm + vision)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    arch = load_model(str(tmp_path))
    assert arch.dims.text_config and arch.dims.hidden_size == 64 and arch.dims.num_layers == 2
    assert arch.counts.by_group["vision"] == 32 * 32 + 64 * 32
    assert arch.counts.by_group["lm_head"] == 64_000 and not arch.dims.tied_embeddings
    assert arch.warnings == ()
    assert all(m.group != "vision" for m in arch.linears if m.name == "q_proj" and m.in_features == 64)
