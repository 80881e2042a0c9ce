"""A small stand-in for the memory model's Estimate, for testing parallel/fit arithmetic by hand.

``Comp`` / ``Est`` have the fields of ``hubvram.memory``'s Component / Estimate that parallel.py reads;
``toy_estimator`` is a memory model simple enough to check with pencil and paper: model states from the
parameter count, activations ``act_per_token · b · s`` (+ ``quad · b · s²`` for eager attention).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PHASES = ("forward", "backward", "step")


@dataclass(frozen=True)
class Comp:
    name: str
    bytes: int
    phases: tuple[str, ...] = PHASES
    formula: str = ""
    substituted: bool = False
    source: str = "hand"


@dataclass(frozen=True)
class Est:
    components: tuple[Comp, ...]
    phase_bytes: dict
    peak_phase: str
    peak_allocated_bytes: int
    reserved_bytes: int
    device_bytes: int
    trainable_params: int = 0
    setup: Any = None


def make_est(comps, *, reserved_ratio: float = 1.0, context: int = 0, setup: Any = None, trainable: int = 0) -> Est:
    comps = tuple(comps)
    phase_bytes = {p: sum(c.bytes for c in comps if p in c.phases) for p in PHASES}
    peak_phase = max(phase_bytes, key=phase_bytes.get)
    peak = phase_bytes[peak_phase]
    reserved = -(-int(peak * reserved_ratio * 1000) // 1000)
    return Est(comps, phase_bytes, peak_phase, peak, reserved, reserved + context, trainable, setup)


def zero_paper_est(P: int, act: int = 0) -> Est:
    """Mixed-precision Adam as the ZeRO paper counts it: 2P fp16 weights, 2P fp16 grads, K = 12 (4P fp32
    master + 8P Adam states), plus ``act`` bytes of activations."""
    return make_est([
        Comp("fp16 weights", 2 * P),
        Comp("fp16 gradients", 2 * P, ("backward", "step")),
        Comp("fp32 master weights", 4 * P),
        Comp("AdamW states (fp32 m, v)", 8 * P),
        Comp("activations", act, ("forward", "backward")),
    ], setup=ToySetup(method="full"))


def deepspeed_est(P: int) -> Est:
    """DeepSpeed's stage_1_and_2.py comment: 2 fp16 params + 2 fp16 grads + 4 fp32 grads + 4 fp32 params + 8."""
    return make_est([
        Comp("fp16 weights", 2 * P),
        Comp("fp16 gradients", 2 * P, ("backward", "step")),
        Comp("fp32 gradients", 4 * P, ("backward", "step")),
        Comp("fp32 master weights", 4 * P),
        Comp("AdamW states (fp32 m, v)", 8 * P),
    ], setup=ToySetup(method="full"))


@dataclass(frozen=True)
class ToySetup:
    method: str = "full"
    batch_size: int = 1
    seq_len: int = 2048
    grad_checkpointing: bool = True
    precision: str = "bf16"
    optimizer: str = "adamw"
    lora_rank: int = 16
    attention: str = "sdpa"
    double_quant: bool = True


def toy_estimator(arch: Any, setup: ToySetup, *, act_per_token: int = 100_000, quad: int = 64) -> Est:
    """Per-replica bytes: weights 2P (frozen or trainable), full: grads 2P + AdamW 8P (8-bit: 2P);
    LoRA: 1% of P trainable at 16 B; QLoRA base 0.5 B/param. Activations linear in b·s, plus b·s²·quad
    under eager attention; reserved = 1.05 × allocated; device = reserved + 512 MiB."""
    P = arch.counts.total
    opt = 2 if setup.optimizer == "adamw-8bit" else 8
    ckpt = 0.25 if setup.grad_checkpointing else 1.0
    tokens = setup.batch_size * setup.seq_len
    act = int(act_per_token * ckpt * tokens)
    if setup.attention == "eager":
        act += quad * setup.batch_size * setup.seq_len ** 2
    if setup.method == "full":
        comps = [Comp("weights (bf16)", 2 * P), Comp("gradients", 2 * P, ("backward", "step")),
                 Comp("optimizer states", opt * P)]
        trainable = P
    else:
        trainable = P // 100
        base = P // 2 if setup.method == "qlora" else 2 * P
        comps = [Comp("frozen base weights", base), Comp("LoRA adapter weights", 4 * trainable),
                 Comp("LoRA gradients", 4 * trainable, ("backward", "step")),
                 Comp("optimizer states", opt * trainable)]
    comps.append(Comp("activations", act, ("forward", "backward")))
    comps.append(Comp("logits (fp32)", 8 * tokens * arch.dims.vocab_size // 1000, ("backward",)))
    return make_est(comps, reserved_ratio=1.05, context=512 << 20, setup=setup, trainable=trainable)


def toy(arch: Any, setup: Any) -> Est:
    return toy_estimator(arch, setup)


def replace(obj, **kw):
    return dataclasses.replace(obj, **kw)
