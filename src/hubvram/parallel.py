"""Per-GPU memory under data parallelism: DDP, ZeRO-1/2/3, FSDP (full and hybrid shard), CPU offload. Pure.

Input: the per-replica :class:`~hubvram.memory.Estimate` (what one process would hold training alone) and a
:class:`Plan` (strategy, GPU count, nodes, offload). Output: :class:`PerGPU`, the same step as one of the N
processes sees it: every component divided the way the strategy divides it, plus the buffers the
strategy adds (ZeRO-3 gather buffer, FSDP unsharded units, DDP gradient buckets), the host RAM an offload
needs, and the peak / reserved / device figures. :func:`per_gpu` answers for one plan; a :class:`Replica`
answers for the many plans a fit search tries on one estimate, doing the plan-independent work once.

The rules, each a small function below with its source:

* model states shard by ZeRO stage (Rajbhandari et al. 2020, "ZeRO", arXiv:1910.02054, §5.1-5.3 and
  Fig. 1): stage 1 (Pos) shards optimizer states (with the fp32 master copy, part of K in the paper),
  stage 2 (Pos+g) also gradients, stage 3 (Pos+g+p) also parameters; FSDP FULL_SHARD is stage 3 and
  HYBRID_SHARD is stage 3 within a node, replicated across nodes (PyTorch ``ShardingStrategy`` docs);
* frozen weights (the LoRA/QLoRA base) are parameters: replicated below stage 3, sharded at stage 3
  (DeepSpeed ZeRO-3 partitions every parameter; FSDP QLoRA shards the quantized base, Answer.AI
  fsdp_qlora / ``bnb_4bit_quant_storage``);
* activations, logits, transients and runtime overhead are never divided by data parallelism
  (Korthikanti et al. 2022 §4: only tensor/sequence parallelism divides activations).

Categories come from :func:`category` (the memory model's ``Component.category`` when it has one, else
the component's name).
"""

from __future__ import annotations

import functools
import math
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from .errors import InputError
from .memory import STATIC_COMPONENTS, Estimate
from .memory.component import Component
from .memory.overhead import device_bytes, reserved_bytes

__all__ = [
    "STRATEGIES", "OFFLOADS", "CATEGORIES", "MODEL_STATES", "Plan", "PlanError", "ModelLayout", "Part", "PerGPU",
    "Figures", "Replica", "category", "model_layout", "per_gpu", "shard_divisor", "offloaded",
    "zero_paper_model_states", "deepspeed_zero2_model_states", "deepspeed_zero3_model_states",
    "zero3_gather_bytes", "fsdp_unsharded_bytes", "ddp_bucket_bytes", "sharded", "host_ram_bytes",
    "deepspeed_offload_host_bytes", "deepspeed_mixed_precision", "Term",
]

STRATEGIES: tuple[str, ...] = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp", "fsdp-hybrid")
OFFLOADS: tuple[str, ...] = ("optimizer", "params")

#: ZeRO stage of each strategy: which model states it shards.
STAGE: Mapping[str, int] = {"single": 0, "ddp": 0, "zero1": 1, "zero2": 2, "zero3": 3, "fsdp": 3,
                            "fsdp-hybrid": 3}

CATEGORIES: tuple[str, ...] = (
    "frozen_weights", "trainable_weights", "master_weights", "gradients", "fp32_gradients", "optimizer_states",
    "optimizer_transients", "activations", "logits", "transients", "overhead", "other",
    "gather_buffers", "communication_buffers",
)

#: The smallest ZeRO stage that shards a category (ZeRO §5: Pos = 1, Pos+g = 2, Pos+g+p = 3).
#: Categories not listed are never divided by data parallelism.
SHARD_STAGE: Mapping[str, int] = {
    "optimizer_states": 1, "master_weights": 1, "optimizer_transients": 1, "fp32_gradients": 1,
    "gradients": 2,
    "trainable_weights": 3, "frozen_weights": 3,
}

#: What ``--offload`` moves to host memory. ``optimizer``: DeepSpeed ``offload_optimizer`` (ZeRO-Offload,
#: Ren et al. 2021 §4): optimizer states and fp32 master weights, and at stage >= 2 the reduced gradient
#: partition, which DeepSpeed copies straight into the CPU buffer. ``params``: DeepSpeed ``offload_param``
#: (ZeRO-Infinity) with the optimizer offloaded too, or FSDP ``CPUOffload(offload_params=True)``, which
#: keeps parameters and gradients on the CPU and steps the optimizer there: every model state.
OFFLOAD_MOVES: Mapping[str, frozenset[str]] = {
    "optimizer": frozenset({"optimizer_states", "master_weights", "optimizer_transients", "fp32_gradients"}),
    "params": frozenset({"optimizer_states", "master_weights", "optimizer_transients", "gradients",
                         "fp32_gradients", "trainable_weights", "frozen_weights"}),
}

#: DeepSpeed's ``additional_buffer_factor`` for host memory (pinned buffers, fragmentation), used by both
#: ``estimate_zero2_model_states_mem_needs`` and ``estimate_zero3_model_states_mem_needs``.
HOST_BUFFER_FACTOR = 1.5

#: 4-bit NormalFloat storage, bytes per parameter (QLoRA paper §3: 4 bits + 32-bit absmax per 64 = 4.5
#: bits; with double quantization 4 + 8/64 + 32/(64*256) = 4.127 bits).
NF4_BYTES = 4.5 / 8
NF4_DQ_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8


class PlanError(InputError):
    """A strategy / GPU count / offload combination that no framework runs."""


