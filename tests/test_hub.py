"""Unit tests for hubvram.hub: a mocked Hub (``responses``), a real SQLite cache in tmp_path, no network."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
import requests
import responses
from safetensors.numpy import save as st_save

from hubvram.errors import (EXIT_HUB, EntryNotFoundError, GatedRepoError, HeaderError, NetworkError,
                            OfflineMissError, RepoNotFoundError, RevisionNotFoundError)
from hubvram.hub import HubClient, RepoInfo
from hubvram.safetensors import FIRST_READ_BYTES, parse_header

HUB = "https://hub.example"
CDN = "https://cdn-lfs.example"
REPO = "org/tiny"
SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "hf_SeCrEtToKeN_do_not_store_1234567890"
CONFIG = b'{"model_type": "llama", "hidden_size": 64}'


@pytest.fixture(autouse=True)
def _requests_transport(monkeypatch):
    """`responses` mocks requests' HTTPAdapter: ranged reads go through it too (HUBVRAM_HTTP=urllib3)."""
    monkeypatch.setenv("HUBVRAM_HTTP", "urllib3")


def small_file() -> bytes:
    return st_save({"a": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float16)})


def long_header_file() -> bytes:
    tensors = {f"model.layers.{i}.block.with.a.rather.long.name.weight": np.zeros(1, np.uint8)
               for i in range(2500)}
    data = st_save(tensors)
    assert int.from_bytes(data[:8], "little") + 8 > FIRST_READ_BYTES
    return data


class FakeHub:
    """Registers Hub answers on a RequestsMock; LFS files 302 to a CDN that serves 206 ranges."""

    def __init__(self, rsps: responses.RequestsMock):
        self.rsps = rsps
        self.cdn_requests: list[requests.PreparedRequest] = []

    def api(self, revision: str = "main", sha: str = SHA, files=("config.json", "model.safetensors")):
        self.rsps.add(responses.GET, f"{HUB}/api/models/{REPO}/revision/{revision}",
                      json={"id": REPO, "sha": sha, "siblings": [{"rfilename": f} for f in files]})

    def config(self, sha: str = SHA):
        self.rsps.add(responses.GET, f"{HUB}/{REPO}/resolve/{sha}/config.json", body=CONFIG,
                      content_type="application/json")

    def lfs(self, filename: str, data: bytes, sha: str = SHA, content_range=None):
        cdn = f"{CDN}/repos/ab/cd/{filename}?X-Amz-Signature=sig&Expires=1"
        self.rsps.add(responses.GET, f"{HUB}/{REPO}/resolve/{sha}/{filename}", status=302,
                      headers={"Location": cdn})

        def serve(request):
            self.cdn_requests.append(request)
            a, b = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers["Range"]).groups())
            b = min(b, len(data) - 1)
            cr = content_range(a, b, len(data)) if content_range else f"bytes {a}-{b}/{len(data)}"
            return 206, {"Content-Range": cr}, data[a:b + 1]

        self.rsps.add_callback(responses.GET, re.compile(re.escape(f"{CDN}/repos/ab/cd/{filename}") + r"\?.*"),
                               callback=serve)


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as r:
        yield r


@pytest.fixture
def hub(rsps):
    return FakeHub(rsps)


@pytest.fixture
def make_client(tmp_path):
    clients = []

    def make(**kw) -> HubClient:
        kw.setdefault("endpoint", HUB)
        kw.setdefault("token", TOKEN)
        kw.setdefault("cache_dir", tmp_path / "cache")
        kw.setdefault("offline", False)
        kw.setdefault("retries", 2)
        c = HubClient(**kw)
        c._backoff_base = 0.0
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def rows(cache_dir: Path) -> list:
    con = sqlite3.connect(cache_dir / "http_cache.sqlite")
    try:
        return con.execute("SELECT key, value FROM responses").fetchall()
    finally:
        con.close()


# --- happy paths ---------------------------------------------------------------------------------
def test_repo_info_resolves_branch_and_sends_token_to_hub(hub, rsps, make_client):
    hub.api()
    info = make_client().repo_info(REPO)
    assert info == RepoInfo(REPO, SHA, ("config.json", "model.safetensors"))
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_fetch_file_uses_resolve_url_at_sha(hub, rsps, make_client):
    hub.config()
    c = make_client()
    assert c.fetch_file(REPO, SHA, "config.json") == CONFIG
    assert c.fetch_file(REPO, SHA, "config.json") == CONFIG
    assert len(rsps.calls) == 1 and c.stats["file"] == 1 and c.stats["cache_hits"] == 1


