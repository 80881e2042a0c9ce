"""The fast paths of issue 7 give the same answers as the plain ones: index-sized header reads, ..."""

from __future__ import annotations

import json
import os

import pytest

from fakehub import build_safetensors_header
from helpers import two_shard_repo
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
    assert r.history == [] and r.url == c._file_url("org/m", sha, names[0])  # stored as the resolve URL's answer
    fakehub.requests.clear()
    assert c.fetch_headers("org/m", sha, names, read_sizes={n: 4096 for n in names}) == got
    assert len(fakehub.requests) == 0 and c.stats["cache_hits"] == 3
    c.close()
    off = HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, offline=True)
    assert off.fetch_headers("org/m", sha, names, read_sizes={n: 4096 for n in names}) == got
    with pytest.raises(Exception, match="offline and not cached"):  # another range (100 kB): not stored
        off.fetch_header("org/m", sha, names[0])


# --- config.json and the index asked together with the revision lookup ---------------------------------------
def _sharded(fakehub, repo="org/sharded"):
    return two_shard_repo(fakehub, repo, snapshot.load("meta-llama/Llama-3.2-1B").config)


def test_a_first_fetch_asks_config_and_index_with_the_revision_lookup(fakehub, tmp_path):
    from hubvram import load_model
    from hubvram.hub import HubClient

    sha, total = _sharded(fakehub)
    with HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, token=False, offline=False) as c:
        assert load_model("org/sharded", client=c).counts.stored_elements == total
        assert (c.stats["api"], c.stats["file"], c.stats["header"], c.stats["prefetch_dropped"]) == (1, 2, 2, 0)
    paths = [r.path for r in fakehub.requests if "/resolve/" in r.path and not r.path.endswith(".safetensors")]
    assert sorted(paths) == ["/org/sharded/resolve/main/config.json",
                             "/org/sharded/resolve/main/model.safetensors.index.json"]
    fakehub.requests.clear()  # kept under the commit's URLs: an offline client (and a pinned one) finds them
    with HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, offline=True) as off:
        assert load_model(f"org/sharded@{sha}", client=off).counts.stored_elements == total
    with HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, token=False, offline=False) as again:
        assert load_model("org/sharded", client=again).counts.stored_elements == total
        assert (again.stats["api"], again.stats["file"], again.stats["header"]) == (1, 0, 0)
    assert [r.path for r in fakehub.requests] == ["/api/models/org/sharded/revision/main"]


def test_a_prefetch_of_another_commit_is_dropped_and_asked_again_pinned(fakehub, tmp_path):
    from fakehub import status
    from hubvram import load_model
    from hubvram.hub import HubClient

    sha, total = _sharded(fakehub)
    fakehub.inject("/org/sharded/resolve/main/config.json", status(200, headers={"X-Repo-Commit": "f" * 40}))
    with HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, token=False, offline=False) as c:
        assert load_model("org/sharded", client=c).counts.stored_elements == total
        assert c.stats["prefetch_dropped"] == 1
    assert f"/org/sharded/resolve/{sha}/config.json" in [r.path for r in fakehub.requests]


# --- tensor names classified once per shape of name ------------------------------------------------------------
TRICKY_NAMES = [
    "model.layers.3.mlp.experts.17.w1.weight", "model.layers.3.block_sparse_moe.experts.7.w3.weight",
    "model.layers.12.input_layernorm.weight", "transformer.h.5.ln_1.bias", "encoder.layers.2.norm1.weight",
    "model.layers.0.self_attn.q_proj.qweight", "model.layers.0.self_attn.q_proj.scales", "lm_head.weight",
    "language_model.lm_head.weight", "model.language_model.layers.1.mlp.gate_proj.weight", "12.weight",
    "model.layers.1.0.weight", "model.layers.61.shared_head.head.weight", "model.layers.61.eh_proj.weight",
    "vision_tower.blocks.3.attn.qkv.weight", "model.layers.1.mlp.experts.gate_up_proj_blocks", "output.weight",
    "model.layers.4.mlp.experts.down_proj", "model.layers.2.self_attn.rotary_emb.inv_freq", "h.0.attn.bias",
    "model.layers.7.mlp.down_proj.weight_scale_inv", "layers.0.attention.wq.weight", "model.norm.weight",
]