# --------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How the step is spread: ``strategy`` over ``gpus`` devices on ``nodes`` nodes, with ``offload``."""

    strategy: str = "single"
    gpus: int = 1
    nodes: int = 1
    offload: str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise PlanError(f"unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})")
        if not isinstance(self.gpus, int) or self.gpus < 1:
            raise PlanError(f"--gpus must be a positive integer, got {self.gpus!r}")
        if not isinstance(self.nodes, int) or self.nodes < 1 or self.gpus % self.nodes:
            raise PlanError(f"--gpus {self.gpus} cannot be split evenly over --nodes {self.nodes}")
        if self.strategy == "single" and self.gpus != 1:
            raise PlanError("'single' is one GPU; choose a strategy (ddp, zero2, zero3, fsdp ...) for --gpus > 1")
        if self.offload is not None:
            if self.offload not in OFFLOADS:
                raise PlanError(f"unknown offload {self.offload!r} (choose from {', '.join(OFFLOADS)})")
            if self.strategy in ("single", "ddp"):
                raise PlanError(f"--offload needs a ZeRO or FSDP strategy, not {self.strategy!r} "
                                "(ZeRO-Offload on one GPU is --strategy zero2 --gpus 1)")
            if self.offload == "params" and STAGE[self.strategy] < 3:
                raise PlanError("--offload params needs parameter sharding: --strategy zero3, fsdp or fsdp-hybrid")
            if self.offload == "optimizer" and self.strategy.startswith("fsdp"):
                raise PlanError("FSDP offloads parameters, gradients and optimizer together: use --offload params")

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def stage(self) -> int:
        return STAGE[self.strategy]

    @property
    def shard_group(self) -> int:
        """How many ranks share one copy of the sharded states (HYBRID_SHARD: the GPUs of one node)."""
        if self.stage == 0:
            return 1
        return self.gpus_per_node if self.strategy == "fsdp-hybrid" else self.gpus

    @property
    def label(self) -> str:
        text = "1 GPU" if self.strategy == "single" else f"{self.gpus} × {self.strategy}"
        if self.strategy == "fsdp-hybrid" or (self.nodes > 1):
            text += f" ({self.nodes} × {self.gpus_per_node})"
        if self.offload:
            text += f" + offload {self.offload}"
        return text


# --------------------------------------------------------------------------------------------------
# the formulas (one function each)
# --------------------------------------------------------------------------------------------------
def zero_paper_model_states(psi: int, n: int, stage: int, k: int = 12) -> float:
    """Model-state bytes per GPU for mixed-precision Adam, ZeRO paper §5 / Fig. 1 (Rajbhandari et al. 2020).

    16-bit parameters (2Ψ) and gradients (2Ψ), K·Ψ optimizer bytes (K = 12: fp32 master, momentum,
    variance). Stage 0 (DDP) ``(2+2+K)Ψ``; 1 (Pos) ``4Ψ + KΨ/N``; 2 (Pos+g) ``2Ψ + (2+K)Ψ/N``;
    3 (Pos+g+p) ``(2+2+K)Ψ/N``. Activations and buffers excluded.
    """
    if stage == 0:
        return (4 + k) * psi
    if stage == 1:
        return 4 * psi + k * psi / n
    if stage == 2:
        return 2 * psi + (2 + k) * psi / n
    if stage == 3:
        return (4 + k) * psi / n
    raise ValueError(f"ZeRO stage must be 0-3, got {stage}")


def deepspeed_zero2_model_states(total_params: int, gpus_per_node: int = 1, nodes: int = 1,
                                 offload_optimizer: bool = False,
                                 buffer_factor: float = HOST_BUFFER_FACTOR) -> tuple[int, int]:
    """(GPU bytes, CPU bytes per node) of DeepSpeed ``estimate_zero2_model_states_mem_needs``.

    deepspeed/runtime/zero/stage_1_and_2.py (after PR #5099, which replaced ``4P + 16P/N``):
    offload: GPU ``2P``, CPU ``P·max(4N, 16)·f``; no offload: GPU ``2P + 18P/N`` (18 = 2 fp16 grads +
    4 fp32 grads + 4 fp32 params + 8 Adam states), CPU ``4P·gpus_per_node·f`` (loading the model).
    """
    n = gpus_per_node * nodes
    p = total_params
    if offload_optimizer:
        return 2 * p, int(p * max(4 * n, 16) * buffer_factor)
    return 2 * p + int(18 * p / n), int(p * 4 * gpus_per_node * buffer_factor)


def deepspeed_zero3_model_states(total_params: int, largest_layer_params: int, gpus_per_node: int = 1,
                                 nodes: int = 1, offload_optimizer: bool = False, offload_params: bool = False,
                                 zero_init: bool = True,
                                 buffer_factor: float = HOST_BUFFER_FACTOR) -> tuple[int, int]:
    """(GPU bytes, CPU bytes per node) of DeepSpeed ``estimate_zero3_model_states_mem_needs``.

    deepspeed/runtime/zero/stage3.py; ``ℓ`` = params of the largest single module, and
    ``largest_layer_memory = 4ℓ`` (the gather buffer). With ``zero_init`` the model is never whole on the
    CPU. Offload params (+optimizer): GPU ``4ℓ``, CPU ``18P/nodes·f``; offload optimizer: GPU
    ``4ℓ + 2P/N``, CPU ``16P/nodes·f``; neither: GPU ``4ℓ + 18P/N``, CPU ``4ℓ·gpus_per_node·f``.
    Without zero_init the CPU terms become ``P·max(4·gpus_per_node, X/nodes)·f``.
    """
    n = gpus_per_node * nodes
    p, big = total_params, 4 * largest_layer_params
    if offload_params:
        gpu, per_node = big, 18 / nodes
    elif offload_optimizer:
        gpu, per_node = big + int(2 * p / n), 16 / nodes
    else:
        gpu = big + int(18 * p / n)
        cpu = big * gpus_per_node if zero_init else p * 4 * gpus_per_node
        return gpu, int(cpu * buffer_factor)
    cpu = p * per_node if zero_init else p * max(4 * gpus_per_node, per_node)
    return gpu, int(cpu * buffer_factor)