def test_fetch_header_single_read_follows_redirect_without_token(hub, rsps, make_client):
    data = small_file()
    hub.lfs("model.safetensors", data)
    c = make_client()
    raw, total = c.fetch_header(REPO, SHA, "model.safetensors")
    n = int.from_bytes(data[:8], "little")
    assert raw == data[8:8 + n] and total == len(data)
    assert [t.name for t in parse_header(raw, file="model.safetensors", file_size=total).tensors] == ["a", "b"]
    assert c.stats["header"] == 1 and c.stats["header_extra"] == 0
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [r.headers.get("Range") for r in hub.cdn_requests] == [f"bytes=0-{FIRST_READ_BYTES - 1}"]
    assert all("Authorization" not in r.headers for r in hub.cdn_requests)  # never to another host


def test_long_header_needs_exactly_one_more_range_read(hub, make_client):
    data = long_header_file()
    hub.lfs("model.safetensors", data)
    c = make_client()
    raw, total = c.fetch_header(REPO, SHA, "model.safetensors")
    n = int.from_bytes(data[:8], "little")
    assert raw == data[8:8 + n] and total == len(data)
    assert len(parse_header(raw, file="x", file_size=total).tensors) == 2500
    assert [r.headers["Range"] for r in hub.cdn_requests] == [
        f"bytes=0-{FIRST_READ_BYTES - 1}", f"bytes={FIRST_READ_BYTES}-{8 + n - 1}"]
    assert c.stats["header"] == 1 and c.stats["header_extra"] == 1


def test_fetch_headers_concurrent(hub, make_client):
    files = {f"model-0000{i}-of-00004.safetensors": small_file() for i in range(1, 5)}
    for name, data in files.items():
        hub.lfs(name, data)
    out = make_client(max_workers=4).fetch_headers(REPO, SHA, list(files))
    assert list(out) == list(files)
    for name, (raw, total) in out.items():
        assert total == len(files[name])


def test_fetch_headers_first_error_is_raised(hub, rsps, make_client):
    hub.lfs("a.safetensors", small_file())
    rsps.add(responses.GET, f"{HUB}/{REPO}/resolve/{SHA}/b.safetensors", status=404,
             headers={"X-Error-Code": "EntryNotFound"})
    with pytest.raises(EntryNotFoundError, match="b.safetensors"):
        make_client().fetch_headers(REPO, SHA, ["a.safetensors", "b.safetensors"])


# --- cache keys and 206 --------------------------------------------------------------------------
def test_206_is_cached_and_served_with_no_request(hub, rsps, make_client):
    data = long_header_file()
    hub.lfs("model.safetensors", data)
    first = make_client().fetch_header(REPO, SHA, "model.safetensors")
    n_calls = len(rsps.calls)
    c2 = make_client()  # a new client reads the persistent SQLite cache
    assert c2.fetch_header(REPO, SHA, "model.safetensors") == first
    assert len(rsps.calls) == n_calls
    assert c2.stats["cache_hits"] == 2 and c2.stats["header"] == 0


def test_two_ranges_of_one_url_do_not_collide(hub, make_client):
    data = bytes(range(256)) * 4
    hub.lfs("blob.bin", data)
    c = make_client()
    url = f"{HUB}/{REPO}/resolve/{SHA}/blob.bin"
    for _ in range(2):  # second round comes from the cache
        assert c._ranged("header", url, 0, 9, REPO, "blob.bin", SHA, None)[0] == data[0:10]
        assert c._ranged("header", url, 10, 19, REPO, "blob.bin", SHA, None)[0] == data[10:20]
    assert len(hub.cdn_requests) == 2 and c.stats["cache_hits"] == 2


def test_branch_revision_is_refetched_online(hub, rsps, make_client):
    hub.api(sha=SHA)
    c = make_client()
    assert c.repo_info(REPO).sha == SHA
    rsps.replace(responses.GET, f"{HUB}/api/models/{REPO}/revision/main",
                 json={"sha": SHA2, "siblings": []})
    assert c.repo_info(REPO).sha == SHA2
    assert c.stats["api"] == 2 and c.stats["cache_hits"] == 0


