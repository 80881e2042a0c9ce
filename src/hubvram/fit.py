"""Does it fit? GPU verdicts, the fit matrix, and the inverse questions (largest batch / sequence, advice). Pure.

The figure compared with a GPU is the per-GPU **reserved** memory (what PyTorch's caching allocator holds,
``torch.cuda.max_memory_reserved``: the allocated peak plus fragmentation) against the catalog's
``usable_bytes`` (device memory minus the runtime context, see :mod:`hubvram.gpus`). Reserved, not the
device figure, because the device figure (nvidia-smi) adds the CUDA context, which ``usable_bytes`` has
already taken off: comparing it with ``usable_bytes`` would count the context twice. Reserved, not the
allocated peak, because a training step fails when the allocator cannot reserve a block, not when the
tensors alone outgrow the card.

Every search uses monotonicity rather than loops: per-GPU memory never grows with the GPU count under a
sharding strategy (bisection over the GPU counts), and never shrinks with batch or sequence length
(an analytic guess from a few estimates, verified, with bisection as the fall-back).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .gpus import GPU
from .parallel import Figures, ModelLayout, Plan, PerGPU, Replica, model_layout, per_gpu

__all__ = [
    "LADDER", "MAX_GPUS", "GPUS_PER_NODE", "FIT_FIGURE", "HOST_RAM_PER_NODE", "FitRequest", "Verdict", "Advice", "MatrixRow",
    "fits", "gpu_counts", "fit", "fit_plan", "fit_matrix", "max_batch", "max_seq_len", "largest_fitting",
    "advise", "adapt_setup", "command_line",
]

#: Strategies a practitioner tries when one GPU is not enough, cheapest first. ZeRO-2 keeps DDP's
#: communication volume (reduce-scatter + all-gather = one all-reduce, ZeRO §7) and shards gradients and
#: optimizer; ZeRO-3 / FSDP FULL_SHARD add a parameter all-gather (1.5x traffic); CPU offload costs PCIe
#: time, so it is tried only when no GPU-resident strategy fits within the cap. DDP and ZeRO-1 are absent:
#: DDP holds a full replica per GPU, and ZeRO-2 holds less than ZeRO-1 at the same traffic.
LADDER: tuple[tuple[str, str | None], ...] = (
    ("zero2", None), ("zero3", None), ("fsdp", None),
    ("zero2", "optimizer"), ("zero3", "optimizer"), ("zero3", "params"),
)
#: Offload tiers: GPU-resident first, then optimizer offload (ZeRO-Offload: the CPU runs Adam, PCIe carries
#: gradients and updated weights once per step), then parameter offload (ZeRO-Infinity / FSDP CPUOffload:
#: PCIe carries every layer's weights in forward and backward), whatever the GPU counts.
OFFLOAD_RANK: Mapping[str | None, int] = {None: 0, "optimizer": 1, "params": 2}
MAX_GPUS = 64
#: GPU counts are 1..8 on one node, then whole nodes of 8 (9 GPUs means two nodes anyway).
GPUS_PER_NODE = 8
FIT_FIGURE = "reserved_bytes"

Estimator = Callable[[Any, Any], Any]


def _default_estimator() -> Estimator:
    from .memory import estimate  # the memory model; imported late so this module loads without it

    return estimate


#: Host RAM one node may give to offloaded states: a typical 8-GPU cloud server (AWS p4d 1152 GiB,
#: p5 2 TiB, DGX H100 2 TiB). An offload plan needing more per node does not fit. ``--host-ram`` changes it.
HOST_RAM_PER_NODE = 1 << 40


def fits(pg: PerGPU | Figures, gpu: GPU, host_ram: int | None = HOST_RAM_PER_NODE) -> bool:
    """The per-GPU reserved figure fits in the GPU's usable memory (and an offload in the node's RAM)."""
    return getattr(pg, FIT_FIGURE) <= gpu.usable_bytes and (host_ram is None or pg.host_bytes_per_node <= host_ram)


def gpu_counts(max_gpus: int = MAX_GPUS, nodes: int = 1) -> list[int]:
    """The GPU counts searched, ascending: 1..8, then multiples of 8 (multiples of ``nodes`` always)."""
    out = [n for n in range(1, min(max_gpus, GPUS_PER_NODE) + 1)]
    out += list(range(2 * GPUS_PER_NODE, max_gpus + 1, GPUS_PER_NODE))
    if out[-1] != max_gpus:
        out.append(max_gpus)  # an explicit budget such as --gpus 12 is searched too
    return [n for n in out if n % nodes == 0] or [nodes]


def _first_true(n: int, pred: Callable[[int], bool]) -> int | None:
    """Smallest i in [0, n) with pred(i), for a predicate that is False ... False True ... True."""
    if n == 0 or not pred(n - 1):
        return None
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@functools.lru_cache(maxsize=4096)
def _plan(strategy: str, n: int, nodes: int, offload: str | None) -> Plan:
    """The plan searched for ``n`` GPUs (plans are immutable: one object per argument tuple, made once)."""
    if strategy == "single":
        return Plan()
    if nodes == 1 and n > GPUS_PER_NODE and n % GPUS_PER_NODE == 0:
        nodes = n // GPUS_PER_NODE  # host RAM is reported per node of 8
    return Plan(strategy, n, nodes, offload)


# --------------------------------------------------------------------------------------------------
# what the user asked for
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitRequest:
    """The fit question as the command line puts it.

    ``strategy`` / ``offload`` restrict the ladder (``--offload`` alone keeps the ladder's rungs with that
    offload); ``n_gpus`` caps the count (default :data:`MAX_GPUS`); with both ``strategy`` and ``n_gpus``
    :attr:`plan` is the exact plan whose per-GPU breakdown is shown.
    """

    gpus: tuple[GPU, ...]
    strategy: str | None = None
    n_gpus: int | None = None
    nodes: int = 1
    offload: str | None = None
    max_gpus: int = MAX_GPUS
    host_ram: int | None = HOST_RAM_PER_NODE

    def __post_init__(self) -> None:
        if self.strategy or self.n_gpus or self.offload:
            self.plan_or_none()  # validate early: one-line input errors

    @property
    def ladder(self) -> tuple[tuple[str, str | None], ...]:
        if self.strategy:
            return ((self.strategy, self.offload),)
        if self.offload:
            return tuple(r for r in LADDER if r[1] == self.offload)
        return LADDER

    @property
    def cap(self) -> int:
        return self.n_gpus or self.max_gpus

    def plan_or_none(self) -> Plan | None:
        if self.strategy is None:
            if self.offload and self.n_gpus:
                return Plan("zero3", self.n_gpus, self.nodes, self.offload)
            return None
        n = self.n_gpus or (1 if self.strategy == "single" else self.nodes)
        return Plan(self.strategy, n, self.nodes if self.strategy != "single" else 1, self.offload)

    def require_plan(self) -> tuple[tuple[tuple[str, str | None], ...], int]:
        """Ladder and cap for ``--require-fit``: one GPU unless ``--gpus`` / ``--strategy`` say otherwise."""
        if self.strategy is None and self.n_gpus is None and self.offload is None:
            return (), 1
        return self.ladder, self.n_gpus or (self.nodes if self.strategy else self.max_gpus)


# --------------------------------------------------------------------------------------------------
# verdicts
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """One (setup, GPU) answer: fits on one, needs ``min_gpus`` under ``strategy``, or does not fit."""

    gpu: GPU
    fits_on_one: bool
    min_gpus: int | None
    plan: Plan | None             # the plan at min_gpus; None when nothing fits
    per_gpu: PerGPU               # at min_gpus; when nothing fits, the leanest plan tried at the cap
    max_gpus: int
    single: PerGPU | None = None  # one GPU, no strategy
    precision: str | None = None  # set when the GPU ran the setup's fp16 twin (no bf16 on the card)

    @property
    def strategy(self) -> str | None:
        return self.plan.strategy if self.plan else None

    @property
    def offload(self) -> str | None:
        return self.plan.offload if self.plan else None

    @property
    def cell(self) -> str:
        if self.fits_on_one:
            return "fits on 1"
        if self.plan is None:
            return "does not fit"
        return self.plan.label.replace(f" ({self.plan.nodes} × {self.plan.gpus_per_node})", "")

    def to_dict(self) -> dict[str, Any]:
        pg = self.per_gpu
        return {
            "gpu": self.gpu.id, "gpu_name": self.gpu.name, "gpu_memory_bytes": self.gpu.memory_bytes,
            "usable_bytes": self.gpu.usable_bytes, "fits_on_one": self.fits_on_one, "min_gpus": self.min_gpus,
            "strategy": self.strategy, "offload": self.offload, "verdict": self.cell,
            "compared": FIT_FIGURE, "per_gpu_bytes": getattr(pg, FIT_FIGURE),
            "per_gpu_peak_allocated_bytes": pg.peak_allocated_bytes, "per_gpu_device_bytes": pg.device_bytes,
            "headroom_bytes": self.gpu.usable_bytes - getattr(pg, FIT_FIGURE),
            "host_bytes_per_node": pg.host_bytes_per_node, "max_gpus": self.max_gpus,
            "precision_used": self.precision,
            "per_gpu": pg.to_dict(),
        }


def fit_plan(est: Any, layout: ModelLayout, gpu: GPU, *, ladder: Sequence[tuple[str, str | None]] = LADDER,
             max_gpus: int = MAX_GPUS, nodes: int = 1, host_ram: int | None = HOST_RAM_PER_NODE,
             replica: Replica | None = None) -> Verdict:
    """The verdict for one estimate on one GPU: one GPU, else the fewest GPUs over ``ladder``.

    GPU-resident strategies are preferred to optimizer offload, and that to parameter offload, whatever the
    counts (:data:`OFFLOAD_RANK`); within a tier the smallest GPU count wins and ties go to the earlier
    (cheaper) strategy. Per-GPU memory is
    non-increasing in N under every sharding strategy, so each strategy's minimum is a bisection over
    :func:`gpu_counts` (about log2(15) plans computed). An offload plan must also leave the host RAM it needs
    per node within ``host_ram`` (constant in N up to one node, then falling: still monotone).
    The search compares per-GPU figures alone; only the plans a verdict names get their full breakdown.
    ``replica``: ``Replica(est, layout)`` shared across calls for the same estimate (per-GPU figures do not
    depend on the GPU judged, so a fit-matrix row computes each plan once for all its columns).
    """
    replica = Replica(est, layout) if replica is None else replica
    at = replica.figures

    single = at(Plan())
    counts = gpu_counts(max_gpus, nodes)
    if nodes == 1 and fits(single, gpu):
        one = replica.per_gpu(Plan())
        return Verdict(gpu, True, 1, Plan(), one, max_gpus, one)
    best_rank, best_k, best = 0, len(counts), None  # best_k: index into counts of the best count so far
    leanest: Figures | None = None
    for strategy, offload in sorted(ladder, key=lambda r: OFFLOAD_RANK[r[1]]):  # stable: ladder order per tier
        rank = OFFLOAD_RANK[offload]
        if best is not None and rank > best_rank:
            break  # a cheaper tier already fits: costlier tiers cannot win
        def figures_at(k: int, s=strategy, o=offload) -> Figures:
            return at(_plan(s, counts[k], nodes, o))

        # only a strictly smaller count can beat an earlier rung of the same tier
        k = _first_true(best_k, lambda j: fits(figures_at(j), gpu, host_ram))
        if k is not None:
            best_rank, best_k, best = rank, k, figures_at(k)
        elif best is None:
            at_cap = figures_at(len(counts) - 1)
            if leanest is None or getattr(at_cap, FIT_FIGURE) < getattr(leanest, FIT_FIGURE):
                leanest = at_cap
    one = replica.per_gpu(Plan())
    if best is None:
        return Verdict(gpu, False, None, None, replica.per_gpu((leanest or single).plan), max_gpus, one)
    return Verdict(gpu, fits(single, gpu) and nodes == 1, best.plan.gpus, best.plan,
                   replica.per_gpu(best.plan), max_gpus, one)


def fit(arch: Any, setup: Any, gpu: GPU, *, estimator: Estimator | None = None, **kw: Any) -> Verdict:
    """Estimate ``setup`` on ``arch`` and judge it on ``gpu`` (see :func:`fit_plan` for the keywords)."""
    est = (estimator or _default_estimator())(arch, setup)
    return fit_plan(est, model_layout(arch, setup), gpu, **kw)


@dataclass(frozen=True)
class MatrixRow:
    label: str                      # the method row ("full", "lora", "qlora", ...)
    setup: Any
    estimate: Any
    verdicts: tuple[Verdict, ...]


def fit_matrix(arch: Any, setups: Mapping[str, Any], gpus: Sequence[GPU], *, estimator: Estimator | None = None,
               ladder: Sequence[tuple[str, str | None]] = LADDER, max_gpus: int = MAX_GPUS, nodes: int = 1,
               adapt: bool = True, host_ram: int | None = HOST_RAM_PER_NODE,
               replicas: dict | None = None) -> list[MatrixRow]:
    """Rows = setups (one per method), columns = GPUs. With ``adapt``, a GPU without bf16 (T4, V100) is
    judged with the setup's fp16 twin (:func:`adapt_setup`).

    ``replicas``: a dict that shares :class:`Replica` objects across calls (compare passes one for all its
    models): an estimate the estimator returns again (the memory model does for models with the same
    profile) is divided under each plan once, when its layout is equal too."""
    estimator = estimator or _default_estimator()
    rows = []
    for label, setup in setups.items():
        cache: dict[Any, tuple[Any, ModelLayout, Replica]] = {}
        verdicts = []
        for gpu in gpus:
            s = adapt_setup(setup, gpu) if adapt else setup
            if s not in cache:
                est, layout = estimator(arch, s), model_layout(arch, s)
                cache[s] = (est, layout, _replica(est, layout, replicas))
            est, layout, replica = cache[s]
            v = fit_plan(est, layout, gpu, ladder=ladder, max_gpus=max_gpus, nodes=nodes, host_ram=host_ram,
                         replica=replica)
            verdicts.append(dataclasses.replace(v, precision=s.precision) if s is not setup else v)
        rows.append(MatrixRow(label, setup, cache[setup][0] if setup in cache else estimator(arch, setup),
                              tuple(verdicts)))
    return rows


def _replica(est: Any, layout: ModelLayout, shared: dict | None) -> Replica:
    """``Replica(est, layout)``, or the one ``shared`` holds for this very estimate and an equal layout. The
    key is the estimate's identity: the Replica kept in ``shared`` holds the estimate, so the id stays its own."""
    if shared is None:
        return Replica(est, layout)
    key = (id(est), layout)
    replica = shared.get(key)
    if replica is None:
        replica = shared[key] = Replica(est, layout)
    return replica


