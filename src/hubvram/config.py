"""config.json -> validated architecture dimensions. Pure.

transformers names the same quantity differently per family (``num_hidden_layers`` / ``n_layer`` /
``num_layers``...). :data:`ALIASES` lists the spellings in the order transformers' own config classes
accept them (``attribute_map`` of each ``configuration_*.py``), and :data:`FAMILIES` records the
per-family defaults that config.json may omit. Values are checked against :data:`LIMITS` so that a
hostile or broken config gets a one-line error instead of a 10^12-layer estimate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError
from .jsonlimits import too_deep

ALIASES: Mapping[str, tuple[str, ...]] = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num", "n_kv_heads"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim"),
    "max_position": ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
}

#: Per-family facts config.json may leave implicit (transformers' config class defaults).
#: family: norm, mlp kind, tie default, attention/mlp biases, parallel attention, position embedding.
FAMILIES: Mapping[str, Mapping[str, Any]] = {
    "llama": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False),
    "mistral": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False),
    "mixtral": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False),
    "qwen2": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=True, parallel=False),
    "qwen2_moe": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=True, parallel=False),
    "qwen3": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False, qk_norm=True),
    "qwen3_moe": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False, qk_norm=True),
    "gemma": dict(norm="rmsnorm", mlp="gated", tie=True, qkv_bias=False, parallel=False),
    "gemma2": dict(norm="rmsnorm", mlp="gated", tie=True, qkv_bias=False, parallel=False, sandwich=True),
    "deepseek_v2": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False),
    "deepseek_v3": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False),
    "phi3": dict(norm="rmsnorm", mlp="gated", tie=False, qkv_bias=False, parallel=False),
    "phi": dict(norm="layernorm", mlp="plain", tie=False, qkv_bias=True, parallel=True),
    "gpt_neox": dict(norm="layernorm", mlp="plain", tie=False, qkv_bias=True, parallel=True),
    "gpt2": dict(norm="layernorm", mlp="plain", tie=True, qkv_bias=True, parallel=False),
    "gpt_bigcode": dict(norm="layernorm", mlp="plain", tie=True, qkv_bias=True, parallel=False),
    "falcon": dict(norm="layernorm", mlp="plain", tie=True, qkv_bias=False, parallel=True),
    "starcoder2": dict(norm="layernorm", mlp="plain", tie=True, qkv_bias=True, parallel=False),
}
FAMILY_ALIASES: Mapping[str, str] = {
    "RefinedWebModel": "falcon", "RefinedWeb": "falcon", "yi": "llama", "granite": "llama",
    "olmo": "llama", "olmo2": "llama", "internlm2": "llama", "smollm3": "llama", "cohere": "llama",
    "qwen": "qwen2", "gemma3_text": "gemma2", "gemma3": "gemma2", "ministral": "mistral",
}

#: Upper bounds far above any real model: beyond them the config is broken or hostile.
LIMITS: Mapping[str, int] = {
    "num_layers": 4096, "hidden_size": 1 << 20, "num_heads": 1 << 16, "num_kv_heads": 1 << 16,
    "intermediate_size": 1 << 22, "vocab_size": 1 << 24, "max_position": 1 << 30, "head_dim": 1 << 14,
    "num_experts": 1 << 16, "top_k": 1 << 10,
    # routed experts x MoE layers (DeepSeek-V3: 256 x 58; Kimi-K2: 384 x 60): bounds the tensor inventory
    "expert_layers": 1 << 17,
}


@dataclass(frozen=True)
class MoEDims:
    num_experts: int
    top_k: int
    expert_intermediate: int
    shared_experts: int           # number of always-on shared experts (0 if none)
    shared_intermediate: int      # width of the shared expert block (all shared experts together)
    moe_layers: int               # decoder layers with a routed MoE block
    dense_layers: int             # decoder layers with a plain MLP


@dataclass(frozen=True)
class MLADims:
    """DeepSeek multi-head latent attention (DeepSeek-V2 paper §2.1)."""

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class Dims:
    model_type: str
    family: str                   # a key of FAMILIES, or "generic"
    architecture: str             # architectures[0]
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    max_position: int | None
    sliding_window: int | None
    norm: str                     # rmsnorm | layernorm
    mlp: str                      # gated (SwiGLU/GeGLU: gate, up, down) | plain (fc1, fc2)
    activation: str
    parallel_attention: bool      # attention and MLP read the same normed input (GPT-J/NeoX/Falcon/Phi)
    qkv_bias: bool
    qk_norm: bool
    torch_dtype: str | None       # as config.json states it
    moe: MoEDims | None = None
    mla: MLADims | None = None
    mtp_layers: int = 0           # DeepSeek-V3 multi-token-prediction modules stored in the checkpoint
    text_config: bool = False     # dims were read from a multimodal repo's text_config
    is_encoder_only: bool = False

    @property
    def kv_size(self) -> int:
        """Width of the k (or v) projection: kv heads x head_dim."""
        return self.num_kv_heads * self.head_dim

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim


def load_config_bytes(data: bytes, *, model: str, file: str = "config.json") -> dict[str, Any]:
    """Parse config.json bytes into a dict, with one-line errors."""
    try:
        text = data.decode("utf-8")
        if too_deep(text):
            raise RecursionError
        obj = json.loads(text)
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8", model=model, file=file) from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"not JSON ({getattr(e, 'msg', 'too deeply nested')})", model=model, file=file) from None
    except ValueError:  # int() refuses number literals of more than 4300 digits
        raise ConfigError("not JSON (a number literal is too long)", model=model, file=file) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"a JSON {type(obj).__name__}, not an object", model=model, file=file)
    try:  # "\ud800" parses to a string that is not Unicode: it would crash whatever prints it
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("not JSON (a \\u escape is half of a surrogate pair)", model=model, file=file) from None
    return obj


def text_config_of(config: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The language model's config: ``text_config`` (or ``llm_config``) of a multimodal repo, else itself."""
    for key in ("text_config", "llm_config", "language_config"):
        sub = config.get(key)
        if isinstance(sub, dict) and any(a in sub for a in ALIASES["hidden_size"]):
            return sub, True
    return config, False


