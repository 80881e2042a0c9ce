"""The fast paths of issue 7 give the same answers as the plain ones: index-sized header reads, ..."""

from __future__ import annotations

import json

import pytest

from fakehub import build_safetensors_header
from hubvram import snapshot
from hubvram.inventory import tensors_from_config
from hubvram.safetensors import HEADER_ENTRY_BYTES, header_read_size


def _shards(model_id: str, n: int):
    meta = snapshot.load(model_id)
    tensors, _ = tensors_from_config(meta.config)
    for i in range(n):
        yield tensors[i * len(tensors) // n:(i + 1) * len(tensors) // n]


@pytest.mark.parametrize("model_id, shards", [("meta-llama/Llama-3.1-405B", 191), ("deepseek-ai/DeepSeek-V3", 163),
                                              ("Qwen/Qwen3-30B-A3B", 1), ("Qwen/Qwen2.5-0.5B", 1)])
def test_index_sized_first_read_holds_the_whole_header(model_id, shards):
    for group in _shards(model_id, shards):
        header, _ = build_safetensors_header({t.name: (t.dtype, t.shape) for t in group}, {"format": "pt"})
        size = header_read_size(t.name for t in group)
        assert 8 + len(header) <= size and size % 4096 == 0
        assert size - 8 - len(header) < 4096 + 2048 + len(group) * HEADER_ENTRY_BYTES  # not wildly more


def test_index_sized_first_read_is_small_for_a_405b_shard():
    group = next(_shards("meta-llama/Llama-3.1-405B", 191))
    assert header_read_size(t.name for t in group) == 4096  # instead of FIRST_READ_BYTES (100 kB)


def test_worst_case_entry_fits_the_per_entry_budget():
    entry = json.dumps({"x": {"dtype": "F8_E4M3", "shape": [9_999_999] * 5,
                              "data_offsets": [9_999_999_999_999, 9_999_999_999_999]}}, separators=(",", ":"))
    assert len(entry) - len('{"x"}') + 1 <= HEADER_ENTRY_BYTES