def adapt_setup(setup: Any, gpu: GPU) -> Any:
    """The setup as it would run on ``gpu``: bf16 becomes fp16 on cards without bf16 (T4, V100), and
    amp-bf16 becomes amp-fp16 (same bytes; the recipe, and its command line, change)."""
    if gpu.bf16:
        return setup
    precision = str(getattr(setup, "precision", ""))
    if "bf16" not in precision:
        return setup
    return dataclasses.replace(setup, precision=precision.replace("bf16", "fp16"))


# --------------------------------------------------------------------------------------------------
# inverse questions: largest batch / sequence
# --------------------------------------------------------------------------------------------------
def largest_fitting(ok: Callable[[int], bool], lo: int, hi: int, guess: int | None = None) -> int:
    """Largest x in [lo, hi] with ``ok(x)`` for a monotone ``ok`` (True ... True False ... False);
    ``lo - 1`` when none. A ``guess`` is verified first (``ok(guess)`` and not ``ok(guess + 1)`` ends the
    search in two calls); otherwise it narrows the bracket for the bisection."""
    if hi < lo or not ok(lo):
        return lo - 1
    good, bad = lo, hi + 1  # ok(good) is True; everything >= bad is False
    if guess is not None:
        g = min(max(guess, lo), hi)
        if ok(g):
            good = g
            if g == hi or not ok(g + 1):
                return g
            good = g + 1
        else:
            bad = g
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def _solve_guess(xs: Sequence[int], ys: Sequence[int], target: int) -> int | None:
    """Largest x with the polynomial through (xs, ys) (degree len-1 <= 2) at most ``target``."""
    if len(xs) == 2:
        (x0, x1), (y0, y1) = xs, ys
        slope = (y1 - y0) / (x1 - x0)
        return None if slope <= 0 else math.floor(x0 + (target - y0) / slope)
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    a = (d12 - d01) / (x2 - x0)
    b = d01 - a * (x0 + x1)
    c = y0 - a * x0 * x0 - b * x0
    if abs(a) < 1e-12:
        return None if b <= 0 else math.floor((target - c) / b)
    disc = b * b - 4 * a * (c - target)
    if disc < 0:
        return None
    return math.floor((-b + math.sqrt(disc)) / (2 * a))


