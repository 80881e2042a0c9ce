"""Gradients, optimizer states and the optimizer step's temporaries. Pure.

Gradients: torch gives every trainable parameter a ``.grad`` in the parameter's own dtype (bf16 params ->
bf16 grads; fp32 LoRA adapters -> fp32 grads); HF Trainer zeroes them with ``set_to_none=True``, so they
exist from the backward pass to ``optimizer.step()`` and not during the next forward (no gradient
accumulation). States exist from the first ``step()`` on: an estimate describes step 2 onwards.
"""

from __future__ import annotations

from .component import ALL, BWD_END, OPTIMIZER, Component
from .setup import Setup
from .units import rnd
from .weights import ParamPlan, Trainable

MIN_8BIT_SIZE = 4096      # bitsandbytes Optimizer2State: tensors with fewer elements keep fp32 states
BNB_BLOCK = 256           # bitsandbytes 0.50 optim/optimizer.py: blockwise 8-bit states, fp32 absmax per 256
PAGED_MIN_NUMEL = 100_000  # Optimizer8bit.get_state_buffer: only tensors >= 1e5 elements are paged
QMAP_BYTES = 256 * 4       # dynamic / udynamic quantization maps (one each per optimizer)


def gradient_bytes(tr: tuple[Trainable, ...], part: str | None = None) -> int:
    return sum(t.count * rnd(t.numel * t.dt) for t in tr if part is None or t.part == part)


def gradients(pp: ParamPlan) -> Component:
    g = gradient_bytes(pp.trainable)
    return Component(
        "gradients", g, (BWD_END, OPTIMIZER),
        "Σ_trainable round512(numel × param dtype B)",
        f"{pp.trainable_params:,} params → {g:,} B",
        "torch autograd AccumulateGrad: .grad in the parameter's dtype (simulation.md 'grads 2 B/param "
        "for bf16 params'); HF Trainer zero_grad(set_to_none=True)")