def zero3_gather_bytes(largest_module_bytes: int) -> int:
    """ZeRO-3 gather buffer: twice the gathered bytes of the largest module (``nn.Module`` with its own
    parameters: an embedding, an lm_head, fused experts).

    DeepSpeed's estimator charges ``4ℓ`` bytes (stage3.py ``largest_layer_memory``), i.e. two 16-bit
    copies of the largest module: its gathered parameters and their gradient before the reduce-scatter.
    Here the gathered bytes follow the storage (NF4 for a QLoRA base), so 16-bit weights give exactly 4ℓ.
    """
    return 2 * largest_module_bytes


def fsdp_unsharded_bytes(root_bytes: int, layer_bytes: int, root_grad_bytes: int = 0,
                         layer_grad_bytes: int = 0) -> int:
    """Unsharded FSDP FULL_SHARD memory: the root unit plus two decoder layers, with their gradients.

    * two layers' parameters live: the rate limiter (``limit_all_gathers=True``, default since PyTorch
      2.1, PR #104900) lets one all-gather run ahead of the layer computing; FSDP2 "allows two all-gather
      output tensors to be alive at once" (PR #128884); PyTorch docs, FSDP Notes, "FSDP Prefetch Nuances";
    * the root unit (embedding, final norm, lm_head, which ``transformer_auto_wrap_policy`` leaves to the
      root) is not resharded after forward ("the root ... would typically be immediately all-gathered
      for backward": FSDP2 ``fully_shard(reshard_after_forward)`` docs; the same special case in FSDP1
      ``_post_forward_reshard``), so it stays whole through backward, with its gradient until the
      root's reduce-scatter at the end of backward;
    * one layer's unsharded gradient exists until its reduce-scatter.
    """
    return root_bytes + 2 * layer_bytes + root_grad_bytes + layer_grad_bytes


def ddp_bucket_bytes(gradient_bytes: int) -> int:
    """DDP all-reduce buckets: one more copy of every gradient.

    PyTorch ``DistributedDataParallel(gradient_as_bucket_view=False)`` (the default, also accelerate's)
    copies gradients into flat buckets; the docs say ``gradient_as_bucket_view=True`` saves "memory
    equal to the total gradients size".
    """
    return gradient_bytes