def _figure(est: Any, arch: Any, setup: Any, plan: Plan, layout: ModelLayout | None = None) -> int:
    return getattr(per_gpu(est, plan, layout or model_layout(arch, setup)), FIT_FIGURE)


def max_batch(arch: Any, setup: Any, gpu: GPU, *, plan: Plan = Plan(), limit: int = 1 << 16,
              estimator: Estimator | None = None) -> int:
    """Largest micro-batch that fits on ``gpu`` under ``plan`` (0 when batch 1 does not).

    Memory is affine in the batch at a fixed sequence length (every activation and logits term is
    proportional to it, eager attention's b·s² included), so two estimates give the slope and intercept
    and the answer in closed form; it is verified with the estimate at x and x+1, and bisection takes over
    if the max over phases bends the line.
    """
    estimator = estimator or _default_estimator()
    layout = model_layout(arch, setup)

    def figure(b: int) -> int:
        return _figure(estimator(arch, dataclasses.replace(setup, batch_size=b)), arch, setup, plan, layout)

    guess = _solve_guess((1, 2), (figure(1), figure(2)), gpu.usable_bytes)
    return max(0, largest_fitting(lambda b: figure(b) <= gpu.usable_bytes, 1, limit, guess))


def max_seq_len(arch: Any, setup: Any, gpu: GPU, *, plan: Plan = Plan(), limit: int | None = None,
                estimator: Estimator | None = None) -> int:
    """Longest sequence that fits on ``gpu`` under ``plan`` (0 when even 1 token does not), capped at
    ``limit`` (default: the model's context length, else 2^20).

    Memory is affine in the sequence with flash/SDPA attention and quadratic with eager attention, so a
    quadratic through three estimates gives the answer in closed form (exact in both cases); it is
    verified, and bisection takes over otherwise.
    """
    estimator = estimator or _default_estimator()
    layout = model_layout(arch, setup)
    limit = limit or getattr(arch.dims, "max_position", None) or (1 << 20)

    def figure(s: int) -> int:
        return _figure(estimator(arch, dataclasses.replace(setup, seq_len=s)), arch, setup, plan, layout)

    xs = (1024, 2048, 4096)
    guess = _solve_guess(xs, tuple(figure(x) for x in xs), gpu.usable_bytes)
    return max(0, largest_fitting(lambda s: figure(s) <= gpu.usable_bytes, 1, limit, guess))


