"""config.json -> the tensor inventory a checkpoint of that architecture stores. Pure.

Used when no safetensors header is available (repos with only ``pytorch_model*.bin``, offline snapshot
entries derived from config). Each family writes the tensor names and shapes its transformers modeling
file creates (``modeling_<family>.py`` ``__init__`` of each module, transformers 4.x checkpoint layout,
which is also what the Hub stores for every family here). The result is checked against the Hub's
published totals in tests/test_counts.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from .config import Dims, dims_from_config, text_config_of
from .metadata import TORCH_DTYPE_TO_ST, TensorInfo


@dataclass(frozen=True)
class _Experts:
    """``count`` routed experts of one layer, each storing ``items`` under ``<prefix><index>.``."""

    prefix: str                                      # "model.layers.3.mlp.experts."
    count: int
    items: tuple[tuple[str, tuple[int, ...]], ...]   # ("gate_proj.weight", (inter, h)), ...

    def tensors(self, dtype: str, fold: bool) -> list[TensorInfo]:
        if fold:
            return [TensorInfo(f"{self.prefix}*.{n}", dtype, s, self.count) for n, s in self.items]
        return [TensorInfo(f"{self.prefix}{j}.{n}", dtype, s) for j in range(self.count) for n, s in self.items]


Emit = Iterator["tuple[str, tuple[int, ...]] | _Experts"]


def storage_dtype(config: Mapping[str, Any]) -> str:
    """The safetensors dtype a checkpoint's weights are stored in (``torch_dtype``; float32 if unstated)."""
    cfg, _ = text_config_of(config)
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or config.get("dtype") or "float32"
    return TORCH_DTYPE_TO_ST.get(str(raw).replace("torch.", ""), "F32")


def tensors_from_config(config: Mapping[str, Any], *, model: str = "?",
                        fold_experts: bool = False) -> tuple[tuple[TensorInfo, ...], list[str]]:
    """Return the tensors a checkpoint of this config stores, and notes on what was assumed.

    ``fold_experts``: each layer's routed experts as :func:`hubvram.metadata.group_experts` folds them
    (one entry per module with a count), without making the per-expert names first."""
    dims = dims_from_config(config, model=model)
    cfg, _ = text_config_of(config)
    builder = _BUILDERS.get(dims.family)
    notes: list[str] = []
    if builder is None:
        notes.append(f"model_type {dims.model_type!r} has no dedicated layout: tensors derived with the "
                     "generic Llama-style decoder layout (check the count against the Hub)")
        builder = _llama
    dtype = storage_dtype(config)
    tensors: list[TensorInfo] = []
    for item in builder(dims, cfg):
        if isinstance(item, _Experts):
            tensors += item.tensors(dtype, fold_experts)
        else:
            n, s = item
            tensors.append(TensorInfo(n, dtype if not n.endswith(".inv_freq") else "F32", s))
    fp8 = _fp8_block(config)
    if fp8:
        tensors = list(_apply_fp8(tensors, fp8))
    if config is not cfg:
        notes.append("multimodal repo: the language model comes from text_config; the vision tower is not "
                     "derivable from config.json alone and is not counted")
    return tuple(tensors), notes