def sharded(nbytes: int, n: int) -> int:
    """One rank's shard of ``nbytes`` split over ``n`` ranks (rounded up: the last shard is padded)."""
    return -(-nbytes // n)


def deepspeed_offload_host_bytes(trainable_params: int, total_params: int, n: int, offload: str) -> int:
    """Host bytes one rank's offloaded states take under DeepSpeed, whatever the GPU-side recipe.

    DeepSpeed's CPU optimizer keeps fp32 master weights, fp32 Adam states and an fp32 gradient partition:
    16 B per trainable parameter, sharded over the ``n`` ranks (``estimate_zero{2,3}``: "16" in the
    offload-optimizer CPU term); offloading parameters adds the 16-bit parameter partition, 2 B per
    parameter (the "18" of ``offload_param``). × GPUs per node × f gives the estimator's CPU figure.
    """
    b = 16 * trainable_params
    if offload == "params":
        b += 2 * total_params
    return -(-b // n)


def host_ram_bytes(host_bytes_per_gpu: int, gpus_per_node: int, buffer_factor: float = HOST_BUFFER_FACTOR) -> int:
    """Host RAM one node needs for what its GPUs offload: ``Σ offloaded × gpus_per_node × f``.

    The same structure as DeepSpeed's estimator CPU terms (``18P/nodes·f`` = 18P/N per GPU × GPUs per
    node × f), with f = 1.5 (``additional_buffer_factor``) for pinned staging buffers.
    """
    return int(host_bytes_per_gpu * gpus_per_node * buffer_factor)


# --------------------------------------------------------------------------------------------------
# model layout: the sizes the gather terms need
# --------------------------------------------------------------------------------------------------
_LAYER_RE = re.compile(r"^(.*?(?:^|\.)(?:layers|h|blocks|layer)\.\d+)\.")
_EXPERTS_RE = re.compile(r"^(.*?\.experts)\.")


@dataclass(frozen=True)
class ModelLayout:
    """Sizes of the model's wrap units, in the bytes they take when gathered on a GPU."""

    total_params: int
    largest_module: str
    largest_module_params: int       # DeepSpeed's ℓ
    largest_module_bytes: int
    largest_layer: str
    largest_layer_params: int
    largest_layer_bytes: int
    root_params: int                 # parameters outside the decoder layers (embedding, final norm, head)
    root_bytes: int
    trains_base: bool                # full fine-tuning: every gathered unit also has a gradient
    grad_bytes_per_param: int = 2

    @property
    def root_grad_bytes(self) -> int:
        return self.root_params * self.grad_bytes_per_param if self.trains_base else 0

    @property
    def layer_grad_bytes(self) -> int:
        return self.largest_layer_params * self.grad_bytes_per_param if self.trains_base else 0


def _setup_get(setup: Any, name: str, default: Any) -> Any:
    return getattr(setup, name, default) if setup is not None else default


def gathered_bytes(params: int, quantized: int, setup: Any) -> int:
    """Bytes of a unit when gathered on a GPU: its QLoRA-quantized Linear weights (``quantized`` of its
    ``params``) in NF4, the rest in the compute dtype (2 B for bf16/fp16 mixed precision, i.e. FSDP
    ``MixedPrecision(param_dtype)`` or DeepSpeed bf16/fp16; 4 B in fp32)."""
    cb = 4 if str(_setup_get(setup, "precision", "bf16")).lower() in ("fp32", "float32") else 2
    qb = cb
    if _setup_get(setup, "method", "full") == "qlora":
        qb = NF4_DQ_BYTES if _setup_get(setup, "double_quant", True) else NF4_BYTES
    return math.ceil((params - quantized) * cb + quantized * qb)


@dataclass(frozen=True)
class _Units:
    """The wrap units of one Architecture a layout needs, each as (name, params, QLoRA-quantizable params):
    the largest module and the largest decoder layer (the first in tensor order on a tie), and the root."""

    total: int
    largest_module: tuple[str, int, int]
    largest_layer: tuple[str, int, int]
    root: tuple[int, int]


_UNITS: "weakref.WeakKeyDictionary[Any, _Units]" = weakref.WeakKeyDictionary()
#: Tensor groups bitsandbytes does not quantize under QLoRA (the output layer, vision towers).
_NOT_QUANTIZED = ("lm_head", "vision")


def _module_of(t: Any) -> str:
    """The module a tensor belongs to: its name's prefix, or the one ``experts`` module of its layer
    (transformers 5.x fuses routed experts into 3-D parameters of one module; also ``experts.*.`` entries)."""
    m = _EXPERTS_RE.match(t.name) if t.is_expert else None
    return m.group(1) if m else t.name.rsplit(".", 1)[0]


def _largest(params: Mapping[str, int], quantized: Mapping[str, int]) -> tuple[str, int, int]:
    name = max(params, key=params.__getitem__, default="")
    return name, params.get(name, 0), quantized.get(name, 0)


def _units(arch: Any) -> _Units:
    """One pass over the tensors (cached per Architecture)."""
    try:
        return _UNITS[arch]
    except (KeyError, TypeError):
        pass
    module_params: dict[str, int] = {}
    module_quantized: dict[str, int] = {}
    layer_params: dict[str, int] = {}
    layer_quantized: dict[str, int] = {}
    root_params = root_quantized = total = 0
    for t in arch.tensors:
        p = t.params
        if not p:
            continue
        total += p
        q = p if (t.is_linear and t.group not in _NOT_QUANTIZED) else 0
        mod = _module_of(t)
        module_params[mod] = module_params.get(mod, 0) + p
        module_quantized[mod] = module_quantized.get(mod, 0) + q
        lm = _LAYER_RE.match(t.name)
        if lm:
            layer = lm.group(1)
            layer_params[layer] = layer_params.get(layer, 0) + p
            layer_quantized[layer] = layer_quantized.get(layer, 0) + q
        else:
            root_params += p
            root_quantized += q
    units = _Units(total, _largest(module_params, module_quantized), _largest(layer_params, layer_quantized),
                   (root_params, root_quantized))
    try:
        _UNITS[arch] = units
    except TypeError:  # not weak-referenceable: no cache
        pass
    return units


def model_layout(arch: Any, setup: Any = None) -> ModelLayout:
    """Wrap units of ``arch``: largest module (DeepSpeed ℓ), largest decoder layer, root unit. Pure.

    Routed experts count as one module per layer (transformers 5.x fuses them into 3-D parameters of one
    ``experts`` module); a layer is a ``layers.N`` / ``h.N`` / ``blocks.N`` prefix, everything else is root.
    """
    u = _units(arch)
    mod_name, mod_params, mod_quantized = u.largest_module
    layer_name, layer_params, layer_quantized = u.largest_layer
    precision = str(_setup_get(setup, "precision", "bf16")).lower()
    return ModelLayout(
        total_params=u.total,
        largest_module=mod_name, largest_module_params=mod_params,
        largest_module_bytes=gathered_bytes(mod_params, mod_quantized, setup),
        largest_layer=layer_name, largest_layer_params=layer_params,
        largest_layer_bytes=gathered_bytes(layer_params, layer_quantized, setup),
        root_params=u.root[0], root_bytes=gathered_bytes(*u.root, setup),
        trains_base=_setup_get(setup, "method", "full") == "full",
        grad_bytes_per_param=4 if precision in ("fp32", "float32") else 2,
    )


# --------------------------------------------------------------------------------------------------
# categories of the memory model's components
# --------------------------------------------------------------------------------------------------
#: The categories of hubvram.memory's component names (the part before the first dot, or the whole name).
#: "weights" is trainable under full fine-tuning and frozen under LoRA/QLoRA. The autocast caches (half
#: copies of weights) and the embedding backward are kept whole: conservative under sharding.
MEMORY_CATEGORIES: Mapping[str, str] = {
    "weights": "weights", "weights.nf4": "frozen_weights", "weights.nf4_stats": "frozen_weights",
    "lora_adapters": "trainable_weights", "buffers": "other", "inputs": "activations",
    "positions_labels": "activations", "optimizer_states": "optimizer_states",
    "optimizer_step": "optimizer_transients", "gradients": "gradients", "activations": "activations",
    "logits": "logits", "autocast_cache": "transients", "embedding_backward": "transients",
    "kernel_scratch": "overhead", "grad_hidden": "activations", "backward": "activations",
    "inputs_embeds_grad": "activations",
}

#: Ordered (regex on the lower-case component name, category); first match wins. Used only when a
#: component carries no ``category`` of its own and its name is not in :data:`MEMORY_CATEGORIES`.
CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    (r"cuda|context|cublas|workspace|overhead|allocator|fragment|runtime|nccl", "overhead"),
    (r"activation|checkpoint|saved|recompute|lora.?dropout", "activations"),
    (r"logit|loss|cross.?entropy|softmax.?out", "logits"),
    (r"master", "master_weights"),
    (r"(optim|adam|sgd|lion|adafactor).*(transient|temp|foreach|step|update)|"
     r"(transient|temp|foreach).*(optim|adam)", "optimizer_transients"),
    (r"optim|adam|momentum|exp_avg|variance|adafactor|sgd|lion|state", "optimizer_states"),
    (r"grad", "gradients"),
    (r"lora|adapter|trainable", "trainable_weights"),
    (r"frozen|base|quantiz|nf4|absmax|int8|int4", "frozen_weights"),
    (r"weight|param|embedding|lm.?head|model", "weights"),
    (r"transient|temp|cast|cache|buffer|workspace", "transients"),
)
_CATEGORY_RX = tuple((re.compile(p), c) for p, c in CATEGORY_RULES)


def category(component: Any, method: str = "full", known_only: bool = False) -> str:
    """The category of a memory component: its own ``category`` attribute, else from its name.

    "Weights" with no qualifier are trainable under full fine-tuning and frozen under LoRA/QLoRA. With
    ``known_only`` (components of hubvram.memory) a name missing from :data:`MEMORY_CATEGORIES` is a
    transient, kept whole on every GPU: a new kind of term is never sharded by a guess.
    """
    own = getattr(component, "category", None)
    name = str(component.name)
    if own:
        cat = str(own)
    elif name in MEMORY_CATEGORIES or name.split(".", 1)[0] in MEMORY_CATEGORIES:
        cat = MEMORY_CATEGORIES.get(name) or MEMORY_CATEGORIES[name.split(".", 1)[0]]
    elif known_only:
        cat = "transients"
    else:
        name = str(component.name).lower()
        cat = next((c for rx, c in _CATEGORY_RX if rx.search(name)), "transients")
    if cat == "weights":
        cat = "trainable_weights" if method == "full" else "frozen_weights"
    return cat


# --------------------------------------------------------------------------------------------------
# DeepSpeed's own mixed precision (ZeRO-1/2/3)
# --------------------------------------------------------------------------------------------------
#: A component parallel.py adds or rewrites: the memory model's own Component, with a category.
Term = Component


_DS_SOURCE = ("DeepSpeed runtime/zero/stage_1_and_2.py / stage3.py: 16-bit parameters and gradients, fp32 "
              "partitions of the master weights, optimizer states and gradients (the estimator's '18 = 2 grads16 "
              "+ 4 grads32 + 4 params32 + 8 optim states32'); ZeRO paper §3.1 (K = 12)")
_ADAM_FAMILY = ("adamw", "adamw-foreach", "paged-adamw")


def _deepspeed_rewrites(setup: Any) -> bool:
    """Does DeepSpeed's own mixed precision change this setup's components (a 16-bit full fine-tune)?"""
    return _setup_get(setup, "method", "full") == "full" and _setup_get(setup, "precision", "bf16") != "fp32"


def deepspeed_mixed_precision(est: Any) -> tuple[Any, ...]:
    """The components as DeepSpeed ZeRO runs a 16-bit full fine-tune, whatever the single-GPU recipe.

    DeepSpeed with ``bf16`` / ``fp16`` enabled casts the module to 16 bit and wraps the optimizer: every
    rank keeps fp32 partitions of the master weights (4 B/param), of the gradients (4 B/param) and runs
    the optimizer on them (AdamW: fp32 m and v, 8 B/param, fused: no foreach copy); there is no
    torch.autocast (no autocast caches). So a pure-bf16 replica (2 + 2 + 4 B/param) becomes 2 + 2 + 4 + 4
    + 8 = 20 B/param, and an amp replica (fp32 weights) gets 16-bit weights and gradients. 8-bit and other
    client optimizers keep their own states on the fp32 partition. Only full fine-tuning in 16 bit changes:
    LoRA/QLoRA adapters are tiny and fp32 runs have no master copy.
    """
    setup = getattr(est, "setup", None)
    if not _deepspeed_rewrites(setup):
        return tuple(est.components)
    t = int(getattr(est, "trainable_params", 0) or 0)
    amp = str(_setup_get(setup, "precision", "")).startswith("amp")
    adam = _setup_get(setup, "optimizer", "adamw") in _ADAM_FAMILY
    out: list[Any] = []
    grad_phases: tuple[str, ...] = ()
    for c in est.components:
        name = c.name
        if name.startswith("autocast_cache") or (adam and name == "optimizer_step"):
            continue
        if adam and name.startswith("optimizer_states"):
            if name == "optimizer_states":
                out.append(Term("optimizer_states", 8 * t, tuple(c.phases), "trainable × 8 B (fp32 m, v)",
                                f"{t:,} × 8 = {8 * t:,} B", _DS_SOURCE + "; FusedAdam on the fp32 partition",
                                category="optimizer_states"))
            continue  # paged states merge into DeepSpeed's fp32 partition
        if amp and name == "weights":
            out.append(Term("weights", 2 * t, tuple(c.phases), "trainable × 2 B (16-bit module)",
                            f"{t:,} × 2 = {2 * t:,} B", _DS_SOURCE, category="trainable_weights"))
            continue
        if amp and name.split(".", 1)[0] == "gradients":
            out.append(Term(name, c.bytes // 2, tuple(c.phases), f"({c.formula}) / 2 (16-bit gradients)",
                            f"{c.bytes // 2:,} B", _DS_SOURCE, category="gradients"))
            if name == "gradients":
                grad_phases = tuple(c.phases)
            continue
        if name == "gradients":
            grad_phases = tuple(c.phases)
        out.append(c)
    out.append(Term("master_weights (DeepSpeed fp32)", 4 * t, tuple(est.phase_bytes), "trainable × 4 B",
                    f"{t:,} × 4 = {4 * t:,} B", _DS_SOURCE, category="master_weights"))
    out.append(Term("gradients.fp32 (DeepSpeed partition)", 4 * t, grad_phases or tuple(est.phase_bytes),
                    "trainable × 4 B", f"{t:,} × 4 = {4 * t:,} B", _DS_SOURCE, category="fp32_gradients"))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# per-GPU result
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One component as one GPU (or its host) holds it."""

    name: str
    category: str
    bytes: int                  # on this GPU (0 when offloaded)
    host_bytes: int             # in host RAM for this GPU (before the buffer factor)
    replica_bytes: int          # what one process training alone holds
    divisor: int                # 1 = replicated
    phases: tuple[str, ...]
    formula: str
    source: str
    evictable: bool = False     # outside PyTorch's allocator (paged optimizer states): device total only

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "category": self.category, "bytes": self.bytes, "host_bytes": self.host_bytes,
                "replica_bytes": self.replica_bytes, "divisor": self.divisor, "phases": list(self.phases),
                "formula": self.formula, "source": self.source, "evictable": self.evictable}


@dataclass(frozen=True)
class PerGPU:
    plan: Plan
    parts: tuple[Part, ...]
    phase_bytes: Mapping[str, int]
    peak_phase: str
    peak_allocated_bytes: int
    reserved_bytes: int
    device_bytes: int
    host_bytes_per_node: int            # host RAM for offloaded states on one node (0 without offload)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "strategy": p.strategy, "gpus": p.gpus, "nodes": p.nodes, "gpus_per_node": p.gpus_per_node,
            "offload": p.offload, "label": p.label,
            "peak_allocated_bytes": self.peak_allocated_bytes, "reserved_bytes": self.reserved_bytes,
            "device_bytes": self.device_bytes, "peak_phase": self.peak_phase,
            "phase_bytes": dict(self.phase_bytes), "host_bytes_per_node": self.host_bytes_per_node,
            "components": [x.to_dict() for x in self.parts], "notes": list(self.notes),
        }


#: The categories a plan can change: divided by a ZeRO stage (:data:`SHARD_STAGE`) or moved to host RAM by an
#: offload (:data:`OFFLOAD_MOVES`). Every other category is held whole on every GPU, whatever the plan.
MODEL_STATES: frozenset[str] = frozenset(SHARD_STAGE).union(*OFFLOAD_MOVES.values())


def shard_divisor(category: str, plan: Plan) -> int:
    """How many ranks share one component of ``category``: the shard group once the plan's ZeRO stage
    shards the category (:data:`SHARD_STAGE`), else 1 (replicated)."""
    return plan.shard_group if plan.stage >= SHARD_STAGE.get(category, 99) else 1


def offloaded(category: str, plan: Plan) -> bool:
    """Does the plan's offload move ``category`` to host RAM (:data:`OFFLOAD_MOVES`)? Optimizer offload at
    stage >= 2 moves the reduced gradient partition too (DeepSpeed copies it straight into the CPU buffer)."""
    if plan.offload is None:
        return False
    return category in OFFLOAD_MOVES[plan.offload] or (
        category == "gradients" and plan.offload == "optimizer" and plan.stage >= 2)


def _phases(component: Any, all_phases: tuple[str, ...]) -> tuple[str, ...]:
    """The phases a component is alive in; ``()`` is a term shown for information only (alive in none)."""
    ph = getattr(component, "phases", None)
    return all_phases if ph is None else tuple(ph)


class _Term(NamedTuple):
    """One component of the replica as the sharding rules read it (worked out once per estimate)."""

    component: Any
    category: str
    replica_bytes: int
    phases: tuple[str, ...]         # as its Part shows them
    summed_in: frozenset[str]       # the estimate's phases it counts in
    evictable: bool
    static: bool                    # one of the memory model's STATIC_COMPONENTS (the fragmentation base)


def _term(c: Any, method: str, known_only: bool, all_phases: tuple[str, ...]) -> _Term:
    phases = _phases(c, all_phases)
    return _Term(component=c, category=category(c, method, known_only), replica_bytes=int(c.bytes),
                 phases=phases, summed_in=frozenset(phases).intersection(all_phases),
                 evictable=bool(getattr(c, "evictable", False)), static=str(c.name) in STATIC_COMPONENTS)


def _part(t: _Term, divisor: int, to_host: bool) -> Part:
    """The term as one GPU holds it: its shard when ``divisor`` > 1, in host RAM when ``to_host``."""
    nbytes = sharded(t.replica_bytes, divisor)
    formula = str(getattr(t.component, "formula", ""))
    if divisor > 1:
        formula = f"({formula}) / {divisor}" if formula else f"/ {divisor}"
    return Part(name=str(t.component.name), category=t.category, bytes=0 if to_host else nbytes,
                host_bytes=nbytes if to_host else 0, replica_bytes=t.replica_bytes, divisor=divisor,
                phases=t.phases, formula=formula + (" [offloaded to host]" if to_host else ""),
                source=str(getattr(t.component, "source", "")), evictable=t.evictable)


def _live_in(terms: tuple[_Term, ...], cat: str, all_phases: tuple[str, ...]) -> tuple[str, ...]:
    """The phases in which some (non-empty) component of ``cat`` is alive; every phase when none is."""
    ph = [p for t in terms if t.category == cat and t.replica_bytes for p in t.phases]
    return tuple(dict.fromkeys(ph)) or all_phases


class _Components:
    """The components one kind of plan divides, categorized: DeepSpeed's own mixed precision under ZeRO
    (:func:`deepspeed_mixed_precision`), the replica's components otherwise. What no plan changes (every
    category but :data:`MODEL_STATES`) is summed per phase here, once, and its Parts are made once."""

    def __init__(self, comps: tuple[Any, ...], method: str, known_only: bool, all_phases: tuple[str, ...]) -> None:
        self.terms = tuple(_term(c, method, known_only, all_phases) for c in comps)
        fixed = [t for t in self.terms if t.category not in MODEL_STATES]
        self.states = tuple(t for t in self.terms if t.category in MODEL_STATES)
        self.fixed_phase_bytes = dict.fromkeys(all_phases, 0)
        for t in fixed:
            if not t.evictable:
                for ph in t.summed_in:
                    self.fixed_phase_bytes[ph] += t.replica_bytes
        self.fixed_static = sum(t.replica_bytes for t in fixed if t.static)
        self.fixed_evictable = sum(t.replica_bytes for t in fixed if t.evictable)
        self.fixed_gathered = max((t.replica_bytes for t in fixed if t.category == "gather_buffers"), default=0)
        self.gradients_live = _live_in(self.terms, "gradients", all_phases)
        self.activations_live = _live_in(self.terms, "activations", all_phases)
        self._gather_buffers: dict[str, Part] = {}

    def gather_buffer(self, strategy: str, layout: ModelLayout) -> Part:
        """:func:`_gather_buffer`, made once per strategy (it depends on the layout alone)."""
        part = self._gather_buffers.get(strategy)
        if part is None:
            part = self._gather_buffers[strategy] = _gather_buffer(strategy, layout, self.activations_live)
        return part

    @functools.cached_property
    def fixed_parts(self) -> tuple[Part | None, ...]:
        """Per term, its Part when no plan changes it (None for the model states)."""
        return tuple(None if t.category in MODEL_STATES else _part(t, 1, False) for t in self.terms)


@dataclass(frozen=True)
class Figures:
    """The numbers of a :class:`PerGPU` without its breakdown: what a fit search compares."""

    plan: Plan
    phase_bytes: Mapping[str, int]
    peak_phase: str
    peak_allocated_bytes: int
    reserved_bytes: int
    device_bytes: int
    host_bytes_per_node: int


def _gather_buffer(strategy: str, layout: ModelLayout, live: tuple[str, ...]) -> Part:
    """The unit a ZeRO-3 / FSDP rank gathers, alive in ``live`` (wherever activations are)."""
    if strategy == "zero3":
        return Part(f"ZeRO-3 gather buffer ({layout.largest_module})", "gather_buffers",
                    zero3_gather_bytes(layout.largest_module_bytes), 0, 0, 1, live,
                    f"2 × {layout.largest_module_bytes:,} B (largest module, "
                    f"{layout.largest_module_params:,} params; = DeepSpeed 4ℓ at 16 bit)",
                    "DeepSpeed stage3.py estimate_zero3_model_states_mem_needs (largest_layer_memory)")
    g = fsdp_unsharded_bytes(layout.root_bytes, layout.largest_layer_bytes, layout.root_grad_bytes,
                             layout.layer_grad_bytes)
    return Part("FSDP unsharded units (root + 2 layers)", "gather_buffers", g, 0, 0, 1, live,
                f"root {layout.root_bytes:,} + 2 × layer {layout.largest_layer_bytes:,}"
                + (f" + grads {layout.root_grad_bytes + layout.layer_grad_bytes:,}" if layout.trains_base else "")
                + " B",
                "PyTorch FSDP notes (prefetch, limit_all_gathers); FSDP2 reshard_after_forward for the root")


def _strategy_buffers(plan: Plan, layout: ModelLayout | None, comps: _Components,
                      gradient_bytes: int) -> tuple[list[Part], list[str]]:
    """The buffers the strategy adds, in the phases where they live (gather buffers wherever activations
    are live, DDP buckets wherever gradients are), and the notes on what could not be counted."""
    parts: list[Part] = []
    notes: list[str] = []
    if plan.strategy == "ddp" and plan.gpus > 1:
        parts.append(Part("DDP gradient buckets", "communication_buffers", ddp_bucket_bytes(gradient_bytes), 0, 0,
                          1, comps.gradients_live, "= gradient bytes (gradient_as_bucket_view=False)",
                          "PyTorch DistributedDataParallel docs, gradient_as_bucket_view"))
    if plan.stage == 3 and layout is not None:
        parts.append(comps.gather_buffer(plan.strategy, layout))
    elif plan.stage == 3:
        notes.append("no model layout given: the ZeRO-3/FSDP gather buffer is not counted")
    return parts, notes


class Replica:
    """One per-replica estimate, divided under as many plans as asked: :func:`per_gpu` for each, with the
    work that does not depend on the plan (categories, phases, DeepSpeed's rewrite, the bytes of every
    component no plan changes) done once, and each plan's figures and breakdown computed once.

    :meth:`figures` gives the numbers alone (a fit search compares nothing else); :meth:`per_gpu` the
    :class:`PerGPU` with its parts. ``layout`` and ``method`` are :func:`per_gpu`'s.
    """

    def __init__(self, est: Any, layout: ModelLayout | None = None, *, method: str | None = None) -> None:
        self.est = est
        self.layout = layout
        self.method = method or _setup_get(getattr(est, "setup", None), "method", "full")
        self.known_only = isinstance(est, Estimate)
        #: ZeRO plans run DeepSpeed's own mixed precision (:func:`deepspeed_mixed_precision`)
        self.deepspeed = self.known_only and _deepspeed_rewrites(getattr(est, "setup", None))
        self.all_phases = tuple(est.phase_bytes) if getattr(est, "phase_bytes", None) else ("step",)
        self._components: dict[bool, _Components] = {}
        self._figures: dict[Plan, Figures] = {}
        self._per_gpu: dict[Plan, PerGPU] = {}

    def components(self, plan: Plan) -> _Components:
        """The categorized components ``plan`` divides (DeepSpeed's rewrite for the ZeRO strategies)."""
        deepspeed = self.deepspeed and plan.strategy.startswith("zero")
        comps = self._components.get(deepspeed)
        if comps is None:
            raw = deepspeed_mixed_precision(self.est) if deepspeed else tuple(self.est.components)
            comps = self._components[deepspeed] = _Components(raw, self.method, self.known_only, self.all_phases)
        return comps

    def figures(self, plan: Plan) -> Figures:
        """The per-GPU figures under ``plan`` (computed once per plan)."""
        f = self._figures.get(plan)
        if f is None:
            f = self._figures[plan] = self._compute_figures(plan)
        return f

    def per_gpu(self, plan: Plan) -> PerGPU:
        """``per_gpu(est, plan, layout)``: the figures with every part (computed once per plan)."""
        pg = self._per_gpu.get(plan)
        if pg is None:
            pg = self._per_gpu[plan] = self._compute_per_gpu(plan)
        return pg

    def _compute_figures(self, plan: Plan) -> Figures:
        """The plan-independent sums plus each model state's share: on the GPU, or in host RAM."""
        comps = self.components(plan)
        phase_bytes = dict(comps.fixed_phase_bytes)
        host_in = dict.fromkeys(self.all_phases, 0)
        static, evictable, gradients = comps.fixed_static, comps.fixed_evictable, 0
        for t in comps.states:
            nbytes = sharded(t.replica_bytes, shard_divisor(t.category, plan))
            if offloaded(t.category, plan):
                for ph in t.summed_in:
                    host_in[ph] += nbytes
                continue
            if t.evictable:
                evictable += nbytes
            else:
                for ph in t.summed_in:
                    phase_bytes[ph] += nbytes
            if t.static:
                static += nbytes
            if t.category == "gradients":
                gradients += nbytes
        gathered = comps.fixed_gathered
        for b in _strategy_buffers(plan, self.layout, comps, gradients)[0]:
            for ph in b.phases:
                if ph in phase_bytes:
                    phase_bytes[ph] += b.bytes
            if b.category == "gather_buffers":
                gathered = max(gathered, b.bytes)
        peak_phase = max(phase_bytes, key=phase_bytes.__getitem__)
        peak = phase_bytes[peak_phase]
        reserved, device = _reserved_device(self.est, peak, static, evictable, gathered // 2)
        # host buffers persist, but the terms of one gradient at different moments are not all alive at once
        host_per_gpu = max(host_in.values(), default=0)
        if plan.offload and plan.strategy.startswith("zero"):
            trainable = int(getattr(self.est, "trainable_params", 0) or 0)
            total = self.layout.total_params if self.layout is not None else trainable
            host_per_gpu = max(host_per_gpu, deepspeed_offload_host_bytes(trainable, total, plan.shard_group,
                                                                          plan.offload))
        host = host_ram_bytes(host_per_gpu, plan.gpus_per_node) if host_per_gpu else 0
        return Figures(plan=plan, phase_bytes=phase_bytes, peak_phase=peak_phase, peak_allocated_bytes=peak,
                       reserved_bytes=reserved, device_bytes=device, host_bytes_per_node=host)

    def _compute_per_gpu(self, plan: Plan) -> PerGPU:
        comps = self.components(plan)
        parts = [fixed if fixed is not None else _part(t, shard_divisor(t.category, plan), offloaded(t.category, plan))
                 for t, fixed in zip(comps.terms, comps.fixed_parts)]
        buffers, notes = _strategy_buffers(plan, self.layout, comps,
                                           sum(x.bytes for x in parts if x.category == "gradients"))
        f = self.figures(plan)
        return PerGPU(plan=plan, parts=tuple(parts + buffers), phase_bytes=f.phase_bytes, peak_phase=f.peak_phase,
                      peak_allocated_bytes=f.peak_allocated_bytes, reserved_bytes=f.reserved_bytes,
                      device_bytes=f.device_bytes, host_bytes_per_node=f.host_bytes_per_node, notes=tuple(notes))


def per_gpu(est: Any, plan: Plan, layout: ModelLayout | None = None, *, method: str | None = None) -> PerGPU:
    """One GPU's memory for ``plan``, from the per-replica estimate ``est``. Pure; microseconds.

    Each component is divided by the shard group when the plan's ZeRO stage shards its category
    (:func:`shard_divisor`), moved to host RAM when the offload covers it (:func:`offloaded`), and kept
    whole otherwise. The strategy's own buffers are added in the phases where they live: gather buffers
    wherever activations are live (forward/backward), DDP buckets wherever gradients are live.
    The peak is re-taken over phases; reserved and device scale from the estimate (see
    :func:`_reserved_device`). For many plans of one estimate, :class:`Replica` shares the work.
    """
    return Replica(est, layout, method=method).per_gpu(plan)


def _reserved_device(est: Any, allocated: int, static: int, evictable: int, extra_transient: int) -> tuple[int, int]:
    """Reserved and device figures for one GPU whose allocated peak is ``allocated``.

    With a :class:`hubvram.memory.Estimate` the memory model's own rule is applied to the per-GPU parts
    (``memory.overhead``: reserved = allocated + 5 % of the non-static bytes (``static``: the GPU's bytes of
    the STATIC_COMPONENTS) + the largest transient block; device = reserved + CUDA context + the
    ``evictable`` bytes). The largest transient is recovered from the estimate and raised to one gathered
    unit (``extra_transient``) under ZeRO-3/FSDP, whose all-gather outputs are allocated and freed layer
    after layer. With a stand-in estimate the replica's reserved/allocated ratio and its device - reserved
    difference are applied.
    """
    if isinstance(est, Estimate):
        reserved = reserved_bytes(allocated, static, max(est.largest_transient_bytes, extra_transient))
        return reserved, device_bytes(reserved, evictable)
    peak = int(est.peak_allocated_bytes) or 1
    reserved = math.ceil(allocated * int(est.reserved_bytes) / peak)
    return reserved, reserved + int(est.device_bytes) - int(est.reserved_bytes)
