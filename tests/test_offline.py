"""Offline: the README's main command with no network (bundled snapshot), a model answered again from the HTTP
cache with the network off, export -> clear -> import, rejected archives, and the offline miss. No test here
reaches a network: the fake Hub listens on 127.0.0.1 and every other socket use fails the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

from hubvram import cache, snapshot
from hubvram.errors import EXIT_HUB, EXIT_INPUT, CacheError

from offline_support import (TINY, TINY_TOTAL, cli, cli_json, endpoint, fingerprint, fresh_env,  # noqa: F401
                             network_off, serve_bin_only, serve_config, serve_indexed, warm_and_reimport, without_provenance)

README_MODEL = "meta-llama/Meta-Llama-3-8B"
RECORDED = json.loads((snapshot.snapshot_dir() / "meta-llama--Meta-Llama-3-8B.json").read_text())["recorded"]


# --------------------------------------------------------------------------------------------------
# The README's main command on a fresh machine with no network: the bundled snapshot
# --------------------------------------------------------------------------------------------------
def _check_snapshot_answer(text: str) -> None:
    assert f"{README_MODEL}  (LlamaForCausalLM, snapshot: bundled snapshot, recorded {RECORDED})" in text
    assert "Parameters: 8,030,261,248 (8.03B)" in text
    assert "attention  1,342,177,280  16.71 %" in text
    assert "mlp        5,637,144,576  70.20 %" in text
    assert "heads / kv heads  32 / 8" in text


@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_readme_main_command_with_no_network_answers_from_the_snapshot(fresh_env, network_off, how, monkeypatch):
    attempts = network_off()
    args = [README_MODEL]
    if how == "--offline":
        args.append("--offline")
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    _check_snapshot_answer(r.stdout)
    doc = cli_json(*args)
    m = doc["models"][0]
    assert (m["id"], m["source"], m["revision"]) == (README_MODEL, "snapshot", None)
    assert m["parameters"]["total"] == m["parameters"]["hub_total"] == 8_030_261_248
    assert {k: v for k, v in m["parameters"]["by_group"].items() if v} == {
        "embedding": 525_336_576, "attention": 1_342_177_280, "mlp": 5_637_144_576, "norms": 266_240,
        "lm_head": 525_336_576}
    assert m["provenance"]["revision"] == f"bundled snapshot, recorded {RECORDED}"
    assert m["provenance"]["recorded"] == RECORDED
    assert not fresh_env.exists(), "an offline answer from the snapshot must not create the cache"
    assert attempts == []


_SITECUSTOMIZE = textwrap.dedent("""
    import atexit, json, os, socket, sys
    _log = os.environ["HUBVRAM_TEST_GUARD"]
    open(_log + ".loaded", "w").close()
    def _refuse(*args, **kwargs):
        with open(_log, "a") as f:
            f.write(repr(args[1:3]) + "\\n")
        raise OSError("network disabled by the test")
    socket.socket.connect = socket.socket.connect_ex = _refuse
    socket.create_connection = socket.getaddrinfo = _refuse
    @atexit.register
    def _modules():
        heavy = ("requests", "requests_cache", "huggingface_hub", "urllib3", "httpx")
        with open(_log + ".modules", "w") as f:
            json.dump(sorted(m for m in sys.modules if m.split(".")[0] in heavy), f)