# --------------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------------
def _llama(d: Dims, cfg: Mapping[str, Any]) -> Emit:
    """Llama / Mistral / Qwen2 / Qwen3 / Gemma / Yi / Mixtral / Qwen-MoE / Phi-3 / DeepSeek-V2/V3."""
    h, hd = d.hidden_size, d.head_dim
    yield "model.embed_tokens.weight", (d.vocab_size, h)
    layers = d.num_layers + d.mtp_layers
    o_bias = bool(cfg.get("attention_bias")) and d.family not in ("qwen2", "qwen2_moe")
    mlp_bias = bool(cfg.get("mlp_bias"))
    first_dense, mlp_only, step = 0, set(), 1
    if d.moe is not None:  # MoE layout fields: read (and validated by dims_from_config) only for MoE models
        first_dense = int(cfg.get("first_k_dense_replace") or 0)
        mlp_only = set(cfg.get("mlp_only_layers") or [])
        step = int(cfg.get("decoder_sparse_step") or 1)
    for i in range(layers):
        p = f"model.layers.{i}."
        if d.mla is not None:
            yield from _mla(p, d)
        elif d.family == "phi3":
            yield p + "self_attn.qkv_proj.weight", ((d.num_heads + 2 * d.num_kv_heads) * hd, h)
            yield p + "self_attn.o_proj.weight", (h, d.q_size)
        else:
            for name, out in (("q_proj", d.q_size), ("k_proj", d.kv_size), ("v_proj", d.kv_size)):
                yield p + f"self_attn.{name}.weight", (out, h)
                if d.qkv_bias:
                    yield p + f"self_attn.{name}.bias", (out,)
            yield p + "self_attn.o_proj.weight", (h, d.q_size)
            if o_bias:
                yield p + "self_attn.o_proj.bias", (h,)
            if d.qk_norm:
                yield p + "self_attn.q_norm.weight", (hd,)
                yield p + "self_attn.k_norm.weight", (hd,)
        is_moe = d.moe is not None and i >= first_dense and i not in mlp_only and (i + 1) % step == 0
        if is_moe:
            yield from _moe(p, d, cfg)
        elif d.family == "phi3":
            yield p + "mlp.gate_up_proj.weight", (2 * d.intermediate_size, h)
            yield p + "mlp.down_proj.weight", (h, d.intermediate_size)
        else:
            yield from _gated(p + "mlp.", h, d.intermediate_size, mlp_bias)
        yield p + "input_layernorm.weight", (h,)
        yield p + "post_attention_layernorm.weight", (h,)
        if d.family == "gemma2":
            yield p + "pre_feedforward_layernorm.weight", (h,)
            yield p + "post_feedforward_layernorm.weight", (h,)
        if i >= d.num_layers:  # DeepSeek-V3 multi-token-prediction module (modeling_deepseek.py MTP layout)
            yield p + "embed_tokens.weight", (d.vocab_size, h)
            yield p + "enorm.weight", (h,)
            yield p + "hnorm.weight", (h,)
            yield p + "eh_proj.weight", (h, 2 * h)
            yield p + "shared_head.norm.weight", (h,)
            yield p + "shared_head.head.weight", (d.vocab_size, h)
    yield "model.norm.weight", (h,)
    if not d.tied_embeddings:
        yield "lm_head.weight", (d.vocab_size, h)


def _gated(prefix: str, h: int, inter: int, bias: bool = False) -> Emit:
    for name, shape in (("gate_proj", (inter, h)), ("up_proj", (inter, h)), ("down_proj", (h, inter))):
        yield prefix + name + ".weight", shape
        if bias:
            yield prefix + name + ".bias", (shape[0],)


def _moe(p: str, d: Dims, cfg: Mapping[str, Any]) -> Emit:
    assert d.moe is not None
    h, e, inter = d.hidden_size, d.moe.num_experts, d.moe.expert_intermediate
    if d.family == "mixtral":
        yield p + "block_sparse_moe.gate.weight", (e, h)
        yield _Experts(f"{p}block_sparse_moe.experts.", e,
                       (("w1.weight", (inter, h)), ("w2.weight", (h, inter)), ("w3.weight", (inter, h))))
        return
    yield p + "mlp.gate.weight", (e, h)
    if cfg.get("topk_method") == "noaux_tc":
        yield p + "mlp.gate.e_score_correction_bias", (e,)
    yield _Experts(f"{p}mlp.experts.", e, tuple(_gated("", h, inter)))  # type: ignore[arg-type]
    if d.moe.shared_experts:
        if d.family in ("deepseek_v2", "deepseek_v3"):
            yield from _gated(p + "mlp.shared_experts.", h, d.moe.shared_intermediate)
        else:  # Qwen2-MoE: one shared expert with a sigmoid gate
            yield from _gated(p + "mlp.shared_expert.", h, d.moe.shared_intermediate)
            yield p + "mlp.shared_expert_gate.weight", (1, h)


def _mla(p: str, d: Dims) -> Emit:
    """DeepSeek-V2 §2.1.2 multi-head latent attention, modeling_deepseek.py ``DeepseekV2Attention``."""
    assert d.mla is not None
    m, h, nh = d.mla, d.hidden_size, d.num_heads
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    a = p + "self_attn."
    if m.q_lora_rank:
        yield a + "q_a_proj.weight", (m.q_lora_rank, h)
        yield a + "q_a_layernorm.weight", (m.q_lora_rank,)
        yield a + "q_b_proj.weight", (nh * qk, m.q_lora_rank)
    else:
        yield a + "q_proj.weight", (nh * qk, h)
    yield a + "kv_a_proj_with_mqa.weight", (m.kv_lora_rank + m.qk_rope_head_dim, h)
    yield a + "kv_a_layernorm.weight", (m.kv_lora_rank,)
    yield a + "kv_b_proj.weight", (nh * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank)
    yield a + "o_proj.weight", (h, nh * m.v_head_dim)