def test_memoized_name_facts_equal_the_rules_on_the_real_name():
    from hubvram.architecture import _EXPERT_FUSED_RE, _LINEAR_SUFFIX_RE, _TOP_HEAD_RE, _name_facts, classify

    names = set(TRICKY_NAMES)
    for model_id in snapshot.available():
        names.update(t.name for t in snapshot.load(model_id).tensors)
    for name in sorted(names):
        m, fm = _LINEAR_SUFFIX_RE.search(name), _EXPERT_FUSED_RE.search(name)
        assert _name_facts(name) == (*classify(name), _TOP_HEAD_RE.match(name) is not None,
                                     m.group(1) if m else None, fm.group(1) if fm else None), name


# --- offline answers from the cache file without the HTTP stack (hubvram.httpcache) ----------------------------
KEY_URLS = [
    ("https://huggingface.co/api/models/meta-llama/Llama-3.1-8B/revision/main", None),
    ("https://huggingface.co/api/models/org/m/revision/" + "a" * 40, None),
    ("https://huggingface.co/org/m/resolve/" + "b" * 40 + "/config.json", None),
    ("https://huggingface.co/org/m/resolve/" + "b" * 40 + "/model-00001-of-00191.safetensors", "bytes=0-4095"),
    ("http://127.0.0.1:8080/Org.x/My_Model-2/resolve/" + "c" * 40 + "/sub/dir/model.safetensors", "bytes=100000-1234567"),
    ("https://hf-mirror.com/a/b/resolve/" + "d" * 40 + "/.hidden/x.json", None),
]
NOT_PLAIN = [
    "https://huggingface.co/api/models/org/m/revision/refs%2Fpr%2F1",  # percent-escapes: normalized by requests-cache
    "https://huggingface.co/org/m/resolve/main/a%40b.json", "https://HuggingFace.co/org/m/resolve/main/c.json",
    "https://huggingface.co:443/org/m/resolve/main/c.json", "https://huggingface.co/org/m/resolve/main/c.json?x=1",
    "https://huggingface.co/org/m/resolve/main/./c.json", "https://huggingface.co/org/m/resolve/main/../c.json",
]


def test_cache_key_is_the_key_requests_cache_computes(tmp_path):
    import requests

    from hubvram.httpcache import cache_key
    from hubvram.hub import HubClient

    with HubClient(endpoint="https://huggingface.co", cache_dir=tmp_path, token=False, offline=True) as c:
        for url, rng in KEY_URLS + [(u, None) for u in NOT_PLAIN]:
            headers = {"Range": rng} if rng else {}
            expected = c._session.cache.create_key(requests.Request("GET", url, headers=headers).prepare())
            mine = cache_key(url, rng)
            assert mine is None if url in NOT_PLAIN else mine == expected, url
            assert c._range_key(url, 0, 99) == c._session.cache.create_key(
                requests.Request("GET", url, headers={"Range": "bytes=0-99"}).prepare())


def _fields(meta):  # Metadata compares by identity (eq=False)
    import dataclasses

    return tuple(getattr(meta, f.name) for f in dataclasses.fields(meta))


def _fetched(fakehub, tmp_path):
    from hubvram import load_model
    from hubvram.hub import HubClient

    sha, total = _sharded(fakehub)
    with HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, token=False, offline=False) as c:
        online = load_model("org/sharded", client=c)
    return sha, online


