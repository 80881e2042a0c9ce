"""The metadata memo (hubvram.memo): a commit's Metadata, kept so that the next run reads one small file.

It must give the answer the HTTP cache gives, field for field; anything doubtful about a memo file is a
miss that falls back to the HTTP cache (and rewrites the file); online, a memo older than max_age is not
used, so the rows under it are revalidated as before.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time

import pytest

from helpers import two_shard_repo
from hubvram import memo, snapshot
from hubvram.api import load_metadata
from hubvram.hub import HubClient
from hubvram.inventory import tensors_from_config

REPO = "org/moe"


def _fields(meta):  # Metadata compares by identity (eq=False)
    return tuple(getattr(meta, f.name) for f in dataclasses.fields(meta))


def _moe_repo(fakehub, repo=REPO):
    """A 2-shard Qwen3-MoE-shaped repo (2 layers x 8 experts): 2 x 8 x 3 expert tensors to fold."""
    cfg = dict(snapshot.load("Qwen/Qwen3-30B-A3B").config, num_hidden_layers=2, num_experts=8, hidden_size=64,
               moe_intermediate_size=32, intermediate_size=128, vocab_size=512, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16)
    return two_shard_repo(fakehub, repo, cfg)


def _client(fakehub, cache_dir, **kw):
    return HubClient(endpoint=fakehub.endpoint, cache_dir=cache_dir, token=False, **kw)


@pytest.fixture
def fetched(fakehub, tmp_path):
    """(sha, total, the Metadata of a first online fetch) with the memo it wrote in tmp_path."""
    sha, total = _moe_repo(fakehub)
    with _client(fakehub, tmp_path, offline=False) as c:
        meta = load_metadata(REPO, client=c)
    return sha, total, meta


def test_a_fetch_writes_one_private_memo_file_that_answers_like_the_http_cache(fakehub, tmp_path, fetched,
                                                                                monkeypatch):
    sha, total, online = fetched
    path = tmp_path / "memo" / f"org--moe@{sha}.json"
    assert [p.name for p in (tmp_path / "memo").iterdir()] == [path.name]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    doc = json.loads(path.read_bytes())
    assert (doc["format"], doc["code"], doc["endpoint"]) == ("hubvram-memo/1", memo.code_digest(), fakehub.endpoint)
    assert sum(t.numel * t.count for t in online.tensors) == total
    # per layer 9 tensors (q k v o, q/k norms, 2 layer norms, router) + 8 experts x 3, folded to 3; + 3 others
    assert len(tensors_from_config(online.config)[0]) == 2 * (9 + 8 * 3) + 3
    assert len(online.tensors) == len(doc["metadata"]["tensors"]) == 2 * (9 + 3) + 3
    fakehub.requests.clear()
    for offline in (False, True):  # online pinned and offline: the memo answers, nothing is sent
        with _client(fakehub, tmp_path, offline=offline) as c:
            got = load_metadata(f"{REPO}@{sha}", client=c)
        assert _fields(got) == _fields(online)
    assert len(fakehub.requests) == 0
    with _client(fakehub, tmp_path, offline=True) as c:  # the HTTP rows alone give the same answer
        monkeypatch.setattr(memo, "lookup", lambda *a, **k: None)
        assert _fields(load_metadata(REPO, client=c)) == _fields(online)


def test_online_a_branch_is_still_resolved_then_the_memo_of_its_commit_answers(fakehub, tmp_path, fetched):
    sha, _, online = fetched
    fakehub.requests.clear()
    with _client(fakehub, tmp_path, offline=False) as c:
        got = load_metadata(REPO, client=c)
        assert (c.stats["api"], c.stats["file"], c.stats["header"]) == (1, 0, 0)
    assert _fields(got) == _fields(online)
    assert [r.path for r in fakehub.requests] == [f"/api/models/{REPO}/revision/main"]


@pytest.mark.parametrize("damage", [
    "garbage", "truncated", "empty", "other-code", "other-endpoint", "other-model", "bad-tensor", "bad-dim",
    "bad-count", "not-object", "deep", "pickle",
])
def test_a_doubtful_memo_file_is_a_miss_and_is_rewritten(fakehub, tmp_path, fetched, damage):
    sha, _, online = fetched
    path = tmp_path / "memo" / f"org--moe@{sha}.json"
    raw = path.read_bytes()
    doc = json.loads(raw)
    if damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "deep":
        path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    elif damage == "pickle":
        path.write_bytes(b"\x80\x04\x95cos\nsystem\n.")
    elif damage == "not-object":
        path.write_text(json.dumps(dict(doc, metadata=[1, 2])))
    else:
        if damage == "other-code":
            doc["code"] = "0" * 64
        elif damage == "other-endpoint":
            doc["endpoint"] = "https://example.invalid"
        elif damage == "other-model":
            doc["metadata"]["model_id"] = "org/other"
        elif damage == "bad-tensor":
            doc["metadata"]["tensors"][0][2] = [-1]
        elif damage == "bad-dim":
            doc["metadata"]["tensors"][0][2] = ["64", 1]
        elif damage == "bad-count":
            doc["metadata"]["tensors"][5].append(0)
        path.write_text(json.dumps(doc))
    assert memo.lookup(REPO, sha, endpoint=fakehub.endpoint, cache_dir=tmp_path) is None
    with _client(fakehub, tmp_path, offline=True) as c:  # the HTTP cache answers, the memo is made again
        assert _fields(load_metadata(REPO, client=c)) == _fields(online)
    assert json.loads(path.read_bytes())["code"] == memo.code_digest()
    assert _fields(memo.lookup(REPO, sha, endpoint=fakehub.endpoint, cache_dir=tmp_path)) == _fields(online)


def test_online_a_memo_older_than_max_age_is_not_used(fakehub, tmp_path, fetched):
    sha, _, online = fetched
    path = tmp_path / "memo" / f"org--moe@{sha}.json"
    doc = json.loads(path.read_bytes())
    doc["created"] = time.time() - 3600
    path.write_text(json.dumps(doc))
    fakehub.requests.clear()
    with _client(fakehub, tmp_path, offline=False, max_age="10m") as c:
        got = load_metadata(f"{REPO}@{sha}", client=c)
        # the rows are younger than 10 minutes: read from the HTTP cache, nothing sent
        assert c.stats.as_dict() == {"cache_hits": 1 + 2 + 2}
    assert _fields(got) == _fields(online) and len(fakehub.requests) == 0
    assert json.loads(path.read_bytes())["created"] > time.time() - 60  # derived again, memo renewed
    with _client(fakehub, tmp_path, offline=True) as c:  # offline, any age answers
        doc["created"] = time.time() - 10 * 365 * 86400
        path.write_text(json.dumps(doc))
        assert _fields(load_metadata(REPO, client=c)) == _fields(online)
        assert c.stats["header"] == 0


def test_an_unwritable_memo_folder_costs_nothing_but_the_memo(fakehub, tmp_path):
    sha, total = _moe_repo(fakehub)
    (tmp_path / "memo").write_text("a file where the folder should be")
    with _client(fakehub, tmp_path, offline=False) as c:
        meta = load_metadata(REPO, client=c)
    assert sum(t.numel * t.count for t in meta.tensors) == total
    assert (tmp_path / "memo").read_text() == "a file where the folder should be"


def test_only_hub_metadata_at_a_commit_is_memoized(tmp_path):
    meta = snapshot.load("meta-llama/Meta-Llama-3-8B")
    assert memo.store(meta, endpoint="https://huggingface.co", cache_dir=tmp_path) is False
    local = dataclasses.replace(meta, source="local", revision=None)
    assert memo.store(local, endpoint="https://huggingface.co", cache_dir=tmp_path) is False
    hub = dataclasses.replace(meta, source="hub", revision="a" * 40)
    assert memo.store(hub, endpoint="https://huggingface.co", cache_dir=tmp_path) is True
    assert os.listdir(tmp_path / "memo") == [f"meta-llama--Meta-Llama-3-8B@{'a' * 40}.json"]
    got = memo.lookup("meta-llama/Meta-Llama-3-8B", "a" * 40, endpoint="https://huggingface.co", cache_dir=tmp_path)
    assert _fields(got) == _fields(hub)
    assert memo.lookup("meta-llama/Meta-Llama-3-8B", "main", endpoint="https://huggingface.co",
                       cache_dir=tmp_path) is None


def test_without_readable_sources_there_is_no_memo(fakehub, tmp_path, monkeypatch):
    monkeypatch.setattr(memo, "_code_digest", None)
    monkeypatch.setattr(memo, "CODE_MODULES", ("no-such-module.py",))
    sha, total = _moe_repo(fakehub)
    with _client(fakehub, tmp_path, offline=False) as c:
        meta = load_metadata(REPO, client=c)
    assert sum(t.numel * t.count for t in meta.tensors) == total and memo.code_digest() is None
    assert not (tmp_path / "memo").exists()
    assert memo.lookup(REPO, sha, endpoint=fakehub.endpoint, cache_dir=tmp_path) is None