def _phi(d: Dims, cfg: Mapping[str, Any]) -> Emit:
    """microsoft/phi-1.5, phi-2: modeling_phi.py (parallel attention + MLP, LayerNorm, biases everywhere)."""
    h = d.hidden_size
    yield "model.embed_tokens.weight", (d.vocab_size, h)
    for i in range(d.num_layers):
        p = f"model.layers.{i}."
        for name, out in (("q_proj", d.q_size), ("k_proj", d.kv_size), ("v_proj", d.kv_size)):
            yield from _linear(p + "self_attn." + name, out, h)
        if cfg.get("qk_layernorm"):
            for n in ("q_layernorm", "k_layernorm"):
                yield p + f"self_attn.{n}.weight", (d.head_dim,)
                yield p + f"self_attn.{n}.bias", (d.head_dim,)
        yield from _linear(p + "self_attn.dense", h, d.q_size)
        yield from _linear(p + "mlp.fc1", d.intermediate_size, h)
        yield from _linear(p + "mlp.fc2", h, d.intermediate_size)
        yield from _layernorm(p + "input_layernorm", h)
    yield from _layernorm("model.final_layernorm", h)
    if not d.tied_embeddings:
        yield from _linear("lm_head", d.vocab_size, h)


def _gpt_neox(d: Dims, cfg: Mapping[str, Any]) -> Emit:
    """EleutherAI GPT-NeoX / Pythia / StableLM-alpha: modeling_gpt_neox.py."""
    h = d.hidden_size
    yield "gpt_neox.embed_in.weight", (d.vocab_size, h)
    bias = cfg.get("attention_bias", True) is not False
    for i in range(d.num_layers):
        p = f"gpt_neox.layers.{i}."
        yield from _layernorm(p + "input_layernorm", h)
        yield from _layernorm(p + "post_attention_layernorm", h)
        yield from _linear(p + "attention.query_key_value", 3 * h, h, bias)
        yield from _linear(p + "attention.dense", h, h, bias)
        yield from _linear(p + "mlp.dense_h_to_4h", d.intermediate_size, h)
        yield from _linear(p + "mlp.dense_4h_to_h", h, d.intermediate_size)
    yield from _layernorm("gpt_neox.final_layer_norm", h)
    if not d.tied_embeddings:
        yield "embed_out.weight", (d.vocab_size, h)


def _falcon(d: Dims, cfg: Mapping[str, Any]) -> Emit:
    """tiiuae Falcon, both the RefinedWeb (RW, trust_remote_code era) and transformers' ``falcon`` layout.

    Multi-query (falcon-7b): query_key_value packs nH query heads + 1 k + 1 v head; the new decoder
    architecture (falcon-40b/180b) packs nH + 2·kv heads and has two LayerNorms per layer.
    """
    h, hd = d.hidden_size, d.head_dim
    bias = bool(cfg.get("bias", False))
    yield "transformer.word_embeddings.weight", (d.vocab_size, h)
    new_arch = bool(cfg.get("new_decoder_architecture"))
    for i in range(d.num_layers):
        p = f"transformer.h.{i}."
        if new_arch:
            yield from _layernorm(p + "ln_attn", h)
            yield from _layernorm(p + "ln_mlp", h)
        else:
            yield from _layernorm(p + "input_layernorm", h)
            if not d.parallel_attention:
                yield from _layernorm(p + "post_attention_layernorm", h)
        yield from _linear(p + "self_attention.query_key_value", (d.num_heads + 2 * d.num_kv_heads) * hd, h, bias)
        yield from _linear(p + "self_attention.dense", h, d.q_size, bias)
        yield from _linear(p + "mlp.dense_h_to_4h", d.intermediate_size, h, bias)
        yield from _linear(p + "mlp.dense_4h_to_h", h, d.intermediate_size, bias)
    yield from _layernorm("transformer.ln_f", h)
    if not d.tied_embeddings or d.model_type.startswith("RefinedWeb"):
        # RW-era checkpoints store the tied head as a second copy (pytorch_model.bin.index.json lists it)
        yield "lm_head.weight", (d.vocab_size, h)