def family_of(config: Mapping[str, Any]) -> str:
    mt = str(config.get("model_type", ""))
    mt = FAMILY_ALIASES.get(mt, mt)
    if mt in FAMILIES:
        return mt
    archs = config.get("architectures")
    arch = " ".join(str(a) for a in archs) if isinstance(archs, list) else ""
    for key, fam in (("RW", "falcon"), ("Falcon", "falcon"), ("Llama", "llama"), ("Mistral", "mistral"),
                     ("Qwen2", "qwen2"), ("GPTNeoX", "gpt_neox"), ("GPT2", "gpt2")):
        if key in arch:
            return fam
    return "generic"


def dims_from_config(config: Mapping[str, Any], *, model: str, file: str = "config.json") -> Dims:
    cfg, from_text = text_config_of(config)
    fam = family_of(cfg) if family_of(cfg) != "generic" else family_of(config)
    fdef = FAMILIES.get(fam, FAMILIES["llama"])

    def fail(msg: str) -> ConfigError:
        return ConfigError(msg, model=model, file=file)

    def get_int(name: str, *, required: bool = True, default: int | None = None, keys=None) -> int | None:
        for key in keys or ALIASES.get(name, (name,)):
            if key in cfg and cfg[key] is not None:
                v = cfg[key]
                if (isinstance(v, bool) or not isinstance(v, (int, float))
                        or (isinstance(v, float) and not math.isfinite(v)) or v != int(v)):
                    raise fail(f"{key} must be an integer, got {_show(v)}")
                v = int(v)
                if v <= 0:
                    raise fail(f"{key} must be positive, got {_show(v)}")
                if v > LIMITS.get(name, 1 << 40):
                    raise fail(f"{key}={_show(v)} is beyond any real model (limit {LIMITS.get(name, 1 << 40)})")
                return v
        if required and default is None:
            raise fail(f"missing {' / '.join((keys or ALIASES.get(name, (name,)))[:2])}")
        return default

    layers = get_int("num_layers")
    hidden = get_int("hidden_size")
    heads = get_int("num_heads")
    assert layers and hidden and heads
    kv = get_int("num_kv_heads", required=False)
    if kv is None:
        mq = cfg.get("multi_query")
        new_arch = cfg.get("new_decoder_architecture")
        kv = 1 if (mq and not new_arch) else heads
    head_dim = get_int("head_dim", required=False, keys=("head_dim", "kv_channels")) or hidden // heads
    if head_dim < 1:
        raise fail(f"num_attention_heads={heads} is larger than hidden_size={hidden} (head_dim would be 0)")
    vocab = get_int("vocab_size")
    assert vocab
    inter = get_int("intermediate_size", required=False)
    if inter is None:
        if fdef["mlp"] == "plain" or fam == "generic":
            inter = 4 * hidden
        else:
            raise fail("missing intermediate_size")
    tied = cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", fdef["tie"]))
    if not isinstance(tied, bool):
        raise fail(f"tie_word_embeddings must be true or false, got {_show(tied)}")
    max_pos = get_int("max_position", required=False)
    sw = cfg.get("sliding_window")
    if cfg.get("use_sliding_window") is False:
        sw = None
    sliding = int(sw) if isinstance(sw, int) and not isinstance(sw, bool) and sw > 0 else None
    act = str(cfg.get("hidden_act") or cfg.get("activation_function") or cfg.get("hidden_activation")
              or ("silu" if fdef["mlp"] == "gated" else "gelu"))
    parallel = bool(cfg.get("parallel_attn", cfg.get("use_parallel_residual", fdef["parallel"])))
    if fam == "falcon" and cfg.get("new_decoder_architecture"):
        parallel = True
    qkv_bias = bool(cfg.get("attention_bias", cfg.get("bias", fdef["qkv_bias"])))
    if fam in ("qwen2", "qwen2_moe"):
        qkv_bias = True
    dtype = cfg.get("torch_dtype", cfg.get("dtype", config.get("torch_dtype", config.get("dtype"))))

    moe = _moe(cfg, fam, layers, get_int, fail)
    _check_quantization(config.get("quantization_config"), fail)
    mla = None
    if cfg.get("kv_lora_rank"):
        q_lora = cfg.get("q_lora_rank")
        mla = MLADims(
            q_lora_rank=get_int("q_lora_rank", keys=("q_lora_rank",)) if q_lora else None,
            kv_lora_rank=get_int("kv_lora_rank", keys=("kv_lora_rank",)) or 0,
            qk_nope_head_dim=get_int("qk_nope_head_dim", keys=("qk_nope_head_dim",)) or 0,
            qk_rope_head_dim=get_int("qk_rope_head_dim", keys=("qk_rope_head_dim",)) or 0,
            v_head_dim=get_int("v_head_dim", keys=("v_head_dim",)) or 0,
        )
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    mtp = cfg.get("num_nextn_predict_layers") or 0
    if not isinstance(mtp, int) or isinstance(mtp, bool) or not 0 <= mtp <= 64:
        raise fail(f"num_nextn_predict_layers must be a small integer, got {_show(mtp)}")

    archs = config.get("architectures") or cfg.get("architectures") or []
    return Dims(
        model_type=str(cfg.get("model_type") or config.get("model_type") or "?"),
        family=fam,
        architecture=str(archs[0]) if isinstance(archs, list) and archs else "?",
        num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
        intermediate_size=inter, vocab_size=vocab, tied_embeddings=tied, max_position=max_pos,
        sliding_window=sliding, norm=fdef["norm"], mlp=fdef["mlp"], activation=act,
        parallel_attention=parallel, qkv_bias=qkv_bias, qk_norm=bool(fdef.get("qk_norm", False)),
        torch_dtype=str(dtype) if isinstance(dtype, str) else None,
        moe=moe, mla=mla, mtp_layers=mtp, text_config=from_text,
    )