# --------------------------------------------------------------------------------------------------
# advice
# --------------------------------------------------------------------------------------------------
#: The knobs advice turns, least compromise first (each a data row: field, value, what it gives up).
METHODS: tuple[str, ...] = ("full", "lora", "qlora")
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw-8bit")
CHECKPOINTING: tuple[bool, ...] = (False, True)
#: Flags of ``hubvram show`` for each Setup field, in command-line order.
SETUP_FLAGS: tuple[tuple[str, str], ...] = (
    ("method", "--method"), ("precision", "--precision"), ("optimizer", "--optimizer"),
    ("batch_size", "--batch-size"), ("seq_len", "--seq-len"), ("grad_checkpointing", "--grad-checkpointing"),
    ("lora_rank", "--lora-rank"), ("attention", "--attention"),
)


@dataclass(frozen=True)
class Advice:
    rank: int
    setup: Any                    # with its largest micro-batch
    plan: Plan
    per_gpu: PerGPU               # at that batch
    compromises: tuple[str, ...]
    command: str

    def to_dict(self) -> dict[str, Any]:
        s, p = self.setup, self.plan
        method = getattr(s, "method", None)
        return {
            "rank": self.rank, "method": method, "optimizer": getattr(s, "optimizer", None),
            "precision": getattr(s, "precision", None), "grad_checkpointing": getattr(s, "grad_checkpointing", None),
            "batch_size": getattr(s, "batch_size", None), "seq_len": getattr(s, "seq_len", None),
            "lora_rank": getattr(s, "lora_rank", None) if method != "full" else None,
            "gpus": p.gpus, "strategy": p.strategy, "offload": p.offload,
            "per_gpu_bytes": getattr(self.per_gpu, FIT_FIGURE),
            "host_bytes_per_node": self.per_gpu.host_bytes_per_node,
            "compromises": list(self.compromises), "command": self.command,
        }


