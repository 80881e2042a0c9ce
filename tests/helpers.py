"""Shared test helpers: fixture paths and a safetensors header writer for huge virtual shapes.

``write_header_only`` writes the header bytes the ``safetensors`` library would write and a sparse file
of the right size, so that a 405B-parameter checkpoint can live in a temp folder without a byte of weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping, Sequence

from fakehub import build_safetensors_header

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "fixtures" / "hub-snapshots"


def snapshot_config(model_id: str) -> dict:
    d = SNAPSHOTS / model_id
    path = d / "config.json"
    if not path.exists():
        path = next(d.glob("config*.json"))
    return json.loads(path.read_text())


def header_bytes(tensors: Sequence[tuple[str, str, Sequence[int]]],
                 metadata: Mapping[str, str] | None = None) -> tuple[bytes, int]:
    """The safetensors file prefix (8-byte length + header) for tensors, and the data length.

    Built by the fake Hub's writer, which is byte-identical to the safetensors library (tests/test_fakehub.py).
    """
    head, data_len = build_safetensors_header({n: (d, tuple(s)) for n, d, s in tensors}, metadata)
    return struct.pack("<Q", len(head)) + head, data_len


def write_header_only(path: Path, tensors, metadata=None) -> int:
    """Write a safetensors file whose data section is a hole (sparse): the header is exact."""
    head, data_len = header_bytes(tensors, metadata)
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + data_len)
    return len(head) + data_len
