"""Byte units and the CUDA caching allocator's rounding. Pure.

Everything in :mod:`hubvram.memory` is counted in bytes (``int``). GiB means 2**30 bytes.
"""

from __future__ import annotations

#: The CUDA caching allocator rounds every block up to a multiple of 512 bytes
#: (``kMinBlockSize = 512`` in c10/cuda/CUDACachingAllocator.cpp); ``torch.cuda.max_memory_allocated``
#: counts the rounded sizes. The fake-tensor oracle (shared/tools/simulate_peak.py) rounds the same way.
BLOCK = 512
GIB = 1 << 30
MIB = 1 << 20

#: Bytes per element of the dtypes a training step uses.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "uint8": 1, "bool": 1, "int64": 8}


def rnd(nbytes: int) -> int:
    """``nbytes`` rounded up to the allocator's 512-byte block (0 stays 0)."""
    return -(-nbytes // BLOCK) * BLOCK if nbytes > 0 else 0


def rnd_f(nbytes: float) -> int:
    """Round a (possibly fractional, formula-derived) byte count up to whole 512-byte blocks."""
    return rnd(int(-(-nbytes // 1)))


def gib(nbytes: int | float) -> str:
    """``nbytes`` as GiB with two decimals, for formulas shown to people."""
    return f"{nbytes / GIB:.2f} GiB"
