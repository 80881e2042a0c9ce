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


# --- header reads: one cache query, misses fetched without requests-cache, one row per read ------------------
def _repo(fakehub, n=3):
    from fakehub import VirtualSafetensors

    headers = {}
    files = {"config.json": b"{}"}
    for i in range(n):
        header, size = build_safetensors_header({f"w{i}": ("BF16", (4, 4 + i))}, {"format": "pt"})
        files[f"s{i}.safetensors"] = VirtualSafetensors(header, size)
        headers[f"s{i}.safetensors"] = header
    return fakehub.add_repo("org/m", files), headers


def test_header_reads_store_one_row_each_that_requests_cache_finds(fakehub, tmp_path):
    import sqlite3

    from hubvram.hub import HubClient

    sha, headers = _repo(fakehub)
    names = sorted(headers)
    c = HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, token=False, offline=False)
    got = c.fetch_headers("org/m", sha, names, read_sizes={n: 4096 for n in names})
    assert {n: raw for n, (raw, _) in got.items()} == headers
    assert c.stats["header"] == 3 and c.stats["cache_hits"] == 0
    with sqlite3.connect(tmp_path / "http_cache.sqlite") as con:  # no CDN-hop rows, no redirect aliases
        assert con.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 3
        assert con.execute("SELECT COUNT(*) FROM redirects").fetchone()[0] == 0
    # the row is where requests-cache itself looks (same key), with the history of the redirect
    r = c._session.get(c._file_url("org/m", sha, names[0]), headers={"Range": "bytes=0-4095"}, only_if_cached=True)
    assert r.status_code == 206 and r.from_cache and r.content[8:8 + len(headers[names[0]])] == headers[names[0]]
    assert [h.status_code for h in r.history] == [302]
    fakehub.requests.clear()
    assert c.fetch_headers("org/m", sha, names, read_sizes={n: 4096 for n in names}) == got
    assert len(fakehub.requests) == 0 and c.stats["cache_hits"] == 3
    c.close()
    off = HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, offline=True)
    assert off.fetch_headers("org/m", sha, names, read_sizes={n: 4096 for n in names}) == got
    with pytest.raises(Exception, match="offline and not cached"):  # another range (100 kB): not stored
        off.fetch_header("org/m", sha, names[0])
