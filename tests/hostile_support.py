"""Shared by the hostile-network tests: models served by the fake Hub, a CLI runner wired to it, cache readers.

Models are the real configs of fixtures/hub-snapshots with safetensors headers built from hubvram's own
config-derived inventory (``tensors_from_config``), split into shards exactly as the real index says. They are
served under ids that are *not* in the bundled snapshot, so that a network failure cannot be papered over by
the snapshot fallback (``hubvram.api`` answers a known model from the snapshot when the Hub is unreachable).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import sqlite3
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

import hostile_stats
from fakehub import FakeHub, repo_from_snapshot
from helpers import SNAPSHOTS
from hubvram import hub as hub_module
from hubvram.inventory import tensors_from_config

ROOT = Path(__file__).resolve().parents[1]
LLAMA, QWEN, QWEN_MOE = "hostile/llama-3-8b", "hostile/qwen2.5-0.5b", "hostile/qwen3-30b-a3b"
MISTRAL = "hostile/mistral-7b"
#: served id -> (snapshot it is built from, exact trained parameters == Hub total for these three)
MODELS = {
    LLAMA: ("meta-llama/Meta-Llama-3-8B", 8_030_261_248),
    QWEN: ("Qwen/Qwen2.5-0.5B", 494_032_768),
    QWEN_MOE: ("Qwen/Qwen3-30B-A3B", 30_532_122_624),
    MISTRAL: ("mistralai/Mistral-7B-v0.1", 7_241_732_096),
}
TOKEN = "hf_hostileTestToken_7Qz2xK9pWmR4vN8c"  # a known token the security tests look for on disk
#: client settings for the fault tests: every failure ends in seconds, not minutes
FAST_TIMEOUT = (2.0, 1.0)
FAST_RETRIES = 2


@functools.lru_cache(maxsize=None)
def snapshot_files(snapshot_id: str) -> dict:
    """config.json (+ the real index) and VirtualSafetensors shards whose headers hold the config-derived
    inventory; one model.safetensors when the snapshot has no index."""
    cfg = json.loads((SNAPSHOTS / snapshot_id / "config.json").read_text())
    tensors, _ = tensors_from_config(cfg, model=snapshot_id)
    return repo_from_snapshot(SNAPSHOTS / snapshot_id, {t.name: (t.dtype, t.shape) for t in tensors})


def serve(hub: FakeHub, repo_id: str, **kwargs: Any) -> str:
    """Serve one of MODELS (or a snapshot id) on ``hub`` under ``repo_id``; returns the commit sha."""
    source = MODELS[repo_id][0] if repo_id in MODELS else kwargs.pop("snapshot")
    return hub.add_repo(repo_id, dict(snapshot_files(source)), **kwargs)


class FastClient(hub_module.HubClient):
    """HubClient with short timeouts, 2 retries and ~no backoff (the CLI's client, in tests that patch it in)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", FAST_TIMEOUT)
        kwargs.setdefault("retries", FAST_RETRIES)
        super().__init__(**kwargs)
        self._backoff_base = 0.02


class HubEnv:
    """A running fake Hub (CDN on another port *and* host name), a cache folder and a CLI runner on both."""

    def __init__(self, hub: FakeHub, cache: Path, monkeypatch: pytest.MonkeyPatch):
        self.hub, self.cache, self._mp = hub, cache, monkeypatch

    @property
    def db(self) -> Path:
        return self.cache / "http_cache.sqlite"

    def cli(self, *args: str, debug: bool = False) -> Any:
        argv = [*args, "--cache-dir", str(self.cache)] + (["--debug"] if debug else [])
        from hubvram.cli import main

        result = CliRunner().invoke(main, argv)
        if not debug:
            hostile_stats.check_cli(result)
        return result

    def total(self, model: str, *extra: str) -> int:
        """Trained parameters of ``model`` through `hubvram show --format json` (must succeed)."""
        r = self.cli("show", model, "--format", "json", *extra)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)["models"][0]["parameters"]["total"]

    def set_token(self, token: str | None) -> None:
        if token is None:
            self._mp.delenv("HF_TOKEN", raising=False)
        else:
            self._mp.setenv("HF_TOKEN", token)

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBVRAM_", "HUGGING"))}
        env.update(HF_ENDPOINT=self.hub.endpoint, HUBVRAM_CACHE_DIR=str(self.cache),
                   HF_HOME=os.environ["HF_HOME"], PYTHONPATH=str(ROOT / "src"), **extra)
        return env


