"""The training memory model: peak GPU memory of a fine-tuning step from the model picture alone. Pure.

    >>> est = estimate(arch, Setup(method="qlora"))
    >>> est.peak_allocated_bytes, est.peak_phase
    >>> print("\\n".join(explain(est)))

One module per component family, each term a small function that names its source:
:mod:`.weights` (base weights, NF4 storage, LoRA adapters), :mod:`.optimizers` (gradients, states, step
temporaries), :mod:`.activations` (saved tensors per layer, op by op), :mod:`.logits` (the fp32 loss path),
:mod:`.overhead` (kernel scratch, fragmentation, CUDA context) and :mod:`.phases` (what is alive when).
The default stack is Hugging Face transformers 5.x + PEFT + bitsandbytes with torch's optimizers, as
measured by the fake-tensor oracle (shared/reference/simulation.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from ..architecture import Architecture
from .component import PHASES, Component
from .overhead import device_bytes, reserved_bytes
from .phases import build
from .profile import ModelProfile, profile_of
from .setup import Setup
from .units import GIB

__all__ = ["Component", "Estimate", "Setup", "STATIC_COMPONENTS", "estimate", "estimate_many", "explain", "PHASES"]

#: Components that never change during a step: the base for the fragmentation margin.
STATIC_COMPONENTS = ("weights", "buffers", "weights.nf4", "weights.nf4_stats", "lora_adapters", "optimizer_states",
           "kernel_scratch.cublas", "inputs")


@dataclass(frozen=True)
class Estimate:
    method: str
    setup: Setup
    components: tuple[Component, ...]
    phase_bytes: Mapping[str, int]
    peak_phase: str
    peak_allocated_bytes: int
    reserved_bytes: int
    device_bytes: int
    trainable_params: int
    warnings: tuple[str, ...] = field(default_factory=tuple)
    largest_transient_bytes: int = 0  # the largest single temporary block (the allocator's margin needs it)

    @property
    def peak_gib(self) -> float:
        return self.peak_allocated_bytes / GIB

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def at_peak(self) -> tuple[Component, ...]:
        """The components alive in the peak phase (they sum to ``peak_allocated_bytes``)."""
        return tuple(c for c in self.components if c.alive(self.peak_phase) and not c.evictable)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "setup": self.setup.to_dict(),
            "setup_text": self.setup.describe(),
            "peak_phase": self.peak_phase,
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "reserved_bytes": self.reserved_bytes,
            "device_bytes": self.device_bytes,
            "trainable_params": self.trainable_params,
            "components": {c.name: c.bytes for c in self.components},
            "components_at_peak": {c.name: c.bytes for c in self.at_peak()},
            "phases": dict(self.phase_bytes),
            "warnings": list(self.warnings),
        }


def estimate(arch: Architecture, setup: Setup | None = None, **knobs: Any) -> Estimate:
    """Peak memory of one training step of ``arch`` under ``setup`` (or ``Setup(**knobs)``).

    An Estimate is an immutable value of the model's profile and the setup: it is made once per (profile,
    setup) and cached on the profile, so models sharing a profile (see :func:`.profile.profile_of`) and
    repeated setups get the same object."""
    if setup is None:
        setup = Setup(**knobs)
    elif knobs:
        setup = setup.replace(**knobs)
    prof = profile_of(arch)
    key = ("estimate", setup, setup.precision_auto)  # precision_auto: not compared, but replace() reads it
    hit = prof.cache.get(key)
    if hit is None:
        hit = prof.cache[key] = _estimate(prof, setup)
    return hit


def _estimate(prof: ModelProfile, setup: Setup) -> Estimate:
    comps, warnings, pp, largest = build(prof, setup)
    phase_bytes = {p: 0 for p in PHASES}
    evictable = 0
    for c in comps:
        if c.evictable:
            evictable += c.bytes
            continue
        for p in c.phases:
            phase_bytes[p] += c.bytes
    peak_phase = max(PHASES, key=lambda p: phase_bytes[p])
    peak = phase_bytes[peak_phase]
    static = sum(c.bytes for c in comps if c.name in STATIC_COMPONENTS)
    reserved = reserved_bytes(peak, static, largest)
    return Estimate(
        method=setup.method, setup=setup, components=tuple(comps),
        phase_bytes=MappingProxyType(phase_bytes), peak_phase=peak_phase, peak_allocated_bytes=peak,
        reserved_bytes=reserved, device_bytes=device_bytes(reserved, evictable),
        trainable_params=pp.trainable_params, warnings=tuple(dict.fromkeys(warnings)),
        largest_transient_bytes=largest)


def estimate_many(arch: Architecture, setups: Iterable[Setup]) -> list[Estimate]:
    """One estimate per setup (the per-model picture is built once and cached)."""
    return [estimate(arch, s) for s in setups]


def explain(est: Estimate) -> list[str]:
    """Every component's formula with the numbers substituted and its source, then the phases."""
    lines = [f"{est.method}: {est.setup.describe()}"]
    for c in est.components:
        mark = "*" if c.alive(est.peak_phase) else " "
        lines.append(f"{mark} {c.name}: {c.bytes / GIB:.3f} GiB  [{', '.join(c.phases)}]"
                     + ("  (outside PyTorch's allocator, evictable)" if c.evictable else ""))
        lines.append(f"      = {c.formula}")
        lines.append(f"      = {c.substituted}")
        lines.append(f"      source: {c.source}")
    lines.append("phases (* = components alive at the peak):")
    for p, b in est.phase_bytes.items():
        lines.append(f"  {p:16s} {b / GIB:9.3f} GiB" + ("   <- peak" if p == est.peak_phase else ""))
    lines.append(f"peak allocated {est.peak_allocated_bytes / GIB:.2f} GiB, reserved {est.reserved_bytes / GIB:.2f} "
                 f"GiB, device {est.device_bytes / GIB:.2f} GiB")
    for w in est.warnings:
        lines.append(f"warning: {w}")
    return lines