def _adam_states(t: Trainable, setup: Setup) -> tuple[int, int]:
    """(regular bytes, paged bytes) of one tensor's Adam states under ``setup.optimizer``."""
    opt = setup.optimizer
    n = t.numel
    if opt in ("adamw", "adamw-foreach"):
        # torch.optim.AdamW _init_group: exp_avg / exp_avg_sq = zeros_like(p) (param dtype)
        step = rnd(4) if opt == "adamw" else 0   # fused keeps state['step'] on the device (fp32 scalar)
        return 2 * rnd(n * t.dt) + step, 0
    paged = opt.startswith("paged") and n >= PAGED_MIN_NUMEL
    if opt in ("adamw-8bit", "paged-adamw-8bit") and n >= MIN_8BIT_SIZE:
        blocks = -(-n // BNB_BLOCK)
        states = 2 * rnd(n)               # state1 / state2 uint8
        absmax = 2 * rnd(blocks * 4)      # absmax1 / absmax2 fp32, always regular torch.zeros
        return (absmax, states) if paged else (states + absmax, 0)
    states = 2 * rnd(n * 4)               # 32-bit bnb states are fp32 whatever the param dtype
    return (0, states) if paged else (states, 0)


def optimizer_states(pp: ParamPlan, setup: Setup) -> list[Component]:
    """The optimizer's persistent state (alive in every phase of step >= 2)."""
    opt = setup.optimizer
    tr = pp.trainable
    if opt == "sgd":
        return []
    if opt == "sgd-momentum":
        b = sum(t.count * rnd(t.numel * t.dt) for t in tr)
        return [Component("optimizer_states", b, ALL, "Σ round512(numel × param dtype B)  (momentum_buffer)",
                          f"{pp.trainable_params:,} params → {b:,} B",
                          "torch.optim.SGD: momentum_buffer = clone(grad) at the first step (param dtype)")]
    if opt == "adafactor":
        b = 0
        for t in tr:
            if len(t.shape) >= 2:
                rows = t.numel // t.shape[-1]
                cols = t.numel // (t.shape[-2] if t.shape[-2] else 1)
                b += t.count * (rnd(rows * 4) + rnd(cols * 4))
            else:
                b += t.count * rnd(t.numel * 4)
        return [Component("optimizer_states", b, ALL,
                          "Σ_2-D [round512(rows × 4) + round512(cols × 4)] + Σ_1-D round512(numel × 4)",
                          f"factored second moments of {pp.trainable_params:,} params → {b:,} B",
                          "transformers optimization.py Adafactor (HF Trainer: scale_parameter=False, "
                          "relative_step=False, beta1=None): exp_avg_sq_row/col in fp32 (grad upcast); "
                          "Shazeer & Stern 2018 §3")]
    reg = paged = 0
    for t in tr:
        r, p = _adam_states(t, setup)
        reg += t.count * r
        paged += t.count * p
    if opt in ("adamw-8bit", "paged-adamw-8bit"):
        reg += 2 * rnd(QMAP_BYTES)
    if opt in ("adamw", "adamw-foreach"):
        dt = {2: setup.half, 4: "fp32"}.get(tr[0].dt if tr else 4, "fp32")
        f = "Σ 2 × round512(numel × param dtype B)" + (" + 512 B step per tensor" if opt == "adamw" else "")
        sub = f"2 × {pp.trainable_params:,} × {tr[0].dt if tr else 4} B ({dt}) → {reg:,} B"
        src = ("torch 2.x optim/adamw.py _init_group: exp_avg and exp_avg_sq zeros_like(param), i.e. in the "
               "param dtype (simulation.md: 4 B/param for bf16 params, not 8)")
    elif opt in ("adamw-8bit", "paged-adamw-8bit"):
        f = "Σ_n≥4096 [2·round512(n) + 2·round512(4·n/256)] + Σ_n<4096 2·round512(4n) + 2 KiB maps"
        sub = f"{pp.trainable_params:,} params → {reg + paged:,} B"
        src = ("bitsandbytes 0.50 optim/optimizer.py Optimizer2State.init_state: uint8 state1/state2 with an "
               "fp32 absmax per 256-element block; tensors < min_8bit_size=4096 keep 32-bit states")
    else:
        f = "Σ 2 × round512(numel × 4 B)"
        sub = f"2 × {pp.trainable_params:,} × 4 B → {reg + paged:,} B"
        src = "bitsandbytes 0.50 Optimizer2State with optim_bits=32: fp32 state1/state2"
    out = []
    if reg:
        out.append(Component("optimizer_states", reg, ALL, f, sub, src))
    if paged:
        out.append(Component(
            "optimizer_states.paged", paged, ALL, f + "  (tensors ≥ 1e5 elements, paged)",
            f"{paged:,} B in CUDA unified memory",
            "bitsandbytes get_state_buffer: F.get_paged (cudaMallocManaged) for tensors >= 1e5 elements — "
            "outside PyTorch's allocator (not in max_memory_allocated), evictable to host RAM under pressure "
            "(QLoRA paper §3 Paged Optimizers)", evictable=True))
    return out


def step_transient(pp: ParamPlan, setup: Setup) -> Component | None:
    """Temporaries inside ``optimizer.step()`` (on top of weights, grads and states)."""
    opt = setup.optimizer
    tr = pp.trainable
    if not tr:
        return None
    if opt == "adamw-foreach":
        b = sum(t.count * rnd(t.numel * t.dt) for t in tr)
        return Component(
            "optimizer_step", b, (OPTIMIZER,), "Σ round512(numel × param dtype B)  (one state's size)",
            f"_foreach_sqrt(exp_avg_sqs) over {pp.trainable_params:,} params → {b:,} B",
            "torch 2.x optim/adamw.py _multi_tensor_adamw: exp_avg_sq_sqrt = torch._foreach_sqrt(...) "
            "materialises a copy of every exp_avg_sq at once (simulation.md: +2 B/param transient, "
            "74.79 GiB for Llama-3-8B full)")
    if opt == "adafactor":
        big = max(tr, key=lambda t: t.numel)
        k = 16 if big.dt < 4 else 8
        b = k * big.numel
        return Component(
            "optimizer_step", rnd(b), (OPTIMIZER,), f"{k} × max_numel  (fp32 grad, fp32 param copy, 2 updates)",
            f"{k} × {big.numel:,} = {rnd(b):,} B",
            "transformers Adafactor.step, per parameter: grad.float(), p.float(), (grad**2)+eps and "
            "_approx_sq_grad(row, col) are alive together (the largest tensor sets the peak)")
    return None
