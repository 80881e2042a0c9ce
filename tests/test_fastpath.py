"""Warm online answers without the HTTP stack (hubvram.fastpath): the memo, plus one revision GET for a branch.

Pinned: answered with no request. Branch: one GET of the revision API, and only if it says the commit the
HTTP cache last saw. Anything doubtful steps aside to the full HubClient path, which answers as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fakehub import status
from hubvram import fastpath, tokens
from hubvram.api import load_metadata
from hubvram.hub import HubClient
from hubvram.metadata import ModelRef
from test_memo import REPO, _fields, _moe_repo

HEAVY = sorted(("requests", "requests_cache", "huggingface_hub"))
CHILD = r"""
import json, sys
from hubvram import api
meta = api.load_metadata(sys.argv[1])
print(json.dumps({"sha": meta.revision, "tensors": len(meta.tensors),
                  "heavy": sorted(m for m in ("requests", "requests_cache", "huggingface_hub") if m in sys.modules)}))
"""


@pytest.fixture
def env(fakehub, tmp_path, monkeypatch):
    """Environment of a user of this fake Hub with no token and no proxy; the cache in tmp_path/cache."""
    for var in list(os.environ):
        if var.lower().endswith("_proxy") or var.startswith(("HUBVRAM_", "HF_")) or var == "HUGGING_FACE_HUB_TOKEN":
            monkeypatch.delenv(var)
    monkeypatch.setenv("HUBVRAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", fakehub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "cache"


def child(ref: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, ref], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_warm_online_answers_need_one_request_for_a_branch_and_none_pinned(fakehub, env):
    sha, _ = _moe_repo(fakehub)
    first = child(REPO)
    assert first["sha"] == sha and first["heavy"] == HEAVY  # a first fetch goes the full way
    fakehub.requests.clear()
    assert child(REPO) == dict(first, heavy=[])
    assert [(r.method, r.path) for r in fakehub.requests] == [("GET", f"/api/models/{REPO}/revision/main")]
    fakehub.requests.clear()
    assert child(f"{REPO}@{sha}") == dict(first, heavy=[])
    assert len(fakehub.requests) == 0


def test_a_branch_that_moved_goes_the_full_way(fakehub, env):
    old, _ = _moe_repo(fakehub)
    child(REPO)
    new, _ = _moe_repo(fakehub)  # a new commit on main
    assert new != old
    moved = child(REPO)
    assert moved["sha"] == new and moved["heavy"] == HEAVY
    assert child(REPO) == dict(moved, heavy=[])  # and from then on, the new commit is warm


def _warm(fakehub, cache):
    sha, _ = _moe_repo(fakehub)
    with HubClient(endpoint=fakehub.endpoint, cache_dir=cache, token=False, offline=False) as c:
        meta = load_metadata(REPO, client=c)
    fakehub.requests.clear()
    return sha, meta


def test_any_doubt_steps_aside_and_the_full_way_answers(fakehub, env, monkeypatch):
    sha, online = _warm(fakehub, env)
    ref = ModelRef.parse(REPO)
    assert _fields(fastpath.answer(ref)) == _fields(online)
    doubts = {
        "server error": lambda mp: fakehub.inject("/api/*", status(503)),
        "proxy": lambda mp: mp.setenv("HTTPS_PROXY", "http://127.0.0.1:9"),
        "oidc": lambda mp: mp.setenv("HF_OIDC_RESOURCE", "x"),
        "cache file not private": lambda mp: os.chmod(env / "http_cache.sqlite", 0o644),
        "memo of other code": lambda mp: mp.setattr("hubvram.memo._code_digest", "0" * 64),
    }
    for what, make in doubts.items():
        with monkeypatch.context() as mp:
            make(mp)
            assert fastpath.answer(ref) is None, what
        fakehub.clear_faults()
        os.chmod(env / "http_cache.sqlite", 0o600)
        assert _fields(fastpath.answer(ref)) == _fields(online), what
    assert _fields(load_metadata(REPO)) == _fields(online)  # (the full way: tests/test_memo.py, test_hub.py)
    assert fastpath.answer(ModelRef.parse(f"{REPO}@{'0' * 40}")) is None  # a commit never fetched
    assert fastpath.answer(ModelRef.parse("org/never-fetched")) is None


def test_a_revision_answer_that_is_not_a_clean_200_is_no_answer(fakehub, env):
    sha, _ = _warm(fakehub, env)
    assert fastpath.branch_sha(fakehub.endpoint, REPO, "main", False) == sha
    assert fastpath.branch_sha(fakehub.endpoint, "org/absent", "main", False) is None  # 404
    assert fastpath.branch_sha(fakehub.endpoint, REPO, "no-such-branch", False) is None
    fakehub.inject("/api/*", status(429, retry_after=1))
    assert fastpath.branch_sha(fakehub.endpoint, REPO, "main", False) is None
    assert fastpath.branch_sha("http://127.0.0.1:9", REPO, "main", False) is None  # refused
    assert fastpath.branch_sha("ftp://example.com", REPO, "main", False) is None


def test_the_token_is_the_one_huggingface_hub_would_send(fakehub, env, monkeypatch, tmp_path):
    _warm(fakehub, env)
    assert tokens.plain_token() is False  # none anywhere
    token_file = tmp_path / "hf_home" / "token"
    token_file.parent.mkdir()
    token_file.write_text("hf_from_file\n")
    assert tokens.plain_token() == "hf_from_file"
    (token_file.parent / "stored_tokens").write_text("[oauth]\nhf_token = hf_from_file\nrefresh_token = r\n")
    assert tokens.plain_token() is None  # an OAuth token huggingface_hub may have to refresh first
    monkeypatch.setenv("HF_TOKEN", " hf_from_env\r\n")
    assert tokens.plain_token() == "hf_from_env"
    fastpath.branch_sha(fakehub.endpoint, REPO, "main")
    assert [r.authorization for r in fakehub.requests] == ["Bearer hf_from_env"]
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("HF_TOKEN")
    assert tokens.plain_token() is False


def test_hub_token_asks_huggingface_hub_only_when_the_token_is_not_plain(env, monkeypatch, tmp_path):
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: asked.append(1) or "hf_from_hub")
    assert (tokens.hub_token(), asked) == (None, [])  # no token anywhere: None, huggingface_hub not asked
    monkeypatch.setenv("HF_TOKEN", "hf_plain")
    assert (tokens.hub_token(), asked) == ("hf_plain", [])
    monkeypatch.setenv("HF_OIDC_RESOURCE", "x")
    assert (tokens.hub_token(), asked) == ("hf_from_hub", [1])
