"""hubvram.early: a first fetch's first round trip sent while the HTTP stack imports, then taken by HubClient.

The fault cases (401/403 refusals asked once, 429 Retry-After honoured, a cut-short config.json retried and
reported) run through it in tests/test_integration_hub.py, since every CLI first fetch starts one.
"""

from __future__ import annotations

import os

import pytest

from hubvram import api, early
from hubvram.early import EarlyFetch
from test_memo import REPO, _fields, _moe_repo


@pytest.fixture
def env(fakehub, tmp_path, monkeypatch):
    for var in list(os.environ):
        if var.lower().endswith("_proxy") or var.startswith(("HUBVRAM_", "HF_")) or var == "HUGGING_FACE_HUB_TOKEN":
            monkeypatch.delenv(var)
    monkeypatch.setenv("HF_ENDPOINT", fakehub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "cache"


def test_a_first_fetch_asks_each_url_once_and_the_answers_are_cached(fakehub, env, monkeypatch):
    started = []
    real_start = EarlyFetch.start.__func__
    monkeypatch.setattr(EarlyFetch, "start", classmethod(lambda cls, *a, **k: started.append(a) or real_start(cls, *a, **k)))
    sha, total = _moe_repo(fakehub)
    meta = api.load_metadata(REPO, cache_dir=env, offline=False)
    assert started == [(fakehub.endpoint, REPO, "main", ("config.json", "model.safetensors.index.json"), None)]
    assert sum(t.numel * t.count for t in meta.tensors) == total
    paths = [r.path for r in fakehub.requests if "/cdn/" not in r.path and not r.path.endswith(".safetensors")]
    assert sorted(paths) == sorted([f"/api/models/{REPO}/revision/main", f"/{REPO}/resolve/main/config.json",
                                    f"/{REPO}/resolve/main/model.safetensors.index.json"])
    fakehub.requests.clear()
    monkeypatch.setattr("hubvram.memo.lookup", lambda *a, **k: None)  # the HTTP rows alone answer offline
    assert _fields(api.load_metadata(REPO, cache_dir=env, offline=True)) == _fields(meta)
    assert _fields(api.load_metadata(f"{REPO}@{sha}", cache_dir=env, offline=True)) == _fields(meta)
    assert len(fakehub.requests) == 0


def test_nothing_is_started_for_a_revision_already_cached(fakehub, env, monkeypatch):
    _moe_repo(fakehub)
    api.load_metadata(REPO, cache_dir=env, offline=False)
    monkeypatch.setattr("hubvram.memo.lookup", lambda *a, **k: None)  # no fast answer: the full way
    monkeypatch.setattr(EarlyFetch, "start", classmethod(lambda cls, *a, **k: pytest.fail("started")))
    assert api.load_metadata(REPO, cache_dir=env, offline=False).revision


def test_it_steps_aside_for_a_proxy_or_a_token_only_huggingface_hub_can_give(env, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert EarlyFetch.start("https://huggingface.co", "org/m", "main", ()) is None
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("HF_OIDC_RESOURCE", "x")
    assert EarlyFetch.start("https://huggingface.co", "org/m", "main", ()) is None
    assert EarlyFetch.start("ftp://example.com", "org/m", "main", (), token=False) is None


def test_answers_keep_a_refusal_s_headers_and_only_whole_bodies(fakehub, env):
    sha, _ = _moe_repo(fakehub)
    f = EarlyFetch.start(fakehub.endpoint, REPO, "main", ("config.json", "absent.json"), token="hf_x")
    api_answer, config, absent = f.answer("api"), f.answer("config.json"), f.answer("absent.json")
    assert api_answer.status == 200 and b'"sha"' in api_answer.body and config.status == 200
    assert (absent.status, absent.body, dict(absent.headers).get("X-Error-Code")) == (404, b"", "EntryNotFound")
    assert {r.authorization for r in fakehub.requests} == {"Bearer hf_x"}  # the endpoint's host only, every URL on it
    assert f.answer("not-asked") is None
    r = early.as_response(config)
    assert (r.status_code, r.content, r.request.headers["Authorization"]) == (200, config.body, "Bearer hf_x")


@pytest.mark.parametrize("env_vars", [{}, {"HTTPS_PROXY": "http://p:1"}, {"http_proxy": "http://p:1"},
                                      {"ALL_PROXY": "socks5://p:1"}, {"ftp_proxy": "http://p:1"},
                                      {"NO_PROXY": "localhost"}, {"https_proxy": ""}])
def test_proxies_configured_sees_what_urllib_and_requests_see(env, monkeypatch, env_vars):
    import sys
    import urllib.request

    from hubvram.netenv import proxies_configured

    for name, value in env_vars.items():
        monkeypatch.setenv(name, value)
    if sys.platform not in ("darwin", "win32"):
        assert proxies_configured() == any(s != "no" for s in urllib.request.getproxies())
    assert proxies_configured() == any(v and k.lower() != "no_proxy" for k, v in env_vars.items())
