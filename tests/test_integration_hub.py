"""End to end through the real CLI against the fake Hub (tests/fakehub.py), with faults injected.

Every model is served from its real config.json with safetensors headers built from hubvram's config-derived
inventory, sharded as the real index says; the CLI must give the exact parameter count through the whole
pipeline (Hub API -> config -> index -> 302 to the CDN -> Range/206 header reads -> parser -> counts).
Each fault test is bounded in time (``within``) and ends with the cache checked: SQLite integrity, no partial
row, and a healthy run that gives the right numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from fakehub import (ignore_range, redirect_loop, reset, slow_first_byte, status, truncate,
                     wrong_content_range)
from hostile_support import (LLAMA, MISTRAL, MODELS, QWEN, QWEN_MOE, ROOT, TOKEN, cache_rows, cached_paths,
                             check_rows_complete, hub_env, integrity, one_line, python, serve, within)
from hubvram import hub as hub_module

assert hub_env  # the fixture, imported for pytest

LLAMA_SHARDS = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
NETWORK_HINT = "(check the network or use --offline)"


def _resolve(model: str, file: str = "*") -> str:
    return f"/{model}/resolve/*/{file}"


# --- the happy path, exactly --------------------------------------------------------------------------------
def test_sharded_llama_exact_count_via_302_to_a_cdn_on_another_host(hub_env):
    hub = hub_env.hub
    sha = serve(hub, LLAMA)
    with within(15):
        r = hub_env.cli("show", LLAMA, "--format", "json")
    assert r.exit_code == 0, r.output
    params = json.loads(r.stdout)["models"][0]["parameters"]
    assert params["total"] == params["hub_total"] == 8_030_261_248

    reqs = hub.requests.snapshot()
    assert [x.path for x in reqs if x.path.startswith("/api/")] == [f"/api/models/{LLAMA}/revision/main"]
    resolved = {x.path.rsplit("/", 1)[1]: x for x in reqs if x.server == "hub" and "/resolve/" in x.path}
    assert sorted(resolved) == sorted(["config.json", "model.safetensors.index.json", *LLAMA_SHARDS])
    assert all(f"/resolve/{sha}/" in resolved[s].path for s in LLAMA_SHARDS)  # pinned to the commit
    # config.json and the index: asked at main together with the revision lookup (one round trip), and
    # kept because their X-Repo-Commit is the commit the lookup returned
    assert all("/resolve/main/" in resolved[f].path for f in ("config.json", "model.safetensors.index.json"))
    assert [resolved[s].status for s in LLAMA_SHARDS] == [302] * 4
    cdn = [x for x in reqs if x.server == "cdn"]
    assert len(cdn) == 4 and {x.status for x in cdn} == {206}
    ends = [int(x.range.removeprefix("bytes=0-")) for x in cdn]  # one read per shard, sized from the index
    assert all((end + 1) % 4096 == 0 and end < 99_999 for end in ends), ends
    assert {x.port for x in cdn} == {hub.cdn_port} and hub.cdn_port != hub.port
    assert hub.cdn_endpoint.startswith("http://localhost:")  # another host name: the token stays home

    hub.requests.clear()  # second run: only the branch lookup leaves the machine
    assert hub_env.total(LLAMA) == 8_030_261_248
    assert [x.path for x in hub.requests] == [f"/api/models/{LLAMA}/revision/main"]


def test_single_file_qwen_exact_count(hub_env):
    serve(hub_env.hub, QWEN)
    with within(10):
        assert hub_env.total(QWEN) == 494_032_768
    cdn = hub_env.hub.requests.filter(server="cdn")
    assert [(x.status, x.range) for x in cdn] == [(206, "bytes=0-99999")]


def test_header_longer_than_the_first_read_takes_a_second_range(hub_env):
    serve(hub_env.hub, QWEN_MOE)  # 18,867 tensors in one file: a ~2 MB header
    with within(20):
        assert hub_env.total(QWEN_MOE) == 30_532_122_624
    ranges = [x.range for x in hub_env.hub.requests.filter(server="cdn")]
    assert ranges[0] == "bytes=0-99999" and re.fullmatch(r"bytes=100000-\d{7}", ranges[1]) and len(ranges) == 2
    check_rows_complete(hub_env.db)


def test_real_subprocess_counts_and_fails_with_one_line(hub_env):
    serve(hub_env.hub, LLAMA)
    hub_env.hub.add_repo("hostile/gated", {"config.json": b"{}"}, gated=True, token=TOKEN)
    env = hub_env.subprocess_env()
    with within(60):
        ok = subprocess.run([python(), "-m", "hubvram", "show", LLAMA, "--format", "json"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
        gated = subprocess.run([python(), "-m", "hubvram", "hostile/gated"], env=env, capture_output=True,
                               text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["models"][0]["parameters"]["total"] == 8_030_261_248
    assert gated.returncode == 3 and gated.stdout == ""
    assert one_line(gated) == (
        f"hubvram: error: hostile/gated: config.json: gated model: access not granted to this account "
        f"(request access at {hub_env.hub.endpoint}/hostile/gated and log in with `hf auth login` or set HF_TOKEN)")


# --- access and existence -------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "hf_wrong_token"], ids=["no-token-401", "wrong-token-403"])
def test_gated_repo_says_how_to_get_access(hub_env, token):
    serve(hub_env.hub, QWEN, gated="manual", token=TOKEN)
    hub_env.set_token(token)
    with within(10):
        r = hub_env.cli("show", QWEN)
    assert r.exit_code == 3
    assert one_line(r) == (
        f"hubvram: error: {QWEN}: config.json: gated model: access not granted to this account (request access "
        f"at {hub_env.hub.endpoint}/{QWEN} and log in with `hf auth login` or set HF_TOKEN)")
    statuses = [x.status for x in hub_env.hub.requests if x.path.endswith("config.json")]
    assert statuses == [401 if token is None else 403]  # not retried
    hub_env.set_token(TOKEN)
    assert hub_env.total(QWEN) == 494_032_768


def test_private_repo_without_token_is_not_found(hub_env):
    serve(hub_env.hub, QWEN, private=True, token=TOKEN)
    r = hub_env.cli("show", QWEN)
    assert r.exit_code == 3
    assert one_line(r) == (f"hubvram: error: {QWEN}: model not found on {hub_env.hub.endpoint} (check the name; "
                           "a private model needs `hf auth login` or HF_TOKEN)")


def test_unknown_repo_revision_and_files_exit_3_naming_model_and_file(hub_env):
    hub = hub_env.hub
    sha = serve(hub, LLAMA)
    hub.add_repo("hostile/no-config", {"README.md": b"hi"})
    with within(15):
        repo = hub_env.cli("show", "hostile/nope")
        rev = hub_env.cli("show", f"{LLAMA}@v9.9")
        no_config = hub_env.cli("show", "hostile/no-config")
        hub.inject(_resolve(LLAMA, LLAMA_SHARDS[2]), status(404, error_code="EntryNotFound"), times=None)
        no_shard = hub_env.cli("show", LLAMA)
    assert [x.exit_code for x in (repo, rev, no_config, no_shard)] == [3, 3, 3, 3]
    assert one_line(repo) == (f"hubvram: error: hostile/nope: model not found on {hub.endpoint} (check the name; "
                              "a private model needs `hf auth login` or HF_TOKEN)")
    assert one_line(rev) == f"hubvram: error: {LLAMA}: revision 'v9.9' not found"
    no_config_sha = hub.sha("hostile/no-config")
    assert one_line(no_config) == (f"hubvram: error: hostile/no-config: config.json: file not found at revision "
                                   f"{no_config_sha[:12]}")
    assert one_line(no_shard) == f"hubvram: error: {LLAMA}: {LLAMA_SHARDS[2]}: file not found at revision {sha[:12]}"
    hub.clear_faults()
    assert hub_env.total(LLAMA) == 8_030_261_248


# --- transient faults: retried, then the right answer ---------------------------------------------------------
TRANSIENT = [
    ("503-twice-on-api", "/api/*", status(503), 2),
    ("502-twice-on-resolve", _resolve(QWEN), status(502), 2),
    ("500-on-cdn", "/cdn/*", status(500), 1),
    ("reset-on-api", "/api/*", reset(), 1),
    ("reset-on-cdn", "/cdn/*", reset(), 1),
    ("config-cut-short", _resolve(QWEN, "config.json"), truncate(50), 1),
    ("header-cut-short", "/cdn/*", truncate(1000), 1),
    ("content-range-shifted", "/cdn/*", wrong_content_range("shift"), 1),
    ("content-range-missing", "/cdn/*", wrong_content_range("missing"), 1),
    ("redirect-loop", _resolve(QWEN, "model.safetensors"), redirect_loop(), 1),
    ("slow-first-byte", "/cdn/*", slow_first_byte(2.5), 1),  # read timeout is 1 s
]


@pytest.mark.parametrize("glob,fault,times", [t[1:] for t in TRANSIENT], ids=[t[0] for t in TRANSIENT])
def test_transient_fault_is_retried_and_the_count_is_exact(hub_env, glob, fault, times):
    serve(hub_env.hub, QWEN)
    inj = hub_env.hub.inject(glob, fault, times=times)
    with within(8):
        assert hub_env.total(QWEN) == 494_032_768
    assert inj.exhausted  # the fault was served (a redirect loop counts each hop in .hits)
    assert integrity(hub_env.db) == "ok"
    check_rows_complete(hub_env.db)
    hub_env.hub.requests.clear()  # nothing faulty was kept: a second run is answered from the cache
    assert hub_env.total(QWEN) == 494_032_768
    assert [x.path for x in hub_env.hub.requests] == [f"/api/models/{QWEN}/revision/main"]


def test_429_retry_after_is_honoured(hub_env):
    serve(hub_env.hub, QWEN)
    hub_env.hub.inject(_resolve(QWEN, "config.json"), status(429, retry_after=1))
    with within(6, at_least=1.0):
        assert hub_env.total(QWEN) == 494_032_768
    first, second = hub_env.hub.requests.filter(path_glob=_resolve(QWEN, "config.json"))[:2]
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.95


def test_retry_after_is_capped(hub_env, monkeypatch):
    monkeypatch.setattr(hub_module, "RETRY_AFTER_CAP_S", 0.5)
    serve(hub_env.hub, QWEN)
    hub_env.hub.inject("/api/*", status(503, retry_after=3600), times=None)
    with within(5, at_least=1.0):  # two waits of 0.5 s, not an hour
        r = hub_env.cli("show", QWEN)
    assert r.exit_code == 3
    assert one_line(r) == f"hubvram: error: {QWEN}: api request failed after 3 tries (HTTP 503) {NETWORK_HINT}"


def test_lies_that_change_nothing_still_give_the_exact_count(hub_env):
    """A Content-Range whose total is off by one (the header bytes are right) and slow answers everywhere."""
    serve(hub_env.hub, LLAMA)
    hub_env.hub.inject("/cdn/*", wrong_content_range("total"), times=None)
    hub_env.hub.latency = 0.05  # per request, on the Hub and the CDN
    with within(10):
        assert hub_env.total(LLAMA) == 8_030_261_248
    check_rows_complete(hub_env.db)


def test_server_ignoring_range_is_read_only_as_far_as_needed_and_not_cached(hub_env):
    serve(hub_env.hub, QWEN)
    hub_env.hub.inject("/cdn/*", ignore_range())
    assert hub_env.total(QWEN) == 494_032_768
    assert [x.status for x in hub_env.hub.requests.filter(server="cdn")] == [200]
    assert not [p for p in cached_paths(hub_env.db) if p.startswith("/cdn/")]
    hub_env.hub.requests.clear()
    assert hub_env.total(QWEN) == 494_032_768  # the memo of that commit answers: no header read
    assert [x.status for x in hub_env.hub.requests.filter(server="cdn")] == []
    shutil.rmtree(hub_env.db.parent / "memo")
    assert hub_env.total(QWEN) == 494_032_768  # without it, the header is read again (it was not cached)
    assert [x.status for x in hub_env.hub.requests.filter(server="cdn")] == [206]


# --- persistent faults: NetworkError (exit 3) in bounded time, nothing partial kept --------------------------
PERSISTENT = [
    ("503-on-api", "/api/*", status(503), None, "api request failed after 3 tries (HTTP 503)"),
    ("500-on-cdn", "/cdn/*", status(500), "model.safetensors",
     "header request failed after 3 tries (HTTP 500)"),
    ("slow-first-byte", "/cdn/*", slow_first_byte(3), "model.safetensors",
     "header request failed after 3 tries (ReadTimeout: "),
    ("cut-short", "/cdn/*", truncate(1000), "model.safetensors",
     "header request failed after 3 tries (truncated answer: 1000 of 100000 bytes)"),
    ("config-cut-short", _resolve(QWEN, "config.json"), truncate(50), "config.json",
     "file request failed after 3 tries (ChunkedEncodingError: "),
    ("no-content-range", "/cdn/*", wrong_content_range("missing"), "model.safetensors",
     "header request failed after 3 tries (206 with Content-Range None for 'bytes=0-99999')"),
    ("content-range-shifted", "/cdn/*", wrong_content_range("shift"), "model.safetensors",
     "header request failed after 3 tries (Content-Range 'bytes 1-100000/"),
    ("redirect-loop", _resolve(QWEN, "model.safetensors"), redirect_loop(), "model.safetensors",
     "header request failed after 3 tries (TooManyRedirects: Exceeded 10 redirects.)"),
    ("reset", "/cdn/*", reset(), "model.safetensors",
     "header request failed after 3 tries (ConnectionError: ConnectionResetError: [Errno 104] Connection reset by peer)"),
]


@pytest.mark.parametrize("glob,fault,file,problem", [p[1:] for p in PERSISTENT], ids=[p[0] for p in PERSISTENT])
def test_persistent_fault_is_a_network_error_and_the_cache_stays_clean(hub_env, glob, fault, file, problem):
    serve(hub_env.hub, QWEN)
    hub_env.hub.inject(glob, fault, times=None)
    with within(12):
        r = hub_env.cli("show", QWEN)
    assert r.exit_code == 3 and r.stdout == ""
    line = one_line(r)
    assert line.startswith(f"hubvram: error: {QWEN}: " + (f"{file}: " if file else "") + problem), line
    assert line.endswith(NETWORK_HINT)
    assert integrity(hub_env.db) == "ok"
    check_rows_complete(hub_env.db)
    faulted_file = glob.rsplit("/", 1)[-1] if "/resolve/" in glob else "model.safetensors"
    kept = cached_paths(hub_env.db)
    if glob == "/cdn/*" or faulted_file == "model.safetensors":
        assert not [p for p in kept if p.startswith("/cdn/")], kept
    elif glob != "/api/*":
        assert not [p for p in kept if p.endswith(faulted_file)], kept
    hub_env.hub.clear_faults()  # the next healthy run gives the right numbers
    assert hub_env.total(QWEN) == 494_032_768
    check_rows_complete(hub_env.db)


def test_failure_on_one_shard_keeps_the_others_and_heals(hub_env):
    hub = hub_env.hub
    serve(hub, LLAMA)
    hub.inject(hub.cdn_path(LLAMA, LLAMA_SHARDS[1]), status(503), times=None)
    with within(10):
        r = hub_env.cli("show", LLAMA)
    assert r.exit_code == 3
    assert one_line(r).startswith(f"hubvram: error: {LLAMA}: {LLAMA_SHARDS[1]}: header request failed after 3 tries")
    hub.clear_faults()
    hub.requests.clear()
    assert hub_env.total(LLAMA) == 8_030_261_248
    refetched = [x for x in hub.requests if x.server == "cdn"]
    assert len(refetched) <= 4 and hub.cdn_path(LLAMA, LLAMA_SHARDS[1]) in {x.path for x in refetched}
    check_rows_complete(hub_env.db)


def test_interrupted_run_leaves_a_valid_cache(hub_env):
    """A real process killed (SIGKILL) while it waits for one shard: the cache is valid, the rest is reused."""
    hub = hub_env.hub
    serve(hub, LLAMA)
    stuck = hub.cdn_path(LLAMA, LLAMA_SHARDS[3])
    hub.inject(stuck, slow_first_byte(60), times=None)
    proc = subprocess.Popen([python(), "-m", "hubvram", "show", LLAMA], env=hub_env.subprocess_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with within(30):
            while not (hub.requests.filter(path_glob=stuck)
                       and len([x for x in hub.requests.filter(server="cdn") if x.status == 206]) == 3):
                assert proc.poll() is None, "the run ended before it could be interrupted"
                time.sleep(0.05)
            time.sleep(0.3)  # let it store the three answers it has
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert integrity(hub_env.db) == "ok"
    check_rows_complete(hub_env.db)
    hub.clear_faults()
    hub.requests.clear()
    with within(10):
        assert hub_env.total(LLAMA) == 8_030_261_248
    assert [x.path for x in hub.requests if x.server == "cdn"] == [stuck]  # the three others came from the cache


def test_debug_shows_the_traceback(hub_env):
    serve(hub_env.hub, QWEN)
    hub_env.hub.inject("/api/*", status(503), times=None)
    r = hub_env.cli("show", QWEN, debug=True)
    assert r.exit_code != 0 and type(r.exception).__name__ == "NetworkError"


def test_models_are_the_real_ones():
    """The served ids stand for the snapshot models (a guard on MODELS)."""
    assert {m: MODELS[m][1] for m in MODELS} == {LLAMA: 8_030_261_248, QWEN: 494_032_768,
                                                 QWEN_MOE: 30_532_122_624, MISTRAL: 7_241_732_096}
    assert cache_rows  # imported for the other modules' use