def _with(setup: Any, **changes: Any) -> Any:
    """``setup`` with ``changes``; a Setup re-resolves a precision left to "auto" for a new method."""
    return setup.replace(**changes) if hasattr(setup, "replace") else dataclasses.replace(setup, **changes)


def command_line(model: str, setup: Any, gpu: GPU, plan: Plan | None, defaults: Any = None) -> str:
    """A runnable ``hubvram`` command that reproduces one advice row (flags only where ``setup`` differs
    from ``defaults`` for the same method)."""
    if defaults is not None and hasattr(setup, "method"):
        defaults = _with(defaults, method=setup.method)
    parts = ["hubvram", model]
    for name, flag in SETUP_FLAGS:
        value = getattr(setup, name, None)
        if value is None or (defaults is not None and getattr(defaults, name, None) == value and name != "method"):
            continue
        if name == "lora_rank" and getattr(setup, "method", "full") == "full":
            continue
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts += [flag, str(value)]
    if gpu.vendor == "custom":
        parts += ["--gpu-memory", f"{gpu.memory_bytes}B"]
    else:
        parts += ["--gpu", gpu.id]
    if plan is not None and plan.strategy != "single":
        parts += ["--strategy", plan.strategy, "--gpus", str(plan.gpus)]
        if plan.nodes > 1:
            parts += ["--nodes", str(plan.nodes)]
        if plan.offload:
            parts += ["--offload", plan.offload]
    return " ".join(parts)


