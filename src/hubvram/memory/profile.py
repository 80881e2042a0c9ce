"""Architecture -> the facts the memory formulas need, computed once per model and cached. Pure.

An :class:`~hubvram.architecture.Architecture` lists every stored tensor; the memory model needs them
aggregated: tensors by (role, size) for weights, gradients and optimizer states, and the Linear modules of
one decoder layer by the tensor they read (attention input, attention output, MLP input, MLP
intermediate) for activations and LoRA. :func:`profile_of` builds that picture once per Architecture
(cached on the object's identity), so an estimate costs O(#distinct tensor shapes + #Linear modules);
models with the same picture share one profile and the work cached on it.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..architecture import Architecture, LinearModule
from ..config import Dims, text_config_of

# Module names by the tensor they read inside a decoder layer (transformers' modeling_*.py names).
ATTN_OUT_NAMES = frozenset({"o_proj", "dense", "out_proj", "c_proj", "wo", "o"})
MLP_OUT_NAMES = frozenset({"down_proj", "w2", "fc2", "c_proj", "dense_4h_to_h", "fc_out"})
MLA_LATENT_NAMES = frozenset({"q_b_proj", "kv_b_proj"})
#: Activation functions: how many intermediate-sized tensors each one saves for backward (its input
#: included), from the op sequence of transformers' activations.py (v5.x) and the autograd formulas
#: (silu/gelu save their input; NewGELU is a Python composite: x, tanh, 0.5·x and 1+tanh).
ACT_SAVED = {"silu": 1, "swish": 1, "gelu": 1, "gelu_pytorch_tanh": 1, "gelu_python_tanh": 4, "gelu_new": 4,
             "gelu_fast": 7, "gelu_accurate": 6, "quick_gelu": 2, "relu": 1, "relu2": 2, "gelu_10": 2,
             "tanh": 1, "sigmoid": 1, "linear": 0}

GENERIC_FAMILIES = ("generic",)


@dataclass(frozen=True)
class TensorClass:
    """All stored parameters of one role and size: ``count`` tensors of ``numel`` elements each."""

    role: str            # embedding | lm_head | linear | expert | norm | bias | router | other
    numel: int
    count: int
    quantizable: bool    # an nn.Linear weight bitsandbytes' 4-bit swap replaces (under transformers 5)
    quantizable_tf4: bool  # the same under transformers 4 (per-expert nn.Linear, router nn.Linear)
    group: str
    module: str | None = None
    shape: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        """Elements of all but the last dimension (Adafactor's factored row statistics)."""
        n = 1
        for x in self.shape[:-1]:
            n *= x
        return n if len(self.shape) >= 2 else self.numel

    @property
    def cols(self) -> int:
        """shape[:-2] + shape[-1:] elements (Adafactor's column statistics); 0 for 1-D tensors."""
        if len(self.shape) < 2:
            return 0
        n = self.shape[-1]
        for x in self.shape[:-2]:
            n *= x
        return n


@dataclass(frozen=True)
class Lin:
    """One Linear module of a decoder layer: ``per_layer`` instances reading ``reads``."""

    name: str
    in_f: int
    out_f: int
    per_layer: int
    reads: str           # attn_in | attn_out | mlp_in | mlp_out | latent | router | expert_in | expert_out
    bias: bool = False


@dataclass(frozen=True)
class LayerKind:
    """A decoder layer template and how many layers follow it."""

    name: str            # dense | moe
    count: int
    linears: tuple[Lin, ...]
    intermediate: int    # width of the MLP intermediate (dense) or of one routed expert
    shared_intermediate: int = 0
    experts: int = 0
    top_k: int = 0


@dataclass(frozen=True)
class ModelProfile:
    dims: Dims
    family: str
    norm: str                        # rmsnorm | layernorm
    mlp: str                         # gated | plain
    activation: str
    act_saved: int                   # intermediate-sized tensors the activation saves
    parallel: bool
    norms_per_layer: int             # 2, or 1 when attention and MLP share one norm (phi, falcon-7b)
    sandwich: bool                   # gemma2: extra post-attention / post-MLP norms
    qk_norm: bool
    rotary: bool
    rotary_dim: int                  # rotated dims per head
    learned_positions: bool
    tied: bool
    attn_dropout: float
    resid_dropout: float
    embd_dropout: float
    tensors: tuple[TensorClass, ...]
    linears: tuple[LinearModule, ...]   # every Linear module except the head
    head: LinearModule                  # the output projection (synthesised when tied)
    layer_kinds: tuple[LayerKind, ...]
    buffers_bytes: int               # model-created buffers (rotary inv_freq + original_inv_freq)
    generic: bool                    # no family-specific activation accounting: the fallback applies
    mla: bool
    sdpa_gqa: bool = True            # transformers' sdpa_attention_forward (enable_gqa); False: own sdpa call
    warnings: tuple[str, ...] = field(default_factory=tuple)
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_layers(self) -> int:
        return self.dims.num_layers

    @property
    def total_params(self) -> int:
        return sum(t.numel * t.count for t in self.tensors)


_CACHE: "weakref.WeakKeyDictionary[Architecture, ModelProfile]" = weakref.WeakKeyDictionary()
#: The profiles in use, by their picture (every compared field): a model whose picture equals another's
#: (fine-tunes and revisions of one base: same config facts, same tensors) gets that profile object, so
#: the per-setup work cached on it (parameter plans, layer traces, estimates) is done once for both.
_SHARED: "weakref.WeakValueDictionary[tuple, ModelProfile]" = weakref.WeakValueDictionary()
_COMPARED = tuple(f.name for f in fields(ModelProfile) if f.compare)


def profile_of(arch: Architecture) -> ModelProfile:
    """The (cached) memory-relevant picture of ``arch``; models with equal pictures share one profile."""
    try:
        return _CACHE[arch]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: build every time
        return _build(arch)
    prof = _shared(_build(arch))
    _CACHE[arch] = prof
    return prof


def _shared(prof: ModelProfile) -> ModelProfile:
    """The profile in use with the same picture as ``prof`` (its caches then serve ``prof``'s model), else
    ``prof`` itself, now in use. Keyed by the picture's fields, not the profile, so that a profile no
    model uses any more is released."""
    return _SHARED.setdefault(tuple(getattr(prof, name) for name in _COMPARED), prof)


def _cfg_float(cfg: Mapping[str, Any], *keys: str) -> float:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return 0.0


def _build(arch: Architecture) -> ModelProfile:
    d = arch.dims
    cfg, _ = text_config_of(arch.metadata.config)
    warnings: list[str] = []
    moe = d.moe

    # ---- tensors by role and size ------------------------------------------------------------------
    agg: Counter[tuple] = Counter()
    prequant = False
    for t in arch.tensors:
        if t.kind in ("buffer",):
            continue
        if t.kind == "quant_side":
            prequant = True
            continue
        if t.params <= 0:
            continue
        if t.quantized:
            prequant = True
        router = (moe is not None and t.module in ("gate", "router") and t.group == "mlp"
                  and t.shape and t.shape[0] == moe.num_experts)
        if t.group == "embedding":
            role = "embedding"
        elif t.group == "lm_head":
            role = "lm_head"
        elif t.group == "norms":
            role = "norm"
        elif router:
            role = "router"
        elif t.kind == "bias":
            role = "bias"
        elif t.is_expert:
            role = "expert"
        elif t.is_linear:
            role = "linear"
        else:
            role = "other"
        q5 = role == "linear"                       # tf5: fused experts and routers are not nn.Linear
        q4 = role in ("linear", "router") or (role == "expert" and t.is_linear)
        params = t.params // t.count  # of one tensor (an entry may stand for all experts of a layer)
        shape = tuple(t.shape) if t.params == t.stored_elements else (params,)
        agg[(role, params, q5, q4, t.group, t.module if role in ("linear", "expert") else None, shape)] += t.count
    tensors = tuple(TensorClass(role=r, numel=n, count=c, quantizable=q5, quantizable_tf4=q4, group=g, module=m,
                                shape=sh)
                    for (r, n, q5, q4, g, m, sh), c in sorted(agg.items(), key=lambda kv: (kv[0][0], -kv[0][1])))
    if prequant:
        warnings.append("the checkpoint is stored pre-quantized; estimates assume it is loaded (dequantized) "
                        "in the setup's precision")

    tied = d.tied_embeddings or not any(t.role == "lm_head" for t in tensors)
    heads = [m for m in arch.linears if m.group == "lm_head"]
    head = heads[0] if heads else LinearModule(name="lm_head", in_features=d.hidden_size,
                                               out_features=d.vocab_size, count=1, group="lm_head", bias=False)
    linears = tuple(m for m in arch.linears if m.group != "lm_head")

    # ---- family facts --------------------------------------------------------------------------------
    fam = d.family
    generic = fam in GENERIC_FAMILIES
    if generic:
        warnings.append(f"model_type {d.model_type!r} has no dedicated activation accounting: activations use "
                        "the generic Llama-style decoder formula (check against a measurement)")
    act = d.activation
    act_saved = ACT_SAVED.get(act)
    if act_saved is None:
        warnings.append(f"activation {act!r} is not in the table of saved tensors: assumed to save 2 tensors")
        act_saved = 2
    norms_per_layer = 2
    if d.parallel_attention:
        if fam == "phi":
            norms_per_layer = 1
        elif fam == "falcon":
            norms_per_layer = 2 if cfg.get("new_decoder_architecture") else (
                1 if int(cfg.get("num_ln_in_parallel_attn") or 1) == 1 else 2)
        else:  # gpt_neox use_parallel_residual: input_layernorm and post_attention_layernorm both read x
            norms_per_layer = 2
    learned = any(t.group == "embedding" and any(k in t.name for k in ("wpe", "embed_positions",
                                                                      "position_embeddings"))
                  for t in arch.tensors)
    rope = not learned and fam not in ("gpt2", "gpt_bigcode")
    frac = _cfg_float(cfg, "partial_rotary_factor") or (_cfg_float(cfg, "rotary_pct") if fam == "gpt_neox" else 0.0)
    if fam == "gpt_neox" and not frac:
        frac = 0.25
    rot_dim = int(d.head_dim * frac) if frac else d.head_dim
    if d.mla is not None:
        rot_dim = d.mla.qk_rope_head_dim
    buffers = 0
    if rope:
        from .units import rnd
        buffers = 2 * rnd(4 * max(rot_dim // 2, 1))  # inv_freq + original_inv_freq, fp32 (transformers 5.x)

    attn_p = _cfg_float(cfg, "attention_dropout", "attn_pdrop", "attention_probs_dropout_prob", "attn_dropout")
    resid_p = _cfg_float(cfg, "resid_pdrop", "hidden_dropout", "residual_dropout", "hidden_dropout_prob",
                         "resid_dropout")
    embd_p = _cfg_float(cfg, "embd_pdrop", "embedding_dropout", "emb_dropout")
    if fam == "phi":
        embd_p = _cfg_float(cfg, "embd_pdrop")

    kinds = _layer_kinds(d, linears, warnings)
    return ModelProfile(
        dims=d, family=fam, norm=d.norm, mlp=d.mlp, activation=act, act_saved=act_saved,
        parallel=d.parallel_attention, norms_per_layer=norms_per_layer, sandwich=fam == "gemma2",
        qk_norm=d.qk_norm or bool(cfg.get("qk_layernorm")), rotary=rope, rotary_dim=rot_dim,
        learned_positions=learned, tied=tied, attn_dropout=attn_p, resid_dropout=resid_p, embd_dropout=embd_p,
        tensors=tensors, linears=linears, head=head, layer_kinds=kinds, buffers_bytes=buffers, generic=generic,
        mla=d.mla is not None, sdpa_gqa=fam != "falcon", warnings=tuple(warnings),
    )


def _layer_kinds(d: Dims, linears: tuple[LinearModule, ...], warnings: list[str]) -> tuple[LayerKind, ...]:
    """Split the Linear modules into decoder-layer templates (dense MLP layers, MoE layers)."""
    L = d.num_layers
    moe = d.moe
    dense_count = moe.dense_layers if moe else L
    moe_count = moe.moe_layers if moe else 0
    dense: list[Lin] = []
    sparse: list[Lin] = []
    for m in linears:
        if m.group not in ("attention", "mlp", "experts"):
            continue
        if m.group == "attention":
            reads = "attn_out" if m.name in ATTN_OUT_NAMES else ("latent" if m.name in MLA_LATENT_NAMES else "attn_in")
            per = max(m.count // (L + d.mtp_layers), 1) if m.count >= L else 1
            lin = Lin(m.name, m.in_features, m.out_features, per, reads, m.bias)
            dense.append(lin)
            sparse.append(lin)
            continue
        if m.group == "experts" or m.is_expert:
            if not moe:
                continue
            # per-expert 2-D weights and fused 3-D ones (count = experts x layers) alike: E per layer
            per = max(m.count // max(moe_count, 1), 1)
            reads = "expert_out" if m.name in MLP_OUT_NAMES or m.in_features != d.hidden_size else "expert_in"
            sparse.append(Lin(m.name, m.in_features, m.out_features, per, reads, m.bias))
            continue
        # mlp group: dense MLP, router, shared experts
        if moe and m.out_features == moe.num_experts and m.name in ("gate", "router"):
            sparse.append(Lin(m.name, m.in_features, m.out_features, 1, "router", m.bias))
            continue
        reads = "mlp_out" if m.name in MLP_OUT_NAMES and m.out_features == d.hidden_size else "mlp_in"
        if moe and m.count == moe_count and (m.count != dense_count or
                                             moe.shared_intermediate in (m.in_features, m.out_features)):
            if m.out_features == 1:  # Qwen2-MoE shared_expert_gate (h -> 1)
                sparse.append(Lin(m.name, m.in_features, m.out_features, 1, "router", m.bias))
            else:
                sparse.append(Lin(m.name, m.in_features, m.out_features, 1, reads.replace("mlp", "shared"),
                                  m.bias))
            continue
        per = max(m.count // max(dense_count, 1), 1)
        dense.append(Lin(m.name, m.in_features, m.out_features, per, reads, m.bias))
    kinds = []
    if dense_count:
        kinds.append(LayerKind("dense", dense_count, tuple(dense), d.intermediate_size))
    if moe_count and moe:
        kinds.append(LayerKind("moe", moe_count, tuple(sparse), moe.expert_intermediate,
                               shared_intermediate=moe.shared_intermediate, experts=moe.num_experts,
                               top_k=moe.top_k))
    return tuple(kinds)
