"""Hostile input gets exactly one line on stderr naming model and file, a documented exit code, no traceback.

Every case of tests/hostile_cases.py runs through the real CLI twice: from a local folder and from the fake Hub.
The results are compared as whole dicts (case -> message) so that one run shows every difference.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import hostile_stats
from fakehub import VirtualSafetensors, build_safetensors_header
from hostile_cases import CONFIGS, HARMLESS_CONFIGS, HEADERS, INDEXES, MODEL_REFS, SHARD_B
from hostile_support import MODELS, QWEN, hub_env, one_line, snapshot_files
from hubvram.cli import main

assert hub_env

QWEN_FILES = snapshot_files(MODELS[QWEN][0])
QWEN_CONFIG: bytes = QWEN_FILES["config.json"]
QWEN_WEIGHTS: VirtualSafetensors = QWEN_FILES["model.safetensors"]
#: through the Hub a 0-byte file cannot even be range-read
HUB_HEADER_MESSAGES = {"empty-file": "file is empty (the server refused the byte range)"}


def _repo(kind: str, name: str) -> str:
    return f"hostile/{kind}-" + re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    hostile_stats.check_cli(result)
    return result


def _write_virtual(path: Path, blob: VirtualSafetensors) -> None:
    """The header for real, the data section as a hole."""
    with path.open("wb") as f:
        f.write(blob.read(0, 8 + len(blob.header_bytes)))
        f.truncate(blob.size)


def _local(root: Path, name: str, files: dict[str, bytes | VirtualSafetensors]) -> Path:
    folder = root / name
    folder.mkdir()
    for fname, content in files.items():
        if isinstance(content, VirtualSafetensors):
            _write_virtual(folder / fname, content)
        else:
            (folder / fname).write_bytes(content)
    return folder.resolve()


def _failures(results: dict[str, object]) -> dict[str, tuple[int, str]]:
    """case -> (exit code, the one stderr line)"""
    return {name: (r.exit_code, one_line(r)) for name, r in results.items()}


# --- model references ----------------------------------------------------------------------------------------
def test_malformed_model_references(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBVRAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may reach a network
    got = _failures({name: _cli("show", "--", ref) for name, (ref, _) in MODEL_REFS.items()})
    assert got == {name: (2, message) for name, (_, message) in MODEL_REFS.items()}


# --- config.json ---------------------------------------------------------------------------------------------
def test_hostile_configs_in_local_folders(tmp_path):
    folders = {name: _local(tmp_path, name, {"config.json": data, "model.safetensors": QWEN_WEIGHTS})
               for name, (data, _) in CONFIGS.items()}
    got = _failures({name: _cli("show", str(folder)) for name, folder in folders.items()})
    assert got == {name: (2, f"hubvram: error: {folders[name]}: config.json: {message}")
                   for name, (_, message) in CONFIGS.items()}


def test_hostile_configs_from_the_hub(hub_env):
    for name, (data, _) in CONFIGS.items():
        hub_env.hub.add_repo(_repo("cfg", name), {"config.json": data, "model.safetensors": QWEN_WEIGHTS})
    got = _failures({name: hub_env.cli("show", _repo("cfg", name)) for name in CONFIGS})
    assert got == {name: (2, f"hubvram: error: {_repo('cfg', name)}: config.json: {message}")
                   for name, (_, message) in CONFIGS.items()}


def test_odd_but_harmless_configs_are_answered(tmp_path):
    for name, data in HARMLESS_CONFIGS.items():
        hostile_stats.add("hostile_inputs")
        folder = _local(tmp_path, name, {"config.json": data, "model.safetensors": QWEN_WEIGHTS})
        r = _cli("show", str(folder), "--format", "json")
        assert r.exit_code == 0, (name, r.output)
        assert json.loads(r.stdout)["models"][0]["parameters"]["total"] == MODELS[QWEN][1], name


def test_debug_shows_the_traceback(tmp_path):
    folder = _local(tmp_path, "bad", {"config.json": CONFIGS["NaN-hidden"][0]})
    r = CliRunner().invoke(main, ["show", str(folder), "--debug"])
    assert type(r.exception).__name__ == "ConfigError" and r.exit_code == 1


# --- safetensors headers ---------------------------------------------------------------------------------------
def test_hostile_headers_in_local_folders(tmp_path):
    folders = {name: _local(tmp_path, name, {"config.json": QWEN_CONFIG, "model.safetensors": data})
               for name, (data, _) in HEADERS.items()}
    got = _failures({name: _cli("show", str(folder)) for name, folder in folders.items()})
    assert got == {name: (2, f"hubvram: error: {folders[name]}: model.safetensors: {message}")
                   for name, (_, message) in HEADERS.items()}


def test_hostile_headers_from_the_hub(hub_env):
    for name, (data, _) in HEADERS.items():
        hub_env.hub.add_repo(_repo("st", name), {"config.json": QWEN_CONFIG, "model.safetensors": data})
    got = _failures({name: hub_env.cli("show", _repo("st", name)) for name in HEADERS})
    assert got == {name: (2, f"hubvram: error: {_repo('st', name)}: model.safetensors: "
                             f"{HUB_HEADER_MESSAGES.get(name, message)}")
                   for name, (_, message) in HEADERS.items()}
    assert not [x for x in hub_env.hub.requests if x.server == "cdn" and x.range is None]  # Range reads only


# --- index files -----------------------------------------------------------------------------------------------
def _index_files(data: bytes, shards: dict[str, dict]) -> dict[str, bytes | VirtualSafetensors]:
    files: dict[str, bytes | VirtualSafetensors] = {"config.json": QWEN_CONFIG, "model.safetensors.index.json": data}
    for shard, tensors in shards.items():
        files[shard] = VirtualSafetensors(*build_safetensors_header(tensors))
    return files


def _index_message(name: str, message: str | None, where: str) -> str:
    if message is not None:
        return message
    return f"index names shard {SHARD_B}, which " + ("is not in the folder" if where == "local" else
                                                      "the repo does not have")


def test_hostile_indexes_in_local_folders(tmp_path):
    folders = {name: _local(tmp_path, name, _index_files(data, shards))
               for name, (data, shards, _) in INDEXES.items()}
    got = _failures({name: _cli("show", str(folder)) for name, folder in folders.items()})
    assert got == {name: (2, f"hubvram: error: {folders[name]}: model.safetensors.index.json: "
                             f"{_index_message(name, message, 'local')}")
                   for name, (_, _, message) in INDEXES.items()}


def test_hostile_indexes_from_the_hub(hub_env):
    for name, (data, shards, _) in INDEXES.items():
        hub_env.hub.add_repo(_repo("idx", name), _index_files(data, shards))
    got = _failures({name: hub_env.cli("show", _repo("idx", name)) for name in INDEXES})
    assert got == {name: (2, f"hubvram: error: {_repo('idx', name)}: model.safetensors.index.json: "
                             f"{_index_message(name, message, 'hub')}")
                   for name, (_, _, message) in INDEXES.items()}
    fetched = {x.path.split("/resolve/")[-1].split("/", 1)[-1] for x in hub_env.hub.requests if "/resolve/" in x.path}
    assert fetched <= {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                       "model-00002-of-00002.safetensors"}  # an unsafe name is never requested


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd"])
def test_a_local_index_cannot_make_hubvram_read_outside_the_folder(tmp_path, target):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"secret")
    folder = _local(tmp_path, "m", _index_files(json.dumps({"weight_map": {"w": target}}).encode(), {}))
    r = _cli("show", str(folder))
    assert r.exit_code == 2
    assert one_line(r) == (f"hubvram: error: {folder}: model.safetensors.index.json: index maps 'w' to an unsafe "
                           f"shard name {target!r}")


def test_a_huge_config_is_refused_unread(hub_env):
    """A 2 GB config.json (LFS, behind the CDN) is refused from its Content-Length, not downloaded."""
    hub_env.hub.add_repo("hostile/huge-config", {"config.json": VirtualSafetensors(b"{}", 2_000_000_000)})
    r = hub_env.cli("show", "hostile/huge-config")
    assert r.exit_code == 2
    assert one_line(r) == ("hubvram: error: hostile/huge-config: config.json: file is 2000000010 bytes, larger than "
                           "the 50000000-byte limit")
    assert not list(hub_env.cache.glob("*.corrupt-*")) and hub_env.db.stat().st_size < 1_000_000