def _compromises(setup: Any, base: Any, plan: Plan, pg: PerGPU) -> tuple[str, ...]:
    out = []
    m = getattr(setup, "method", "full")
    if m == "lora":
        out.append(f"LoRA r={getattr(setup, 'lora_rank', '?')} instead of full fine-tuning")
    elif m == "qlora":
        out.append(f"QLoRA (4-bit base) r={getattr(setup, 'lora_rank', '?')} instead of full fine-tuning")
    if getattr(setup, "optimizer", None) != getattr(base, "optimizer", None):
        out.append(f"{setup.optimizer} optimizer")
    if getattr(setup, "grad_checkpointing", False):
        out.append("gradient checkpointing (~30% more compute)")
    if str(getattr(setup, "precision", "")) == "fp16":
        out.append("fp16 with loss scaling (no bf16 on this GPU)")
    if plan.strategy != "single":
        out.append(f"{plan.gpus} GPUs under {plan.strategy}")
    if plan.offload:
        out.append(f"CPU offload of {plan.offload} (slow; {pg.host_bytes_per_node / 2**30:.0f} GiB host RAM per node)")
    return tuple(out)


def advise(arch: Any, gpu: GPU, n_gpus: int | None = None, *, base: Any = None, estimator: Estimator | None = None,
           max_gpus: int = MAX_GPUS, top: int = 5, max_micro_batch: int = 64,
           host_ram: int | None = HOST_RAM_PER_NODE) -> list[Advice]:
    """The least-compromise setups that fit ``gpu`` (× ``n_gpus``), ranked, each with a command line.

    Candidates are method × optimizer × checkpointing (:data:`METHODS`, :data:`OPTIMIZERS`,
    :data:`CHECKPOINTING`) over ``base`` (a Setup; the memory model's default when None), adapted to the
    GPU (fp16 where it has no bf16). The GPU budget is ``n_gpus``; without one, it is 1, or the fewest GPUs
    at which any candidate fits. Ranking, lexicographic: offload last; then method (full < LoRA < QLoRA);
    optimizer (32-bit before 8-bit); no checkpointing before checkpointing; fewer GPUs; larger micro-batch.
    Each candidate runs at its largest micro-batch (up to ``max_micro_batch``).
    """
    estimator = estimator or _default_estimator()
    if base is None:
        from .memory import Setup

        base = Setup()
    defaults = type(base)()  # the command line states every knob that differs from the defaults
    base = adapt_setup(base, gpu)
    budget = n_gpus or max_gpus
    ladder = LADDER if budget > 1 else ()
    candidates = []
    for mi, method in enumerate(METHODS):
        for oi, opt in enumerate(OPTIMIZERS):
            for ci, ckpt in enumerate(CHECKPOINTING):
                s = _with(base, method=method, optimizer=opt, grad_checkpointing=ckpt, batch_size=1)
                v = fit_plan(estimator(arch, s), model_layout(arch, s), gpu, ladder=ladder, max_gpus=budget,
                             host_ram=host_ram)
                if v.min_gpus is not None:
                    candidates.append(((mi, oi, ci), s, v))
    if not candidates:
        return []
    if n_gpus is None:
        fewest = min(v.min_gpus for _, _, v in candidates)
        candidates = [c for c in candidates if c[2].min_gpus == fewest]
    scored = []
    for (mi, oi, ci), s, v in candidates:
        plan = v.plan if v.plan is not None else Plan()
        b = max_batch(arch, s, gpu, plan=plan, limit=max_micro_batch, estimator=estimator)
        if b < 1:
            continue
        s = dataclasses.replace(s, batch_size=b)
        scored.append(((plan.offload is not None, mi, oi, ci, plan.gpus, -b), s, plan))
    scored.sort(key=lambda t: t[0])
    out = []
    for i, (_, s, plan) in enumerate(scored[:top]):
        pg = per_gpu(estimator(arch, s), plan, model_layout(arch, s))
        out.append(Advice(i + 1, s, plan, pg, _compromises(s, base, plan, pg),
                          command_line(arch.model_id, s, gpu, plan, defaults)))
    return out
