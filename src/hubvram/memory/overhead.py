"""What the tensors of the model do not show: kernel scratch, allocator fragmentation, CUDA context. Pure.

Three figures are reported (README "Three figures"):

* **allocated** — what ``torch.cuda.max_memory_allocated()`` shows: the peak over the phases of the sum of
  live tensors (each rounded to 512 B) plus kernel scratch that goes through PyTorch's allocator;
* **reserved** — ``torch.cuda.max_memory_reserved()``: allocated plus the caching allocator's
  fragmentation margin (freed blocks that the peak's requests could not reuse);
* **device** — what ``nvidia-smi`` shows: reserved plus the CUDA context (driver, kernels, cuBLAS handles)
  plus memory allocated outside PyTorch (bitsandbytes' paged optimizer states).
"""

from __future__ import annotations

from .component import ALL, BWD_BOTTOM, BWD_TOP, Component
from .units import MIB, rnd

#: cuBLAS(Lt) workspace PyTorch allocates through its caching allocator at the first matmul and keeps:
#: 4 MiB by default before Hopper, 32 MiB on Hopper (CUBLAS_WORKSPACE_CONFIG ":4096:8", aten/src/ATen/cuda/
#: CublasHandlePool.cpp), per handle (the forward thread and autograd's backward thread each have one).
#: The oracle does not see it (simulation.md "Validation still to do": 8-32 MiB).
CUBLAS_WORKSPACE = 32 * MIB

#: CUDA context + lazily loaded kernels on a recent NVIDIA stack (CUDA 12, torch 2.x, lazy module
#: loading): ~0.5 GiB (simulation.md: 0.4-1 GiB in nvidia-smi; fitcheck measured 141 MiB on a T4 with an
#: older stack; gpu_poor assumes 650 MB).
CUDA_CONTEXT = 512 * MIB

#: Fragmentation: a fraction of the memory that changes within a step (activations, gradients,
#: temporaries) is left in cached blocks that later requests of other sizes cannot reuse, plus the largest
#: single temporary, which usually needs a fresh segment. The two fms-acceleration single-GPU pairs in
#: shared/calibration (HF Trainer allocated vs nvidia-smi, A100 80 GB, gpt_bigcode full and Mistral-7B
#: LoRA) show gaps of 3.2-4.3 GiB over 10-25 GiB allocated, consistent with this form.
FRAGMENTATION_FRACTION = 0.05


def cublas_workspace() -> Component:
    return Component(
        "kernel_scratch.cublas", CUBLAS_WORKSPACE, ALL, "cuBLAS workspace (32 MiB on Hopper, 4 MiB before)",
        f"{CUBLAS_WORKSPACE:,} B",
        "aten/src/ATen/cuda/CublasHandlePool.cpp getChosenWorkspaceSize; simulation.md 'Validation still "
        "to do' (not seen by the fake-tensor oracle)")


def flash_backward_scratch(tokens: int, q_width: int, gqa: bool) -> Component:
    """flash-attention 2 backward: fp32 dq accumulator (B·S·H·d) and, with GQA, dk/dv for all query heads."""
    dq = rnd(tokens * q_width * 4)
    dkv = 2 * rnd(tokens * q_width * 2) if gqa else 0
    return Component(
        "kernel_scratch.flash_bwd", dq + dkv, (BWD_TOP, BWD_BOTTOM),
        "tokens × (4·q_width" + (" + 2 × 2·q_width (GQA dk/dv expanded)" if gqa else "") + ")",
        f"{tokens:,} × q_width {q_width:,} → {dq + dkv:,} B",
        "flash-attn 2 mha_bwd (csrc/flash_attn/flash_api.cpp): dq_accum fp32, dk_expanded/dv_expanded "
        "for GQA; simulation.md 'Validation still to do' (32 MiB + 2×16 MiB for 8B at 2k)")


def fragmentation(peak_allocated: int, static: int, largest_transient: int) -> int:
    """Reserved minus allocated at the peak (see FRAGMENTATION_FRACTION)."""
    dynamic = max(peak_allocated - static, 0)
    return rnd(int(FRAGMENTATION_FRACTION * dynamic) + largest_transient)


def reserved_bytes(peak_allocated: int, static: int, largest_transient: int) -> int:
    return peak_allocated + fragmentation(peak_allocated, static, largest_transient)


def device_bytes(reserved: int, evictable: int) -> int:
    return reserved + CUDA_CONTEXT + evictable