# --- secrets and storage -------------------------------------------------------------------------
def test_token_never_reaches_disk(hub, make_client, tmp_path):
    hub.api()
    hub.config()
    hub.lfs("model.safetensors", long_header_file())
    c = make_client()
    c.repo_info(REPO)
    c.fetch_file(REPO, SHA, "config.json")
    c.fetch_header(REPO, SHA, "model.safetensors")
    assert hub.cdn_requests and all("Authorization" not in r.headers for r in hub.cdn_requests)
    for r in rows(tmp_path / "cache"):  # the redirect history was stored, minus its credentials
        entry = json.loads(r[1])
        for h in entry.get("history", []):
            assert "Authorization" not in h["request"]["headers"]
    c.close()
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files
    for p in files:
        blob = p.read_bytes()
        assert TOKEN.encode() not in blob, p
        assert b"Bearer" not in blob, p


def test_rows_are_json_and_pickle_payload_is_not_executed(hub, make_client, tmp_path):
    hub.config()
    c = make_client()
    c.fetch_file(REPO, SHA, "config.json")
    stored = rows(tmp_path / "cache")
    assert stored
    for _, value in stored:
        assert isinstance(value, str) and isinstance(json.loads(value), dict)
    c.close()

    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    con = sqlite3.connect(tmp_path / "cache" / "http_cache.sqlite")
    con.execute("UPDATE responses SET value = ?", (pickle.dumps(Evil()),))
    con.commit()
    con.close()
    with pytest.raises(OfflineMissError):
        make_client(offline=True).fetch_file(REPO, SHA, "config.json")
    assert not sentinel.exists()


def test_cache_files_are_private(hub, make_client, tmp_path):
    hub.config()
    c = make_client()
    c.fetch_file(REPO, SHA, "config.json")
    cache = tmp_path / "cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    found = [p for p in cache.iterdir() if p.name.startswith("http_cache.sqlite")]
    assert any(p.name.endswith("-wal") for p in found)  # WAL mode
    for p in found:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


# --- incomplete answers --------------------------------------------------------------------------
def test_206_with_wrong_content_range_is_an_error_and_not_cached(hub, make_client, tmp_path):
    data = small_file()
    hub.lfs("model.safetensors", data, content_range=lambda a, b, n: f"bytes {a + 1}-{b}/{n}")
    c = make_client(retries=1)
    with pytest.raises(NetworkError, match="does not answer Range") as e:
        c.fetch_header(REPO, SHA, "model.safetensors")
    assert "model.safetensors" in str(e.value) and REPO in str(e.value)
    assert len(hub.cdn_requests) == 2  # retried once
    assert rows(tmp_path / "cache") == []


def test_body_shorter_than_content_length_is_not_cached(rsps, make_client, tmp_path):
    rsps.add(responses.GET, f"{HUB}/{REPO}/resolve/{SHA}/config.json", body=CONFIG,
             headers={"Content-Length": str(len(CONFIG) + 10)}, auto_calculate_content_length=False)
    with pytest.raises(NetworkError) as e:
        make_client(retries=0).fetch_file(REPO, SHA, "config.json")
    assert e.value.exit_code == EXIT_HUB and "config.json" in str(e.value)
    assert rows(tmp_path / "cache") == []


def test_server_ignoring_range_is_read_partially_and_not_cached(rsps, make_client, tmp_path):
    data = small_file()
    rsps.add(responses.GET, f"{HUB}/{REPO}/resolve/{SHA}/model.safetensors", body=data,
             auto_calculate_content_length=True)
    raw, total = make_client().fetch_header(REPO, SHA, "model.safetensors")
    assert raw == data[8:8 + int.from_bytes(data[:8], "little")] and total == len(data)
    assert rows(tmp_path / "cache") == []