def _moe(cfg: Mapping[str, Any], fam: str, layers: int, get_int, fail) -> MoEDims | None:
    n = get_int("num_experts", required=False,
                keys=("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"))
    if not n or n <= 1:
        return None
    top_k = get_int("top_k", required=False, keys=("num_experts_per_tok", "moe_top_k", "top_k")) or 2
    inter = get_int("intermediate_size", required=False,
                    keys=("moe_intermediate_size", "expert_intermediate_size")) or get_int("intermediate_size")
    shared = 0
    shared_inter = 0
    if cfg.get("n_shared_experts"):
        shared = get_int("num_experts", keys=("n_shared_experts",)) or 0
        shared_inter = shared * inter
    elif cfg.get("shared_expert_intermediate_size"):
        shared = 1
        shared_inter = get_int("x", keys=("shared_expert_intermediate_size",)) or 0
    # layout fields the inventory reads too: validated here, once (0 / null mean "not set")
    first_dense = get_int("num_layers", keys=("first_k_dense_replace",)) if cfg.get("first_k_dense_replace") else 0
    step_keys = tuple(k for k in ("decoder_sparse_step", "moe_layer_freq") if cfg.get(k))
    step = get_int("num_layers", keys=step_keys) if step_keys else 1
    mlp_only = cfg.get("mlp_only_layers") or []
    if not isinstance(mlp_only, list) or not all(type(i) is int for i in mlp_only):
        raise fail(f"mlp_only_layers must be a list of layer numbers, got {_show(mlp_only)}")
    mlp_only = set(mlp_only)
    moe_layers = sum(1 for i in range(layers)
                     if i >= first_dense and i not in mlp_only and (i + 1) % step == 0) if step > 1 else \
        sum(1 for i in range(layers) if i >= first_dense and i not in mlp_only)
    if n * moe_layers > LIMITS["expert_layers"]:
        raise fail(f"{n} experts in each of {moe_layers} MoE layers is beyond any real model "
                   f"(limit {LIMITS['expert_layers']} expert blocks)")
    return MoEDims(num_experts=n, top_k=top_k, expert_intermediate=inter, shared_experts=shared,
                   shared_intermediate=shared_inter, moe_layers=moe_layers, dense_layers=layers - moe_layers)


def _check_quantization(qc: Any, fail) -> None:
    """The quantization_config fields the counts read (packing bits, FP8 block size) must be sane."""
    if not isinstance(qc, dict):
        return
    for key in ("bits", "w_bit"):
        v = qc.get(key)
        if v and (type(v) is not int or not 1 <= v <= 32):
            raise fail(f"quantization_config.{key} must be an integer from 1 to 32, got {_show(v)}")
    block = qc.get("weight_block_size")
    if block and (not isinstance(block, list) or len(block) != 2
                  or not all(type(b) is int and 1 <= b <= LIMITS["hidden_size"] for b in block)):
        raise fail(f"quantization_config.weight_block_size must be two positive integers, got {_show(block)}")


def _show(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:39] + "…"
