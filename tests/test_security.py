"""The token never lands on disk, the cache holds no pickle, nothing from a repository runs, files are private."""

from __future__ import annotations

import base64
import gzip
import json
import os
import pickle
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

import hostile_stats
from fakehub import VirtualSafetensors, build_safetensors_header
from hostile_support import (LLAMA, MODELS, QWEN, TOKEN, cache_rows, files_holding, hub_env, make_env, one_line,
                             serve, snapshot_files)

assert hub_env

# --- the token ---------------------------------------------------------------------------------------------------


def test_the_scanner_finds_the_token_in_every_disguise(tmp_path):
    """files_holding is only worth something if it finds what it looks for."""
    secret = TOKEN.encode()
    (tmp_path / "raw").write_bytes(b"xx Bearer " + secret + b" yy")
    (tmp_path / "b64").write_bytes(base64.b64encode(b"Authorization: Bearer " + secret + b"\r\n"))
    (tmp_path / "gz").write_bytes(gzip.compress(b"{'h': 'Bearer " + secret + b"'}"))
    (tmp_path / "utf16").write_bytes(("header: " + TOKEN).encode("utf-16-le"))
    inner = base64.b64encode(gzip.compress(json.dumps({"Authorization": f"Bearer {TOKEN}"}).encode())).decode()
    db = tmp_path / "rows.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE responses (key TEXT, value BLOB)")
    con.execute("INSERT INTO responses VALUES ('k', ?)", (json.dumps({"_content": inner}),))
    con.commit()
    con.close()
    (tmp_path / "clean").write_bytes(b"hf_hostileTestToken_ but not the rest")
    assert files_holding(tmp_path, TOKEN) == ["b64", "gz", "raw", "rows.sqlite", "utf16"]


@pytest.mark.parametrize("cdn", ["cdn-on-another-host", "cdn-same-origin"])
def test_token_never_lands_on_disk(make_fakehub, monkeypatch, tmp_path, cdn):
    """A known token, gated and private repos, 302s to the CDN (same origin: the token follows the redirect,
    as it does on the Hub), a Hub error answered with the token: then every byte of every file under the cache
    folder (SQLite rows decoded, base64 and compressed content unpacked) is searched for it."""
    hub = make_fakehub(cdn_separate_port=True, cdn_host="localhost") if cdn == "cdn-on-another-host" \
        else make_fakehub()
    env = make_env(hub, tmp_path, monkeypatch)
    serve(hub, LLAMA, gated="manual", token=TOKEN)
    serve(hub, QWEN, private=True, token=TOKEN)
    env.set_token(TOKEN)
    assert env.total(LLAMA) == MODELS[LLAMA][1]
    env.set_token(None)
    assert env.total(QWEN, "--token", TOKEN) == MODELS[QWEN][1]  # the --token option, too
    env.set_token(TOKEN)
    r = env.cli("show", f"{LLAMA}@no-such-branch")
    assert r.exit_code == 3
    assert env.total(LLAMA) == MODELS[LLAMA][1]  # a second run: cache hits, revalidation

    resolve = [x for x in hub.requests if "/resolve/" in x.path]
    assert resolve and all(x.authorization == f"Bearer {TOKEN}" for x in resolve)  # the token was really used
    cdn_requests = [x for x in hub.requests if x.path.startswith("/cdn/")]
    assert cdn_requests
    if cdn == "cdn-on-another-host":
        assert all(x.authorization is None for x in cdn_requests)  # never sent to another host

    leaks = files_holding(tmp_path, TOKEN)  # the cache folder and HF_HOME
    if leaks:
        hostile_stats.add("token_leaks", len(leaks))
    assert leaks == []
    assert len(list((tmp_path / "cache").rglob("*"))) >= 1


# --- no pickle, and a pickle planted in the cache does not run ---------------------------------------------------
def test_cache_holds_only_json_rows(hub_env):
    serve(hub_env.hub, LLAMA)
    assert hub_env.total(LLAMA) == MODELS[LLAMA][1]
    con = sqlite3.connect(hub_env.db)
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert set(tables) == {"responses", "redirects"}
        values = [v for t in tables for (v,) in con.execute(f'SELECT value FROM "{t}"')]
    finally:
        con.close()
    assert values
    for v in values:
        raw = v.encode() if isinstance(v, str) else v
        assert not raw.startswith(b"\x80"), "a pickle (protocol 2+) row"
        if raw[:1] in (b"{", b"["):
            json.loads(raw)
        else:  # redirects rows hold the key of the response they point to
            assert raw.isalnum() and len(raw) <= 64, raw
    assert len(cache_rows(hub_env.db)) >= 7  # api x2, config, index, 4 headers (+ redirect histories)


