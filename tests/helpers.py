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


def two_shard_repo(fakehub, repo: str, config: dict) -> tuple[str, int]:
    """Serve ``config``'s full (per-expert) inventory as a 2-shard repo with its index; (sha, Σ numel)."""
    from fakehub import VirtualSafetensors
    from hubvram.inventory import tensors_from_config

    tensors, _ = tensors_from_config(config)
    files = {"config.json": json.dumps(config).encode()}
    wm = {}
    half = len(tensors) // 2
    for i, group in enumerate((tensors[:half], tensors[half:]), 1):
        name = f"model-0000{i}-of-00002.safetensors"
        header, size = build_safetensors_header({t.name: (t.dtype, t.shape) for t in group})
        files[name] = VirtualSafetensors(header, size)
        wm.update({t.name: name for t in group})
    files["model.safetensors.index.json"] = json.dumps({"weight_map": wm}).encode()
    return fakehub.add_repo(repo, files), sum(t.numel for t in tensors)
