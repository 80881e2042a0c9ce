"""Weights: the base model in its load dtype, QLoRA's NF4 storage, LoRA adapters. Pure.

Every tensor is a separate CUDA allocation, so each is rounded up to 512 bytes (units.BLOCK) before it is
summed; that is exact and matters only for tiny tensors (norms of small models, NF4 code tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..architecture import LinearModule
from .component import ALL, Component
from .profile import ModelProfile
from .setup import Setup
from .units import rnd

NF4_BLOCK = 64          # bitsandbytes Params4bit blocksize (quantize_4bit default)
DQ_BLOCK = 256          # second-level blocksize of double quantization (quantize_blockwise of the absmax)
NF4_CODE_BYTES = 16 * 4  # get_4bit_type("nf4"): 16 fp32 values, a new tensor per layer
DYNAMIC_MAP_BYTES = 256 * 4  # create_dynamic_map(): 256 fp32 values, cached once (state2.code)


@dataclass(frozen=True)
class Trainable:
    """``count`` trainable tensors of ``numel`` elements in ``dt``-byte elements (``shape`` for Adafactor)."""

    numel: int
    dt: int
    count: int
    shape: tuple[int, ...]
    part: str   # embedding | head | layers | norm (for the backward phases)


@dataclass(frozen=True)
class ParamPlan:
    base_params: int          # parameters kept in a float dtype (frozen or trained)
    base_bytes: int
    base_dt: int              # their element size
    nf4_params: int
    nf4_bytes: int
    nf4_stats_bytes: int
    quantized: frozenset[str]  # Linear module names swapped for Linear4bit
    lora_modules: tuple[LinearModule, ...]
    lora_params: int
    lora_bytes: int
    trainable: tuple[Trainable, ...]
    trainable_params: int
    warnings: tuple[str, ...] = field(default_factory=tuple)


def base_dtype_bytes(setup: Setup) -> int:
    """Element size of the parameters that are not 4-bit.

    full: the precision's weight dtype (fp32 for ``fp32`` and ``amp-*``: the fp32 weights are the master
    copy). LoRA: the frozen base stays in the half dtype unless precision is ``fp32``. QLoRA: the non-4-bit
    parameters (embeddings, norms, head, biases) in the half dtype, or fp32 after PEFT's
    ``prepare_model_for_kbit_training`` ("cast all non INT8 parameters to fp32", peft utils/other.py).
    """
    if setup.method == "full":
        return 4 if setup.precision == "fp32" or setup.autocast else 2
    if setup.method == "lora":
        return 4 if setup.precision == "fp32" else 2
    return 4 if setup.prepare_kbit else 2


def _is_router(prof: ModelProfile, m: LinearModule) -> bool:
    moe = prof.dims.moe
    return bool(moe) and m.group == "mlp" and m.name in ("gate", "router") and m.out_features == moe.num_experts


def reachable(prof: ModelProfile, m: LinearModule, setup: Setup) -> bool:
    """Is ``m`` an ``nn.Linear`` that PEFT's target_modules / bitsandbytes' 4-bit swap can reach?

    transformers 5.x stores routed experts as fused 3-D parameters run by grouped_mm and routers as a
    plain Parameter (MixtralTopKRouter): neither is an nn.Linear. transformers 4.x had both as nn.Linear.
    """
    if setup.transformers_major >= 5 and (m.is_expert or _is_router(prof, m)):
        return False
    return True


def lora_modules(prof: ModelProfile, setup: Setup) -> tuple[tuple[LinearModule, ...], list[str]]:
    """The Linear modules that get an adapter, and warnings about targets that match nothing.

    ``all-linear`` follows PEFT's ``_maybe_include_all_linear_layers``: every Linear (and Conv1D) except the
    output layer. Named targets match the module's own name (PEFT's suffix match).
    """
    warnings: list[str] = []
    if setup.lora_targets == "all-linear":
        return tuple(m for m in prof.linears if reachable(prof, m, setup)), warnings
    names = set(setup.lora_targets)
    mods = [m for m in prof.linears if m.name in names and reachable(prof, m, setup)]
    if "lm_head" in names:
        mods.append(prof.head)
    found = {m.name for m in mods}
    for n in setup.lora_targets:
        if n in found:
            continue
        if any(m.name == n for m in prof.linears):
            warnings.append(f"LoRA target {n!r} names routed experts or a router, which transformers "
                            f"{setup.transformers_major}.x does not implement as nn.Linear: no adapter")
        else:
            warnings.append(f"LoRA target {n!r} matches no Linear module of this model")
    if not mods:
        warnings.append("no LoRA target matched: nothing is trainable")
    return tuple(mods), warnings


def plan(prof: ModelProfile, setup: Setup) -> ParamPlan:
    """Who is stored how, and who trains. Cached per (model, weight-relevant knobs)."""
    key = ("plan", setup.method, setup.precision, setup.prepare_kbit, setup.double_quant, setup.lora_rank,
           setup.lora_targets, setup.lora_dtype, setup.transformers_major)
    hit = prof.cache.get(key)
    if hit is not None:
        return hit
    full = setup.method == "full"
    qlora = setup.method == "qlora"
    bd = base_dtype_bytes(setup)
    base_params = base_bytes = nf4_params = nf4_bytes = stats = 0
    n_quant = 0
    trainable: list[Trainable] = []
    quantized: set[str] = set()
    L = max(prof.num_layers, 1)
    for tc in prof.tensors:
        q = qlora and (tc.quantizable if setup.transformers_major >= 5 else tc.quantizable_tf4)
        if q:
            nf4_params += tc.numel * tc.count
            nf4_bytes += tc.count * rnd((tc.numel + 1) // 2)
            stats += tc.count * nf4_stats(tc.numel, setup.double_quant)
            n_quant += tc.count
            if tc.module:
                quantized.add(tc.module)
            continue
        base_params += tc.numel * tc.count
        base_bytes += tc.count * rnd(tc.numel * bd)
        if full:
            part = {"embedding": "embedding", "lm_head": "head", "norm": "norm"}.get(tc.role, "layers")
            if tc.role == "norm" and tc.count < L:
                part = "head"  # the final norm (and other model-level norms)
            trainable.append(Trainable(tc.numel, bd, tc.count, tc.shape, part))
    if n_quant and setup.double_quant:
        stats += rnd(DYNAMIC_MAP_BYTES)  # state2.code: the cached dynamic map, shared by every layer
    mods: tuple[LinearModule, ...] = ()
    warns: list[str] = []
    lora_params = lora_bytes = 0
    if setup.is_peft:
        mods, warns = lora_modules(prof, setup)
        ad = 4 if setup.lora_dtype == "fp32" else 2
        r = setup.lora_rank
        for m in mods:
            lora_params += m.count * r * (m.in_features + m.out_features)
            lora_bytes += m.count * (rnd(r * m.in_features * ad) + rnd(r * m.out_features * ad))
            part = "head" if m.group == "lm_head" else "layers"
            trainable.append(Trainable(r * m.in_features, ad, m.count, (r, m.in_features), part))
            trainable.append(Trainable(r * m.out_features, ad, m.count, (m.out_features, r), part))
    res = ParamPlan(base_params=base_params, base_bytes=base_bytes, base_dt=bd, nf4_params=nf4_params,
                    nf4_bytes=nf4_bytes, nf4_stats_bytes=stats, quantized=frozenset(quantized),
                    lora_modules=mods, lora_params=lora_params, lora_bytes=lora_bytes,
                    trainable=tuple(trainable), trainable_params=sum(t.numel * t.count for t in trainable),
                    warnings=tuple(warns))
    prof.cache[key] = res
    return res


def nf4_stats(numel: int, double_quant: bool) -> int:
    """Quantization state bytes of one 4-bit Linear (bitsandbytes 0.50 functional.quantize_4bit).

    Without double quant: fp32 absmax per 64-element block + the 16-entry NF4 code table. With double
    quant (``compress_statistics``): the absmax is itself quantized to uint8 per 64 elements, with an
    fp32 absmax per 256 of those and one fp32 offset (QLoRA paper §3 "Double Quantization"); the
    dynamic map of the second level is shared (counted once by :func:`plan`).
    """
    blocks = -(-numel // NF4_BLOCK)
    code = rnd(NF4_CODE_BYTES)
    if not double_quant:
        return rnd(blocks * 4) + code
    return rnd(blocks) + rnd(-(-blocks // DQ_BLOCK) * 4) + rnd(4) + code


# --------------------------------------------------------------------------------------------------
def components(prof: ModelProfile, setup: Setup, pp: ParamPlan) -> list[Component]:
    out: list[Component] = []
    dt_name = {2: setup.half, 4: "fp32"}[pp.base_dt]
    if setup.method == "full":
        why = ("trained weights in the load dtype; with amp-* the fp32 weights are the master copy "
               "(HF Trainer bf16=True on an fp32 load)")
    elif setup.method == "lora":
        why = "frozen base in the load dtype (LoRA never copies it)"
    else:
        why = ("parameters bitsandbytes does not quantize: embeddings, norms, biases and lm_head "
               "(transformers get_keys_to_not_convert keeps the output layer)"
               + ("; cast to fp32 by peft prepare_model_for_kbit_training" if setup.prepare_kbit else ""))
    out.append(Component(
        "weights", pp.base_bytes, ALL,
        f"Σ_tensors round512(numel × {pp.base_dt} B)",
        f"{pp.base_params:,} params × {pp.base_dt} B ({dt_name}) = {pp.base_bytes:,} B",
        f"{why}; CUDA caching allocator 512-B blocks (c10/cuda/CUDACachingAllocator.cpp)"))
    if prof.buffers_bytes:
        out.append(Component(
            "buffers", prof.buffers_bytes, ALL, "2 × round512(head_dim/2 × 4 B)",
            f"rotary inv_freq + original_inv_freq = {prof.buffers_bytes:,} B",
            "transformers 5.x RotaryEmbedding registers inv_freq and a clone (fp32)"))
    if pp.nf4_params:
        out.append(Component(
            "weights.nf4", pp.nf4_bytes, ALL, "Σ_Linear round512(ceil(numel / 2))",
            f"{pp.nf4_params:,} params × 0.5 B = {pp.nf4_bytes:,} B",
            "bitsandbytes 0.50 Params4bit: two 4-bit NF4 values per uint8 (QLoRA paper §3)"))
        if setup.double_quant:
            f = "Σ_Linear [round512(n/64) + round512(4·n/(64·256)) + 512 (offset) + 512 (code)] + 1 KiB dynamic map"
            sub = f"≈ {pp.nf4_params:,} × (1/64 + 4/16384) B = {pp.nf4_stats_bytes:,} B"
        else:
            f = "Σ_Linear [round512(4 · n/64) + 512 (code)]"
            sub = f"≈ {pp.nf4_params:,} × 4/64 B = {pp.nf4_stats_bytes:,} B"
        out.append(Component(
            "weights.nf4_stats", pp.nf4_stats_bytes, ALL, f, sub,
            "bitsandbytes 0.50 functional.quantize_4bit (blocksize 64; compress_statistics -> "
            "quantize_blockwise(absmax, blocksize=256)); QLoRA paper §3 Double Quantization"))
    if pp.lora_params:
        ad = 4 if setup.lora_dtype == "fp32" else 2
        names = sorted({m.name for m in pp.lora_modules})
        shapes = ", ".join(f"{m.name} {m.in_features}→{m.out_features} ×{m.count}" for m in pp.lora_modules[:8])
        if len(pp.lora_modules) > 8:
            shapes += ", …"
        out.append(Component(
            "lora_adapters", pp.lora_bytes, ALL,
            f"Σ_targets r·(in + out) × {ad} B",
            f"r={setup.lora_rank} on {', '.join(names)} ({shapes}) = {pp.lora_params:,} params × {ad} B "
            f"= {pp.lora_bytes:,} B",
            "peft 0.21 lora.Linear: lora_A (r×in) + lora_B (out×r) per targeted Linear; fp32 by default "
            "(get_peft_model autocast_adapter_dtype=True)"))
    return out
