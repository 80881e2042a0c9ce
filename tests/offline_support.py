"""Shared helpers for tests/test_offline.py and tests/test_cache.py: a fresh environment, a socket guard,
models served by the fake Hub, the CLI runner, and a fingerprint of a folder (names + sha256 of files)."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fakehub import VirtualSafetensors, build_safetensors_header, repo_from_snapshot
from helpers import SNAPSHOTS, snapshot_config
from hubvram.cli import main
from hubvram.inventory import tensors_from_config

#: A small real-shaped Llama config (not in the bundled snapshot): a fast model for archive tests.
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 1000, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "hidden_act": "silu"}
TINY_TOTAL = 1000 * 64 * 2 + 2 * (64 * 64 * 2 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64) + 64


@pytest.fixture
def fresh_env(tmp_path, monkeypatch) -> Path:
    """An empty HUBVRAM_CACHE_DIR (not created), a private HOME/HF_HOME, no token, no offline switch."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HUBVRAM_MAX_AGE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    cache_dir = tmp_path / "hubvram-cache"
    monkeypatch.setenv("HUBVRAM_CACHE_DIR", str(cache_dir))
    import hubvram.hub
    monkeypatch.setattr(hubvram.hub, "hub_token", lambda: None)  # never a real token file
    return cache_dir


@pytest.fixture
def network_off(monkeypatch):
    """Call it to make every socket connect / name lookup fail; returns the list of attempts (must stay [])."""
    attempts: list[Any] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:3] if args and isinstance(args[0], socket.socket) else args[:2])
        raise OSError("network disabled by the test")

    def install() -> list[Any]:
        for obj, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                          (socket, "create_connection"), (socket, "getaddrinfo")):
            monkeypatch.setattr(obj, name, refuse)
        return attempts

    yield install
    assert attempts == [], f"the network was used: {attempts}"


@pytest.fixture
def endpoint(monkeypatch):
    """Point hubvram (through huggingface_hub's constants) at a fake Hub."""
    from huggingface_hub import constants

    def use(hub) -> str:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        return hub.endpoint
    return use


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def cli_json(*args: str, env: dict[str, str] | None = None) -> Any:
    r = cli(*args, "--format", "json", env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def spec(tensors) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t.name: (t.dtype, t.shape) for t in tensors}


def serve_config(hub, repo_id: str, config: dict, branch: str = "main") -> tuple[str, dict]:
    """One model.safetensors whose header holds the inventory hubvram's rules derive from ``config``."""
    tensors = spec(tensors_from_config(config, model=repo_id)[0])
    header, n = build_safetensors_header(tensors, {"format": "pt"})
    sha = hub.add_repo(repo_id, {"config.json": json.dumps(config), "model.safetensors": VirtualSafetensors(header, n)},
                       branch=branch)
    return sha, tensors


def serve_indexed(hub, model: str) -> tuple[str, dict]:
    """The real config.json and model.safetensors.index.json of ``model`` (fixtures), sharded as indexed."""
    cfg = snapshot_config(model)
    tensors = spec(tensors_from_config(cfg, model=model)[0])
    return hub.add_repo(model, repo_from_snapshot(SNAPSHOTS / model, tensors)), tensors


def serve_bin_only(hub, model: str = "meta-llama/Llama-2-7b-hf") -> str:
    """config.json + pytorch_model.bin.index.json only: the inventory is derived from config.json."""
    return hub.add_repo(model, repo_from_snapshot(SNAPSHOTS / model, include=("config.json", "pytorch_model.bin.index.json")))


def warm_and_reimport(hub, repo_id: str, config: dict, archive: Path) -> Any:
    """Serve ``repo_id``, ``cache warm`` it, export the cache to ``archive``, clear it, import it back:
    the model then lives only in the imported metadata store. Returns what ``cache.import_`` returned."""
    from hubvram import cache

    serve_config(hub, repo_id, config)
    assert cli("cache", "warm", repo_id).exit_code == 0
    cache.export(archive)
    cache.clear()
    return cache.import_(archive)


def fingerprint(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root (folders as "dir"); {} when root does not exist."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def without_provenance(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for m in doc["models"]:
        m.pop("provenance")
    return doc