def _gpt_bigcode(d: Dims, cfg: Mapping[str, Any]) -> Emit:
    """bigcode SantaCoder / StarCoder: modeling_gpt_bigcode.py (nn.Linear, multi-query c_attn)."""
    h, hd = d.hidden_size, d.head_dim
    yield "transformer.wte.weight", (d.vocab_size, h)
    yield "transformer.wpe.weight", (d.max_position or 2048, h)
    for i in range(d.num_layers):
        p = f"transformer.h.{i}."
        yield from _layernorm(p + "ln_1", h)
        yield from _linear(p + "attn.c_attn", h + 2 * d.num_kv_heads * hd, h)
        yield from _linear(p + "attn.c_proj", h, h)
        yield from _layernorm(p + "ln_2", h)
        yield from _linear(p + "mlp.c_fc", d.intermediate_size, h)
        yield from _linear(p + "mlp.c_proj", h, d.intermediate_size)
    yield from _layernorm("transformer.ln_f", h)
    if not d.tied_embeddings:
        yield "lm_head.weight", (d.vocab_size, h)


def _gpt2(d: Dims, cfg: Mapping[str, Any]) -> Emit:
    """openai-community/gpt2: modeling_gpt2.py. Conv1D stores weights as (in, out)."""
    h = d.hidden_size
    yield "transformer.wte.weight", (d.vocab_size, h)
    yield "transformer.wpe.weight", (d.max_position or 1024, h)
    for i in range(d.num_layers):
        p = f"transformer.h.{i}."
        yield from _layernorm(p + "ln_1", h)
        yield p + "attn.c_attn.weight", (h, 3 * h)
        yield p + "attn.c_attn.bias", (3 * h,)
        yield p + "attn.c_proj.weight", (h, h)
        yield p + "attn.c_proj.bias", (h,)
        yield from _layernorm(p + "ln_2", h)
        yield p + "mlp.c_fc.weight", (h, d.intermediate_size)
        yield p + "mlp.c_fc.bias", (d.intermediate_size,)
        yield p + "mlp.c_proj.weight", (d.intermediate_size, h)
        yield p + "mlp.c_proj.bias", (h,)
    yield from _layernorm("transformer.ln_f", h)
    if not d.tied_embeddings:
        yield "lm_head.weight", (d.vocab_size, h)


def _linear(name: str, out_f: int, in_f: int, bias: bool = True) -> Emit:
    yield name + ".weight", (out_f, in_f)
    if bias:
        yield name + ".bias", (out_f,)


def _layernorm(name: str, h: int) -> Emit:
    yield name + ".weight", (h,)
    yield name + ".bias", (h,)


_BUILDERS: Mapping[str, Callable[[Dims, Mapping[str, Any]], Emit]] = {
    **{f: _llama for f in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
                           "gemma2", "deepseek_v2", "deepseek_v3", "phi3")},
    "phi": _phi, "gpt_neox": _gpt_neox, "falcon": _falcon, "gpt_bigcode": _gpt_bigcode, "gpt2": _gpt2,
}


# --------------------------------------------------------------------------------------------------
# FP8 block-quantized checkpoints (DeepSeek-V3 ``quantization_config.quant_method == "fp8"``)
# --------------------------------------------------------------------------------------------------
def _fp8_block(config: Mapping[str, Any]) -> tuple[int, int] | None:
    qc = config.get("quantization_config")
    if not isinstance(qc, dict) or str(qc.get("quant_method", "")).lower() != "fp8":
        return None
    block = qc.get("weight_block_size") or [128, 128]
    return int(block[0]), int(block[1])


#: Linear weights DeepSeek-V3 keeps in BF16 although the checkpoint is FP8: the routers, MTP's eh_proj
#: and the heads (checked against the published total, see tests/test_counts.py).
_FP8_KEEP = (".mlp.gate.weight", "embed_tokens.weight", "lm_head.weight", "shared_head.head.weight",
             "eh_proj.weight")


def _apply_fp8(tensors: list[TensorInfo], block: tuple[int, int]) -> Iterator[TensorInfo]:
    """FP8 e4m3 weights + one fp32 ``weight_scale_inv`` per (128 x 128) block (DeepSeek-V3 README §FP8)."""
    bo, bi = block
    for t in tensors:
        if len(t.shape) == 2 and t.name.endswith(".weight") and not t.name.endswith(_FP8_KEEP) \
                and "norm" not in t.name.rsplit(".", 2)[-2]:
            yield TensorInfo(t.name, "F8_E4M3", t.shape, t.count)
            yield TensorInfo(t.name + "_scale_inv", "F32", (-(-t.shape[0] // bo), -(-t.shape[1] // bi)), t.count)
        else:
            yield t
