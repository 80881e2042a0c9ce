"""Shared test helpers: fixture paths and a safetensors header writer for huge virtual shapes.

``write_header_only`` produces the same header bytes the ``safetensors`` library writes (checked in
tests/test_safetensors.py against the library itself) and a sparse file of the right size, so that a
405B-parameter checkpoint can live in a temp folder without a byte of weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping, Sequence

from hubvram.metadata import DTYPE_BITS

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "fixtures" / "hub-snapshots"


def snapshot_config(model_id: str) -> dict:
    d = SNAPSHOTS / model_id
    path = d / "config.json"
    if not path.exists():
        path = next(d.glob("config*.json"))
    return json.loads(path.read_text())


def header_bytes(tensors: Sequence[tuple[str, str, Sequence[int]]], metadata: Mapping[str, str] | None = None) -> tuple[bytes, int]:
    """The safetensors header (with its 8-byte prefix) for tensors laid out in the given order.

    Mirrors safetensors/src/tensor.rs ``prepare``: tensors sorted by dtype alignment (descending) then
    name, JSON without spaces, header padded with spaces to a multiple of 8.
    """
    order = sorted(tensors, key=lambda t: (-DTYPE_BITS[t[1]], t[0]))
    obj: dict = {}
    if metadata:
        obj["__metadata__"] = dict(metadata)
    pos = 0
    for name, dtype, shape in order:
        n = 1
        for s in shape:
            n *= s
        size = n * DTYPE_BITS[dtype] // 8
        obj[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + size]}
        pos += size
    raw = json.dumps(obj, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, pos


def write_header_only(path: Path, tensors, metadata=None) -> int:
    """Write a safetensors file whose data section is a hole (sparse): the header is exact."""
    head, data_len = header_bytes(tensors, metadata)
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + data_len)
    return len(head) + data_len