def test_the_cache_reader_answers_as_the_offline_client_does(fakehub, tmp_path, monkeypatch):
    from hubvram import load_model
    from hubvram.errors import OfflineMissError
    from hubvram.httpcache import CacheReader, open_reader
    from hubvram.hub import HubClient

    sha, online = _fetched(fakehub, tmp_path)
    monkeypatch.setattr("hubvram.memo.lookup", lambda *a, **k: None)  # both read the HTTP rows
    fakehub.stop()
    reader = open_reader(tmp_path, fakehub.endpoint)
    assert isinstance(reader, CacheReader)
    with reader, HubClient(endpoint=fakehub.endpoint, cache_dir=tmp_path, offline=True) as client:
        for ref in ("org/sharded", f"org/sharded@{sha}"):
            a, b = load_model(ref, client=reader), load_model(ref, client=client)
            assert _fields(a.metadata) == _fields(b.metadata) == _fields(online.metadata) and a.counts == b.counts
        assert reader._fallback is None and reader.stats["cache_hits"] == 2 * (1 + 2 + 2)
        for fn, args in ((lambda c: c.repo_info("org/other"), ()), (lambda c: c.fetch_file("org/sharded", sha, "x.json"), ())):
            with pytest.raises(OfflineMissError) as mine:
                fn(reader)
            with pytest.raises(OfflineMissError) as theirs:
                fn(client)
            assert str(mine.value) == str(theirs.value)
    assert open_reader(tmp_path / "nothing-here") is None


def test_the_cache_reader_hands_what_it_cannot_key_to_the_hub_client(fakehub, tmp_path, monkeypatch):
    from hubvram import httpcache, load_model

    sha, online = _fetched(fakehub, tmp_path)
    reader = httpcache.open_reader(tmp_path, fakehub.endpoint)
    real = httpcache.cache_key
    monkeypatch.setattr(httpcache, "cache_key", lambda url, rng=None: real(url + "x", rng))  # keys that miss
    with reader:
        assert _fields(load_model("org/sharded", client=reader).metadata) == _fields(online.metadata)
        assert reader._fallback is not None and reader._keys_ok is False


# --- the lone-surrogate checks run only when the text has a surrogate escape ---------------------------------
def test_surrogate_checks_still_catch_what_they_caught():
    from hubvram.errors import HeaderError
    from hubvram.safetensors import parse_header
    from hubvram.sources import parse_index

    entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    assert parse_header(('{"w\\ud83d\\ude00":' + entry + '}').encode(), file="f").tensors[0].name == "w\U0001F600"
    for bad in ('{"w\\ud800":' + entry + '}', '{"__metadata__":{"k":"\\uDC00"},"w":' + entry + '}'):
        with pytest.raises(HeaderError, match="half of a surrogate pair"):
            parse_header(bad.encode(), file="f")
    with pytest.raises(HeaderError, match="appears twice"):
        parse_header(('{"w":' + entry + ',"w":' + entry + '}').encode(), file="f")
    with pytest.raises(HeaderError, match="not valid JSON"):
        parse_index(b'{"weight_map":{"a":"m.safetensors"},"x":"\\ud800"}', model="m", file="model.safetensors.index.json")
    with pytest.raises(HeaderError, match="'b' to an unsafe shard name '../x.safetensors'"):
        parse_index(b'{"weight_map":{"a":"m.safetensors","b":"../x.safetensors","c":"m.safetensors"}}', model="m",
                    file="model.safetensors.index.json")


def test_requests_reads_the_environment_only_when_a_proxy_is_configured(tmp_path, monkeypatch):
    from hubvram.hub import HubClient

    for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # no proxy to bypass: nothing to look up per request
    with HubClient(endpoint="http://127.0.0.1:9", cache_dir=tmp_path, token=False, offline=False) as c:
        assert not c._plain.trust_env and not c._session.trust_env
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    with HubClient(endpoint="http://127.0.0.1:9", cache_dir=tmp_path, token=False, offline=False) as c:
        assert c._plain.trust_env and c._session.trust_env