""")


def run_guarded(tmp_path: Path, args: list[str], env_extra: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    """``python -m hubvram ARGS`` in a fresh environment where any socket connect or lookup fails (and is logged)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    guard = tmp_path / "guard.log"
    home = tmp_path / "subhome"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": str(site),
           "HUBVRAM_CACHE_DIR": str(tmp_path / "sub-cache"), "HF_HOME": str(home / "hf"),
           "HUBVRAM_TEST_GUARD": str(guard), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", **env_extra}
    proc = subprocess.run([sys.executable, "-m", "hubvram", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert (tmp_path / "guard.log.loaded").exists(), "the socket guard did not load"
    return proc, guard


@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_readme_main_command_in_a_real_process_with_no_network(tmp_path, how):
    args, extra = ([README_MODEL, "--offline"], {}) if how == "--offline" else ([README_MODEL], {"HF_HUB_OFFLINE": "1"})
    proc, guard = run_guarded(tmp_path, args, extra)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    _check_snapshot_answer(proc.stdout)
    assert not guard.exists(), guard.read_text()                      # no socket was even tried
    assert json.loads(Path(f"{guard}.modules").read_text()) == []     # the fast path: no HTTP stack imported
    assert not (tmp_path / "sub-cache").exists()


# --------------------------------------------------------------------------------------------------
# Fetched once through the (fake) Hub, answered again with the network off
# --------------------------------------------------------------------------------------------------
def test_model_fetched_once_is_answered_offline_with_the_same_json(fakehub, fresh_env, endpoint, network_off,
                                                                    monkeypatch):
    endpoint(fakehub)
    sha, _ = serve_indexed(fakehub, README_MODEL)  # the real index: 4 shards, real tensor names
    online = cli_json(README_MODEL)
    m = online["models"][0]
    assert (m["source"], m["revision"]) == ("hub", sha)
    assert m["parameters"]["total"] == 8_030_261_248
    assert m["provenance"]["tensors"] == f"safetensors headers of 4 shard(s) at {sha[:12]}"
    fakehub.stop()
    attempts = network_off()
    # the HTTP cache wins over the bundled snapshot, at the revision fetched; the branch resolves to its sha
    assert cli_json(README_MODEL, "--offline") == online
    assert cli_json(f"{README_MODEL}@main", "--offline") == online
    assert cli_json(f"{README_MODEL}@{sha}", "--offline") == online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli_json(README_MODEL) == online
    r = cli(README_MODEL)
    assert r.exit_code == 0 and f"{README_MODEL}  (LlamaForCausalLM, hub: {sha})" in r.stdout
    assert attempts == []


def test_branch_offline_resolves_to_the_sha_last_seen_and_pinned_shas_keep_working(fakehub, fresh_env, endpoint,
                                                                                   network_off):
    endpoint(fakehub)
    old_sha, _ = serve_config(fakehub, "org/tiny", TINY)
    old = cli_json("org/tiny")
    bigger = dict(TINY, num_hidden_layers=3)
    new_sha, _ = serve_config(fakehub, "org/tiny", bigger)  # main moves to a new commit
    new = cli_json("org/tiny")
    assert old["models"][0]["revision"] == old_sha != new_sha == new["models"][0]["revision"]
    assert new["models"][0]["parameters"]["total"] > old["models"][0]["parameters"]["total"] == TINY_TOTAL
    fakehub.stop()
    attempts = network_off()
    assert cli_json("org/tiny", "--offline") == new
    assert cli_json("org/tiny@main", "--offline") == new
    assert cli_json(f"org/tiny@{old_sha}", "--offline") == old
    assert cli_json(f"org/tiny@{new_sha}", "--offline") == new
    r = cli("org/tiny@some-branch", "--offline")
    assert r.exit_code == EXIT_HUB and "org/tiny@some-branch" in r.stderr
    assert attempts == []


def test_stale_entries_still_answer_offline(fakehub, fresh_env, endpoint, network_off, monkeypatch):
    endpoint(fakehub)
    serve_config(fakehub, "org/tiny", TINY)
    online = cli_json("org/tiny", env={"HUBVRAM_MAX_AGE": "1s"})
    time.sleep(1.2)  # every entry is now past its max age
    fakehub.stop()
    attempts = network_off()
    assert cli_json("org/tiny", "--offline", env={"HUBVRAM_MAX_AGE": "1s"}) == online
    assert attempts == []


def test_network_unreachable_online_falls_back_to_the_http_cache_with_a_warning(fakehub, fresh_env, endpoint,
                                                                                network_off):
    endpoint(fakehub)
    sha, _ = serve_config(fakehub, "org/tiny", TINY)
    online = cli_json("org/tiny")
    fakehub.stop()
    import hubvram.hub
    hubvram.hub.TOTAL_BUDGET_S, saved = 0.5, hubvram.hub.TOTAL_BUDGET_S
    try:
        attempts = network_off()
        doc = cli_json("org/tiny")  # not offline: the lookup fails, the cache answers
    finally:
        hubvram.hub.TOTAL_BUDGET_S = saved
    assert attempts, "the online lookup should have tried the network"
    attempts.clear()
    warnings = doc["models"][0].pop("warnings")
    assert len(warnings) == 1 and warnings[0].startswith("network unreachable")
    assert warnings[0].endswith(f"answered from the HTTP cache (commit {sha})")
    online["models"][0].pop("warnings")
    assert doc == online


# --------------------------------------------------------------------------------------------------
# export -> clear -> import -> the same offline answer
# --------------------------------------------------------------------------------------------------
MODELS = [README_MODEL, "meta-llama/Llama-2-7b-hf", "org/tiny"]


def test_export_clear_import_gives_the_same_offline_answer(fakehub, fresh_env, endpoint, network_off, tmp_path):
    endpoint(fakehub)
    shas = {README_MODEL: serve_indexed(fakehub, README_MODEL)[0],
            "meta-llama/Llama-2-7b-hf": serve_bin_only(fakehub),        # inventory derived from config.json
            "org/tiny": serve_config(fakehub, "org/tiny", TINY)[0]}
    r = cli("cache", "warm", *MODELS)
    assert r.exit_code == 0, r.output
    fakehub.stop()
    attempts = network_off()
    before = {m: cli_json(m, "--offline") for m in MODELS}
    assert before["meta-llama/Llama-2-7b-hf"]["models"][0]["parameters"]["buffers"] == 2048  # from the bin index
    archive = tmp_path / "carry" / "models.hubvram.gz"
    archive.parent.mkdir()
    r = cli("cache", "export", str(archive))
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"wrote 3 entries (3 models) to {archive} (")

    r = cli("cache", "clear")
    assert r.exit_code == 0 and r.stdout.startswith("removed ")
    assert cli("cache", "ls").stdout == f"nothing cached in {fresh_env}\n"
    r = cli("org/tiny", "--offline")
    assert r.exit_code == EXIT_HUB  # really gone

    r = cli("cache", "import", str(archive))
    assert r.exit_code == 0, r.output
    assert r.stdout == f"imported 3 entries (3 new, 3 models) from {archive} into {fresh_env / 'metadata'}\n"
    for m in MODELS:
        after = cli_json(m, "--offline")
        assert without_provenance(after) == without_provenance(before[m])
        prov, prov0 = after["models"][0]["provenance"], before[m]["models"][0]["provenance"]
        assert prov["config"] == f"{prov0['config']} (imported metadata, recorded {prov['recorded']})"
        assert (prov["tensors"], prov["revision"]) == (prov0["tensors"], prov0["revision"]) == \
            (prov0["tensors"], shas[m])
        assert cli_json(f"{m}@{shas[m]}", "--offline")["models"][0]["parameters"] == \
            before[m]["models"][0]["parameters"]
        assert cli_json(f"{m}@main", "--offline")["models"][0]["revision"] == shas[m]
    r = cli(README_MODEL, "--offline")
    assert "Parameters: 8,030,261,248 (8.03B)" in r.stdout
    assert "(imported metadata, recorded " in r.stdout
    assert attempts == []


def test_answers_from_the_metadata_store_need_no_http_stack(fakehub, fresh_env, endpoint, tmp_path):
    endpoint(fakehub)
    warm_and_reimport(fakehub, "org/tiny", TINY, tmp_path / "a.gz")
    proc, guard = run_guarded(tmp_path, ["org/tiny", "--offline", "--format", "json"],
                              {"HUBVRAM_CACHE_DIR": str(fresh_env)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["models"][0]["parameters"]["total"] == TINY_TOTAL
    assert not guard.exists()
    assert json.loads(Path(f"{guard}.modules").read_text()) == []


def test_an_http_cache_without_the_model_does_not_slow_the_snapshot_answer(fakehub, fresh_env, endpoint, tmp_path):
    endpoint(fakehub)
    serve_config(fakehub, "org/tiny", TINY)
    assert cli("cache", "warm", "org/tiny").exit_code == 0
    env = {"HUBVRAM_CACHE_DIR": str(fresh_env), "HF_ENDPOINT": fakehub.endpoint}
    fakehub.stop()
    proc, guard = run_guarded(tmp_path, [README_MODEL, "--offline"], env)
    assert proc.returncode == 0, proc.stderr
    _check_snapshot_answer(proc.stdout)
    assert json.loads(Path(f"{guard}.modules").read_text()) == []  # answered without the HTTP stack
    proc, guard = run_guarded(tmp_path, ["org/tiny", "--offline", "--format", "json"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["models"][0]["parameters"]["total"] == TINY_TOTAL  # from the HTTP cache
    assert json.loads(Path(f"{guard}.modules").read_text()) == []  # read with sqlite3 (hubvram.httpcache)
    assert not guard.exists()


# --------------------------------------------------------------------------------------------------
# Tampered or truncated archives are rejected and change nothing
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def archive_and_store(fakehub, fresh_env, endpoint, tmp_path):
    """A small export, and a cache holding an imported entry and an HTTP-cache entry."""
    endpoint(fakehub)
    serve_config(fakehub, "org/other", dict(TINY, hidden_size=32))
    archive = tmp_path / "tiny.hubvram.gz"
    warm_and_reimport(fakehub, "org/tiny", TINY, archive)
    assert cli("cache", "warm", "org/other").exit_code == 0
    return archive, archive.read_bytes(), fresh_env


def _rejected(path: Path, cache_dir: Path) -> CacheError:
    with pytest.raises(CacheError) as e:
        cache.import_(path, cache_dir)
    assert e.value.exit_code == EXIT_INPUT and "\n" not in str(e.value)
    return e.value


def test_every_single_byte_flip_and_every_truncation_is_rejected(archive_and_store, tmp_path):
    archive, data, cache_dir = archive_and_store
    before = fingerprint(cache_dir)
    bad = tmp_path / "bad.gz"
    for i in range(len(data)):
        bad.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        _rejected(bad, cache_dir)
    for n in range(len(data)):
        bad.write_bytes(data[:n])
        _rejected(bad, cache_dir)
    bad.write_bytes(data + b"\0")
    _rejected(bad, cache_dir)
    assert fingerprint(cache_dir) == before
    cache.import_(archive, cache_dir)  # the original still imports
    assert fingerprint(cache_dir) == before  # ... and changes nothing: same entries


def _rewrite(data: bytes, edit, *, fix_document_checksum=False, fix_entry_checksum=False) -> bytes:
    doc = json.loads(cache._gunzip(data, file="x"))
    edit(doc)
    if fix_entry_checksum:
        for item in doc["entries"]:
            item["sha256"] = cache._sha256({"entry": item["entry"], "refs": item["refs"]})
    if fix_document_checksum:
        doc.pop("sha256")
        doc["sha256"] = cache._sha256(doc)
    return cache._gzip(cache.canonical_json(doc))


def _set_first_shape(doc):
    doc["entries"][0]["entry"]["tensors"][0][2][0] += 1


def _drop_entry(doc):
    doc["entries"].pop()


def _wrong_model(doc):
    doc["entries"][0]["entry"]["model_id"] = "not a model id"


def _no_sha(doc):
    doc["entries"][0]["entry"]["revision"] = None


@pytest.mark.parametrize("edit,fixes,message", [
    (_set_first_shape, {}, "archive checksum mismatch"),
    (_set_first_shape, {"fix_document_checksum": True}, "entry 1 checksum mismatch"),
    (_set_first_shape, {"fix_document_checksum": True, "fix_entry_checksum": False}, "entry 1 checksum mismatch"),
    (_drop_entry, {"fix_document_checksum": True}, "entry count does not match"),
    (_wrong_model, {"fix_document_checksum": True, "fix_entry_checksum": True}, "model_id missing or malformed"),
    (_no_sha, {"fix_document_checksum": True, "fix_entry_checksum": True}, "has no commit sha"),
])
def test_edited_archives_are_rejected_with_one_line(archive_and_store, tmp_path, edit, fixes, message):
    archive, data, cache_dir = archive_and_store
    before = fingerprint(cache_dir)
    bad = tmp_path / "edited.gz"
    bad.write_bytes(_rewrite(data, edit, **fixes))
    err = _rejected(bad, cache_dir)
    assert message in str(err) and "the cache was not changed" in str(err)
    r = cli("cache", "import", str(bad))
    assert r.exit_code == EXIT_INPUT
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("hubvram: error: edited.gz: rejected:")
    assert fingerprint(cache_dir) == before


def test_a_shape_edit_with_both_checksums_recomputed_is_caught_by_the_entry_check(archive_and_store, tmp_path):
    """Checksums catch accidents, not forgery: a consistent forgery must still be a valid entry to get in."""
    archive, data, cache_dir = archive_and_store

    def bad_dtype(doc):
        doc["entries"][0]["entry"]["tensors"][0][1] = "F13"
    bad = tmp_path / "forged.gz"
    bad.write_bytes(_rewrite(data, bad_dtype, fix_document_checksum=True, fix_entry_checksum=True))
    before = fingerprint(cache_dir)
    assert "malformed tensor entry" in str(_rejected(bad, cache_dir))
    assert fingerprint(cache_dir) == before


def test_recompressed_or_foreign_files_are_rejected(archive_and_store, tmp_path):
    import gzip
    archive, data, cache_dir = archive_and_store
    before = fingerprint(cache_dir)
    bad = tmp_path / "re.gz"
    bad.write_bytes(gzip.compress(zlib.decompress(data, 31), mtime=1))
    assert "gzip header differs" in str(_rejected(bad, cache_dir))
    bad.write_bytes(b'{"format": "hubvram-export/1"}')
    assert "not gzip data" in str(_rejected(bad, cache_dir))
    bad.write_bytes(b"")
    _rejected(bad, cache_dir)
    r = cli("cache", "import", str(tmp_path / "missing.gz"))
    assert r.exit_code == EXIT_INPUT and "missing.gz: cannot read" in r.stderr
    assert fingerprint(cache_dir) == before


# --------------------------------------------------------------------------------------------------
# Neither cached nor in the snapshot
# --------------------------------------------------------------------------------------------------
def test_offline_miss_is_one_line_naming_the_model_and_how_to_warm_exit_3(fakehub, fresh_env, endpoint,
                                                                           network_off):
    attempts = network_off()
    r = cli("org/never-seen", "--offline")  # no HTTP cache at all: the fast path
    assert r.exit_code == EXIT_HUB
    assert r.stdout == ""
    assert r.stderr == ("hubvram: error: org/never-seen: offline, and not in the HTTP cache, imported metadata or "
                        "the bundled snapshot (run `hubvram cache warm org/never-seen` with a network first, "
                        "or `hubvram cache import FILE`)\n")
    assert not fresh_env.exists()
    # a revision of a snapshot model: the snapshot has no commit to offer
    r = cli(f"{README_MODEL}@{'0' * 40}", "--offline")
    assert r.exit_code == EXIT_HUB and r.stderr.count("\n") == 1
    assert f"hubvram cache warm {README_MODEL}@{'0' * 40}" in r.stderr
    assert attempts == []


def test_offline_miss_with_an_http_cache_holding_other_models(fakehub, fresh_env, endpoint, network_off):
    endpoint(fakehub)
    serve_config(fakehub, "org/tiny", TINY)
    assert cli("cache", "warm", "org/tiny").exit_code == 0
    fakehub.stop()
    attempts = network_off()
    r = cli("org/never-seen", "--offline")
    assert r.exit_code == EXIT_HUB and r.stderr.count("\n") == 1
    assert "org/never-seen: offline, and not in the HTTP cache" in r.stderr
    assert "run `hubvram cache warm org/never-seen` with a network first" in r.stderr
    r = cli(README_MODEL, "--offline")  # the snapshot still answers behind the HTTP cache
    assert r.exit_code == 0 and "Parameters: 8,030,261,248" in r.stdout
    assert attempts == []