def make_env(hub: FakeHub, root: Path, monkeypatch: pytest.MonkeyPatch) -> HubEnv:
    """Point the CLI at ``hub`` with the cache in ``root/cache``: no token, no offline flag, an empty HF_HOME,
    and the CLI's HubClient replaced by FastClient."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HUBVRAM_MAX_AGE", "HUBVRAM_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(root / "hf_home"))
    monkeypatch.setattr(hub_module, "HubClient", FastClient)
    return HubEnv(hub, root / "cache", monkeypatch)


@pytest.fixture
def hub_env(make_fakehub, monkeypatch, tmp_path) -> Iterator[HubEnv]:
    """make_env on a fake Hub whose CDN is on another port and host name. Faulted responses the hub served
    are added to the `hostile:` count."""
    hub = make_fakehub(cdn_separate_port=True, cdn_host="localhost")
    yield make_env(hub, tmp_path, monkeypatch)
    hostile_stats.add("faults", sum(1 for r in hub.requests if r.fault))


@contextmanager
def within(seconds: float, at_least: float = 0.0) -> Iterator[None]:
    """Assert that the block took less than ``seconds`` (and at least ``at_least``): no test may hang."""
    t0 = time.monotonic()
    yield
    took = time.monotonic() - t0
    assert at_least <= took < seconds, f"took {took:.2f}s, expected [{at_least}, {seconds})"


def one_line(result: Any) -> str:
    """The single stderr line of a failed CLI run (counted as one hostile input)."""
    return hostile_stats.cli_error(result)


# --- reading the cache ---------------------------------------------------------------------------------------
def cache_rows(db: Path) -> list[dict]:
    """Every response row of the HTTP cache, JSON-decoded (fails if any row is not JSON)."""
    con = sqlite3.connect(db)
    try:
        values = [v for (v,) in con.execute("SELECT value FROM responses")]
    finally:
        con.close()
    return [json.loads(v) for v in values]


def integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def cached_paths(db: Path) -> list[str]:
    """The URL path of every cached response (query dropped), with its Range when it answers one."""
    out = []
    for row in cache_rows(db):
        path = row["url"].split("?")[0].split("/", 3)[-1]
        rng = (row.get("request") or {}).get("headers", {}).get("Range")
        out.append(f"/{path}" + (f" {rng}" if rng else ""))
    return sorted(out)


def check_rows_complete(db: Path) -> None:
    """No cached 200/206 is partial: body length == Content-Length, and a 206 answers exactly its Range."""
    for row in cache_rows(db):
        body = base64.b64decode(row["_content"]) if row.get("_content") else b""
        headers = {k.lower(): v for k, v in row["headers"].items()}
        if "content-length" in headers:
            assert len(body) == int(headers["content-length"]), row["url"]
        if row["status_code"] == 206:
            asked = row["request"]["headers"]["Range"]
            a, b = map(int, asked.split("=")[1].split("-"))
            got = headers["content-range"].split()[1].split("/")[0]
            g0, g1 = map(int, got.split("-"))
            assert g0 == a and g1 <= b and len(body) == g1 - g0 + 1, (row["url"], asked, got)


# --- looking for a secret in files ----------------------------------------------------------------------------
def _encodings(secret: bytes) -> list[bytes]:
    """The secret as it could appear in a file: raw, UTF-16, hex, percent-free, and base64 at each alignment."""
    forms = [secret, secret.decode().encode("utf-16-le"), secret.hex().encode(), secret.hex().upper().encode()]
    for pad in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            b = enc(b"\0" * pad + secret)
            # drop the characters that depend on the unknown neighbours
            forms.append(b[(pad * 4 + 2) // 3 + 1: -3])
    return forms


def _nested_blobs(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """data, and what decompresses or base64-decodes out of it (JSON strings, zlib/gzip streams), recursively."""
    yield data
    if depth >= 3:
        return
    for wbits in (zlib.MAX_WBITS, zlib.MAX_WBITS | 16, -zlib.MAX_WBITS):
        try:
            out = zlib.decompressobj(wbits).decompress(data, 50_000_000)
        except zlib.error:
            continue
        if out:
            yield from _nested_blobs(out, depth + 1)
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    for s in _strings(obj):
        for decoder in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decoder(s + "=" * (-len(s) % 4))
            except (binascii.Error, ValueError):
                continue
            yield from _nested_blobs(raw, depth + 1)


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under root (SQLite rows decoded too) in which ``secret`` appears in any encoding."""
    forms = _encodings(secret.encode())
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        blobs = list(_nested_blobs(path.read_bytes()))
        if path.suffix.startswith(".sqlite") or "sqlite" in path.name:
            try:
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                    for t in tables:
                        for row in con.execute(f'SELECT * FROM "{t}"'):
                            for cell in row:
                                if isinstance(cell, str):
                                    cell = cell.encode()
                                if isinstance(cell, bytes):
                                    blobs.extend(_nested_blobs(cell))
                finally:
                    con.close()
            except sqlite3.Error:
                pass  # -wal/-shm and set-aside files: their raw bytes were searched above
        if any(f in blob for blob in blobs for f in forms):
            found.append(str(path.relative_to(root)))
    return found


def python() -> str:
    return sys.executable