class _Evil:
    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_pickle_planted_in_the_cache_is_never_loaded(hub_env, tmp_path):
    serve(hub_env.hub, QWEN)
    assert hub_env.total(QWEN) == MODELS[QWEN][1]
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    payload = pickle.dumps(evil)
    con = sqlite3.connect(hub_env.db)
    con.execute("UPDATE responses SET value = ?", (payload,))
    con.commit()
    con.close()
    hub_env.hub.requests.clear()
    shutil.rmtree(hub_env.db.parent / "memo")  # (the memo would answer without reading a row)
    assert hub_env.total(QWEN) == MODELS[QWEN][1]  # every row unreadable: a miss, fetched again
    assert not evil.marker.exists()
    assert any(x.server == "cdn" for x in hub_env.hub.requests)


# --- nothing from a repository is executed, nothing but metadata is fetched --------------------------------------
EVIL_PY = "import pathlib; pathlib.Path({marker!r}).write_text('pwned')\n"


def test_remote_code_is_neither_fetched_nor_run(hub_env, tmp_path):
    marker = str(tmp_path / "pwned")
    files = dict(snapshot_files(MODELS[QWEN][0]))
    cfg = json.loads(files["config.json"])
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                       "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    files["config.json"] = json.dumps(cfg).encode()
    for name in ("modeling_evil.py", "configuration_evil.py", "tokenization_evil.py", "setup.py", "__init__.py"):
        files[name] = EVIL_PY.format(marker=marker).encode()
    files["pytorch_model.bin"] = b"\x80\x04a pickle that must never be fetched"
    hub_env.hub.add_repo("hostile/remote-code", files)
    assert hub_env.total("hostile/remote-code") == MODELS[QWEN][1]
    asked = {x.path.split("/resolve/")[-1].split("/", 1)[-1] for x in hub_env.hub.requests if "/resolve/" in x.path}
    # (the index is asked, and found missing, together with the revision lookup)
    assert asked == {"config.json", "model.safetensors.index.json", "model.safetensors"}
    assert not Path(marker).exists()


def test_bin_only_repo_is_derived_from_config_without_touching_the_pickle(hub_env):
    files = {"config.json": snapshot_files(MODELS[QWEN][0])["config.json"],
             "pytorch_model.bin": VirtualSafetensors(b"\x80\x04not-a-safetensors-file", 10)}
    hub_env.hub.add_repo("hostile/bin-only", files)
    assert hub_env.total("hostile/bin-only") == MODELS[QWEN][1]
    assert not [x for x in hub_env.hub.requests if x.path.endswith(".bin") or x.server == "cdn"]


def test_index_pointing_at_code_is_refused_before_any_request(hub_env):
    files = dict(snapshot_files(MODELS[QWEN][0]))
    header, n = build_safetensors_header({"w": ("F32", (2,))})
    files["model.safetensors"] = VirtualSafetensors(header, n)
    files["model.safetensors.index.json"] = json.dumps({"weight_map": {"w": "modeling_evil.py"}}).encode()
    files["modeling_evil.py"] = b"raise SystemExit('ran')\n"
    hub_env.hub.add_repo("hostile/code-shard", files)
    r = hub_env.cli("show", "hostile/code-shard")
    assert r.exit_code == 2
    assert one_line(r) == ("hubvram: error: hostile/code-shard: model.safetensors.index.json: index maps 'w' to an "
                           "unsafe shard name 'modeling_evil.py'")
    assert not [x for x in hub_env.hub.requests if x.path.endswith(".py")]


# --- private files -------------------------------------------------------------------------------------------------
def test_cache_files_are_readable_by_the_user_only(hub_env):
    old = os.umask(0)  # the most permissive umask: the modes must come from hubvram itself
    try:
        serve(hub_env.hub, LLAMA)
        assert hub_env.total(LLAMA) == MODELS[LLAMA][1]
        hub_env.db.write_bytes(b"garbage")  # and after a repair
        os.chmod(hub_env.db, 0o600)
        assert hub_env.total(LLAMA) == MODELS[LLAMA][1]
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(hub_env.cache).st_mode) == 0o700
    entries = list(hub_env.cache.rglob("*"))
    assert {p.name for p in entries} >= {"http_cache.sqlite", "http_cache.sqlite.lock"}
    for p in entries:
        mode = stat.S_IMODE(os.lstat(p).st_mode)
        assert mode & 0o077 == 0, f"{p.name} is {oct(mode)}"