def test_absurd_header_length_stops_after_first_read(hub, make_client):
    hub.lfs("model.safetensors", (10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(HeaderError, match="exceeds"):
        make_client().fetch_header(REPO, SHA, "model.safetensors")
    assert len(hub.cdn_requests) == 1


# --- errors and retries --------------------------------------------------------------------------
@pytest.mark.parametrize("status, code, exc", [
    (404, "RepoNotFound", RepoNotFoundError),
    (401, "", RepoNotFoundError),
    (401, "GatedRepo", GatedRepoError),
    (403, "GatedRepo", GatedRepoError),
    (404, "RevisionNotFound", RevisionNotFoundError),
])
def test_api_errors_are_mapped(rsps, make_client, status, code, exc):
    rsps.add(responses.GET, f"{HUB}/api/models/{REPO}/revision/main", status=status,
             headers={"X-Error-Code": code} if code else {})
    with pytest.raises(exc) as e:
        make_client().repo_info(REPO)
    text = str(e.value)
    assert REPO in text and "\n" not in text and e.value.exit_code == EXIT_HUB
    if exc is GatedRepoError:
        assert (f"request access at {HUB}/{REPO} and log in with `hf auth login` or set HF_TOKEN"
                in text)


@pytest.mark.parametrize("code", ["EntryNotFound", ""])
def test_missing_file_is_entry_not_found(rsps, make_client, code):
    rsps.add(responses.GET, f"{HUB}/{REPO}/resolve/{SHA}/config.json", status=404,
             headers={"X-Error-Code": code} if code else {})
    with pytest.raises(EntryNotFoundError) as e:
        make_client().fetch_file(REPO, SHA, "config.json")
    assert str(e.value).startswith(f"{REPO}: config.json: ")


def test_retries_5xx_then_succeeds_and_honours_retry_after(rsps, make_client):
    url = f"{HUB}/{REPO}/resolve/{SHA}/config.json"
    rsps.add(responses.GET, url, status=429, headers={"Retry-After": "3"})
    rsps.add(responses.GET, url, status=503, headers={"Retry-After": "1000"})
    rsps.add(responses.GET, url, body=CONFIG)
    c = make_client(retries=4)
    pauses: list[float] = []
    c._pause = lambda s, cancel: pauses.append(s)
    assert c.fetch_file(REPO, SHA, "config.json") == CONFIG
    assert pauses == [3.0, 10.0]  # Retry-After honoured, capped at 10 s
    assert c.stats["retries"] == 2 and c.stats["file"] == 3


def test_connection_errors_become_network_error_after_retries(rsps, make_client):
    url = f"{HUB}/{REPO}/resolve/{SHA}/config.json"
    rsps.add(responses.GET, url, body=requests.ConnectionError("connection refused"))
    c = make_client(retries=3)
    with pytest.raises(NetworkError) as e:
        c.fetch_file(REPO, SHA, "config.json")
    assert "check the network or use --offline" in str(e.value)
    assert len(rsps.calls) == 4


def test_token_false_sends_no_token_and_none_reads_hf_token(rsps, make_client, monkeypatch, tmp_path):
    rsps.add(responses.GET, f"{HUB}/api/models/{REPO}/revision/main", json={"sha": SHA, "siblings": []})
    rsps.add(responses.GET, f"{HUB}/api/models/{REPO}/revision/v1", json={"sha": SHA, "siblings": []})
    make_client(token=False).repo_info(REPO)
    assert "Authorization" not in rsps.calls[0].request.headers
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    make_client(token=None, cache_dir=tmp_path / "c2").repo_info(REPO, "v1")
    assert rsps.calls[-1].request.headers["Authorization"] == "Bearer hf_from_env"


# --- offline -------------------------------------------------------------------------------------
def guard_sockets(monkeypatch) -> list:
    """Fail (and record) any attempt to resolve a name or connect a socket."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("a socket was used while offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def no_sockets(monkeypatch):
    return guard_sockets(monkeypatch)


def test_offline_answers_from_cache_and_never_opens_a_socket(make_client, tmp_path, monkeypatch):
    data = long_header_file()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as r:
        hub = FakeHub(r)
        hub.api()
        hub.config()
        hub.lfs("model.safetensors", data)
        c = make_client()
        c.repo_info(REPO)
        c.fetch_file(REPO, SHA, "config.json")
        warm = c.fetch_header(REPO, SHA, "model.safetensors")
        c.close()
    attempts = guard_sockets(monkeypatch)  # guard installed only now, responses inactive
    off = make_client(offline=True, token=None)
    assert off.repo_info(REPO).sha == SHA  # branch -> sha last seen
    assert off.repo_info(REPO, SHA).sha == SHA  # pinned sha works once cached
    assert off.fetch_file(REPO, SHA, "config.json") == CONFIG
    assert off.fetch_header(REPO, SHA, "model.safetensors") == warm
    with pytest.raises(OfflineMissError) as e:
        off.fetch_file(REPO, SHA, "tokenizer.json")
    assert "run `hubvram cache warm org/tiny` with a network first" in str(e.value)
    with pytest.raises(OfflineMissError):
        off.repo_info("org/other")
    assert attempts == []


def test_offline_miss_on_empty_cache(make_client, no_sockets):
    with pytest.raises(OfflineMissError) as e:
        make_client(offline=True).fetch_header(REPO, SHA, "model.safetensors")
    assert e.value.exit_code == EXIT_HUB and no_sockets == []


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    from hubvram.hub import default_cache_dir
    monkeypatch.delenv("HUBVRAM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "hubvram"
    monkeypatch.setenv("HUBVRAM_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert os.fspath(default_cache_dir())
