"""hubvram.cache and `hubvram cache ...`: ls / info / clear, warm (concurrent, progress, revalidation with 304),
the metadata store, and `cache snapshot` against the fake Hub. No network: the fake Hub is on 127.0.0.1."""

from __future__ import annotations

import json
import os
import pickle
import re
import sqlite3
import stat
import time
from datetime import date

import pytest
import responses

from hubvram import cache, snapshot
from hubvram.architecture import describe
from hubvram.errors import EXIT_HUB, EXIT_INPUT, EXIT_OK, EXIT_PARTIAL
from hubvram.hub import DEFAULT_MAX_AGE_S, HubClient, parse_max_age

from helpers import snapshot_config
from offline_support import (TINY, TINY_TOTAL, cli, cli_json, endpoint, fingerprint, fresh_env,  # noqa: F401
                             network_off, serve_config, serve_indexed, warm_and_reimport)

SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def rows(cache_dir):
    con = sqlite3.connect(cache_dir / "http_cache.sqlite")
    try:
        return con.execute("SELECT key, length(value) FROM responses").fetchall()
    finally:
        con.close()


# --------------------------------------------------------------------------------------------------
# ls / info / clear
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def two_models(fakehub, fresh_env, endpoint):
    endpoint(fakehub)
    a, _ = serve_config(fakehub, "org/tiny", TINY)
    b, _ = serve_config(fakehub, "org/other", dict(TINY, hidden_size=32))
    r = cli("cache", "warm", "org/tiny", "org/other")
    assert r.exit_code == 0, r.output
    return {"org/tiny": a, "org/other": b}


def test_ls_lists_models_revisions_entries_size_and_age(two_models, fresh_env):
    doc = cli_json("cache", "ls")
    assert doc["cache_dir"] == str(fresh_env)
    by_id = {m["model_id"]: m for m in doc["models"]}
    assert [m["model_id"] for m in doc["models"]] == ["org/other", "org/tiny"]
    all_rows = rows(fresh_env)
    # per model: the branch answer, its alias under the sha, config.json and the header (resolve key,
    # the redirect in its history; header reads store no separate CDN row and no redirect alias)
    assert len(all_rows) == 8
    for model, sha in two_models.items():
        m = by_id[model]
        assert m["where"] == "http"
        assert m["refs"] == {"main": sha} and m["shas"] == [sha]
        assert m["entries"] == 4
        assert 0 <= m["age_s"] < 60
        assert m["endpoint"].startswith("http://127.0.0.1:")
        assert m["revalidate_after"] is not None
    assert sum(m["size"] for m in doc["models"]) == sum(n for _, n in all_rows)
    text = cli("cache", "ls").stdout.splitlines()
    assert text[0].split() == ["model", "where", "revisions", "entries", "size", "age"]
    assert re.match(rf"org/tiny +HTTP cache +main → {two_models['org/tiny'][:12]} +4 +[\d.]+ KiB +\d+ s$", text[3])


def test_info_reports_paths_sizes_counts_and_max_age(two_models, fresh_env, monkeypatch):
    i = cli_json("cache", "info")
    db = fresh_env / "http_cache.sqlite"
    assert i == {
        "cache_dir": str(fresh_env), "http_cache": str(db),
        "http_cache_bytes": sum(os.path.getsize(p) for p in (db, f"{db}-wal", f"{db}-shm") if os.path.exists(p)),
        "http_entries": 8, "http_redirects": 0, "http_models": 2, "http_unattributed": 0,
        "store_dir": str(fresh_env / "metadata"), "store_entries": 0, "store_models": 0, "store_bytes": 0,
        "snapshot_dir": str(snapshot.snapshot_dir()), "snapshot_entries": len(snapshot.available()),
        "max_age_s": float(DEFAULT_MAX_AGE_S), "memo_dir": str(fresh_env / "memo"), "memo_entries": 2,
        "memo_bytes": sum(p.stat().st_size for p in (fresh_env / "memo").iterdir())}
    assert i["snapshot_entries"] == 26
    monkeypatch.setenv("HUBVRAM_MAX_AGE", "12h")
    assert cli_json("cache", "info")["max_age_s"] == 43200.0
    monkeypatch.setenv("HUBVRAM_MAX_AGE", "never")
    assert cli_json("cache", "info")["max_age_s"] is None
    text = cli("cache", "info").stdout
    assert f"HTTP cache         {db} (" in text and "8 entries, 2 models)" in text
    assert "revalidate after   never" in text and "bundled snapshot   " in text and "(26 models)" in text
    assert f"metadata memo      {fresh_env / 'memo'} (2 commits, " in text


def test_clear_one_model_removes_only_its_entries(two_models, fresh_env, network_off):
    before = dict(rows(fresh_env))
    r = cli("cache", "clear", "org/tiny")
    assert r.exit_code == 0
    assert re.fullmatch(r"removed 4 HTTP cache entries and 0 imported files \([\d.]+ KiB\) for org/tiny\n", r.stdout)
    after = dict(rows(fresh_env))
    assert len(after) == 4 and all(before[k] == n for k, n in after.items())
    assert [p.name for p in (fresh_env / "memo").iterdir()] == [f"org--other@{two_models['org/other']}.json"]
    assert [m["model_id"] for m in cli_json("cache", "ls")["models"]] == ["org/other"]
    attempts = network_off()
    assert cli("org/tiny", "--offline").exit_code == EXIT_HUB
    assert cli_json("org/other", "--offline")["models"][0]["revision"] == two_models["org/other"]
    r = cli("cache", "clear", "org/never-cached")
    assert (r.exit_code, r.stdout) == (0, "nothing cached for org/never-cached\n")
    r = cli("cache", "clear", "org/other@main")
    assert r.exit_code == EXIT_INPUT and "without @revision" in r.stderr
    assert cli_json("cache", "clear", "ORG/OTHER")["http_entries"] == 4  # Hub ids are case-insensitive
    assert attempts == []


def test_clear_everything(two_models, fresh_env, tmp_path):
    archive = tmp_path / "a.gz"
    cache.export(archive, models=["org/tiny"])
    cache.import_(archive)
    r = cli("cache", "clear")
    assert r.exit_code == 0
    assert re.fullmatch(r"removed 8 HTTP cache entries and 2 imported files \([\d.]+ KiB\)\n", r.stdout)
    assert not (fresh_env / "http_cache.sqlite").exists()
    assert list((fresh_env / "metadata").iterdir()) == []
    assert cli("cache", "ls").stdout == f"nothing cached in {fresh_env}\n"


def test_clear_reports_what_it_removed(two_models, fresh_env, tmp_path):
    archive = tmp_path / "a.gz"
    cache.export(archive, models=["org/tiny"])
    cache.import_(archive)
    db = fresh_env / "http_cache.sqlite"
    size = sum(os.path.getsize(p) for p in (db, f"{db}-wal", f"{db}-shm") if os.path.exists(p))
    size += sum(p.stat().st_size for p in (fresh_env / "metadata").iterdir())
    memo = sorted(p.name for p in (fresh_env / "memo").iterdir())  # one per model and commit, made by warm
    assert memo == [f"org--other@{two_models['org/other']}.json", f"org--tiny@{two_models['org/tiny']}.json"]
    size += sum(p.stat().st_size for p in (fresh_env / "memo").iterdir())
    assert cli_json("cache", "clear") == {"model": None, "http_entries": 8, "store_files": 2, "bytes": size,
                                          "memo_files": 2}
    assert list((fresh_env / "memo").iterdir()) == []
    assert cli_json("cache", "clear") == {"model": None, "http_entries": 0, "store_files": 0, "bytes": 0,
                                          "memo_files": 0}


def test_ls_and_clear_cover_imported_metadata(two_models, fresh_env, tmp_path):
    archive = tmp_path / "a.gz"
    cache.export(archive, models=["org/tiny"])
    assert cli_json("cache", "clear", "org/tiny")["http_entries"] == 4
    cache.import_(archive)
    models = cli_json("cache", "ls")["models"]
    imported = [m for m in models if m["where"] == "imported"]
    assert [(m["model_id"], m["refs"], m["shas"], m["entries"]) for m in imported] == \
        [("org/tiny", {"main": two_models["org/tiny"]}, [two_models["org/tiny"]], 1)]
    assert cli_json("cache", "clear", "org/tiny") | {"bytes": 0} == \
        {"model": "org/tiny", "http_entries": 0, "store_files": 2, "bytes": 0, "memo_files": 0}
    assert [m["model_id"] for m in cli_json("cache", "ls")["models"]] == ["org/other"]


def test_rows_are_read_as_json_and_a_pickle_row_is_never_loaded(two_models, fresh_env, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    con = sqlite3.connect(fresh_env / "http_cache.sqlite")
    with con:
        con.execute("INSERT INTO responses (key, value, expires) VALUES (?, ?, NULL)", ("evil", pickle.dumps(Evil())))
    con.close()
    i = cli_json("cache", "info")
    assert (i["http_entries"], i["http_models"], i["http_unattributed"]) == (9, 2, 1)
    assert len(cli_json("cache", "ls")["models"]) == 2
    cache.export(tmp_path / "x.gz")
    assert cli_json("cache", "clear", "org/tiny")["http_entries"] == 4
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# warm
# --------------------------------------------------------------------------------------------------
def test_warm_from_file_reports_each_model_and_exits_4_on_partial_failure(fakehub, fresh_env, endpoint, tmp_path,
                                                                          network_off):
    endpoint(fakehub)
    sha, _ = serve_config(fakehub, "org/tiny", TINY)
    ids = tmp_path / "models.txt"
    ids.write_text("# models for the cluster\norg/tiny   # the small one\n\norg/missing\n")
    r = cli("cache", "warm", "--from-file", str(ids), "--format", "json")
    assert r.exit_code == EXIT_PARTIAL
    got = json.loads(r.stdout)["models"]
    assert [(m["model"], m["sha"], m["ok"], m["exit_code"]) for m in got] == \
        [("org/tiny", sha, True, None), ("org/missing", None, False, EXIT_HUB)]
    assert "org/missing: model not found" in got[1]["error"]
    r = cli("cache", "warm", "org/missing", "org/also-missing")
    assert r.exit_code == EXIT_HUB
    assert r.stdout.splitlines()[0].split() == ["model", "commit", "result"]
    r = cli("cache", "warm", "org/tiny", env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code == EXIT_INPUT and "needs the network" in r.stderr
    fakehub.stop()
    attempts = network_off()
    assert cli_json("org/tiny", "--offline")["models"][0]["parameters"]["total"] == TINY_TOTAL
    assert attempts == []


def test_warm_is_concurrent_and_reports_progress(fakehub, fresh_env, endpoint):
    endpoint(fakehub)
    models = [f"org/m{i}" for i in range(6)]
    for m in models:
        serve_config(fakehub, m, TINY)
    fakehub.latency = 0.15  # each model needs 4 sequential requests: >= 3.6 s one after another
    seen = []
    t0 = time.monotonic()
    results = cache.warm(models, on_progress=lambda done, total, model, err: seen.append((done, total, err)))
    elapsed = time.monotonic() - t0
    assert [r.ok for r in results] == [True] * 6 and [r.model for r in results] == models
    assert sorted(seen, key=lambda s: s[0]) == [(i, 6, None) for i in range(1, 7)]
    assert elapsed < 2.5, elapsed


def test_warm_revalidates_old_entries_with_conditional_requests(fakehub, fresh_env, endpoint):
    endpoint(fakehub)
    sha, _ = serve_config(fakehub, "org/tiny", TINY)
    with HubClient(offline=False, max_age="1s") as c:
        assert cache.warm(["org/tiny"], c)[0].ok
    fakehub.requests.clear()
    with HubClient(offline=False, max_age="1h") as c:  # young entries: only the branch is asked again
        assert cache.warm(["org/tiny"], c)[0].ok
    assert [(r.path.split("/")[-1], r.status) for r in fakehub.requests] == [("main", 200)]
    time.sleep(1.2)
    fakehub.requests.clear()
    with HubClient(offline=False, max_age="1s") as c:
        assert cache.warm(["org/tiny"], c)[0].ok
        assert c.stats["revalidated"] == 2
    got = [(r.server, r.path.split("/")[-1][:12], r.status, r.headers.get("If-None-Match") is not None)
           for r in fakehub.requests]
    cdn_oid = got[-1][1]
    assert got == [("hub", "main", 200, False),            # branch: always asked online
                   ("hub", "config.json", 304, True),       # revalidated, no body
                   ("hub", "model.safete", 302, True),      # header: the redirect to the CDN ...
                   ("hub", cdn_oid, 304, True)]             # ... which answers 304 (same-port CDN)


def test_a_304_with_entity_headers_keeps_the_stored_range(fresh_env, tmp_path, monkeypatch):
    """Some servers send the full-file Content-Length on a 304; merged into the stored 206 it would look
    truncated. The client drops those headers."""
    hub = "https://hub.example"
    sha = "a" * 40
    body = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"\0" * 100
    calls = []

    def serve(request):
        calls.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match"):
            return 304, {"ETag": '"x"', "Content-Length": str(len(body)),
                         "Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}"}, b""
        a, b = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers["Range"]).groups())
        b = min(b, len(body) - 1)
        return 206, {"Content-Range": f"bytes {a}-{b}/{len(body)}", "ETag": '"x"'}, body[a:b + 1]

    monkeypatch.setenv("HUBVRAM_HTTP", "urllib3")  # `responses` mocks requests' HTTPAdapter
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.add_callback(responses.GET, f"{hub}/org/m/resolve/{sha}/model.safetensors", callback=serve)
        with HubClient(endpoint=hub, offline=False, token=False, max_age="1s", cache_dir=fresh_env) as c:
            first = c.fetch_header("org/m", sha, "model.safetensors")
        time.sleep(1.2)
        with HubClient(endpoint=hub, offline=False, token=False, max_age="1s", cache_dir=fresh_env) as c:
            assert c.fetch_header("org/m", sha, "model.safetensors") == first
            assert c.stats["revalidated"] == 1
    assert calls == [None, '"x"']
    with HubClient(endpoint=hub, offline=True, cache_dir=fresh_env) as c:
        assert c.fetch_header("org/m", sha, "model.safetensors") == first


# --------------------------------------------------------------------------------------------------
# import merge rules and store files
# --------------------------------------------------------------------------------------------------
def test_import_keeps_the_newest_branch_record_and_writes_private_files(fakehub, fresh_env, endpoint, tmp_path,
                                                                        network_off):
    endpoint(fakehub)
    old_sha, _ = serve_config(fakehub, "org/tiny", TINY)
    assert cli("cache", "warm", "org/tiny").exit_code == 0
    old_archive = tmp_path / "old.gz"
    cache.export(old_archive)
    time.sleep(1.1)  # branch records are compared by the time seen (seconds)
    new_sha, _ = serve_config(fakehub, "org/tiny", dict(TINY, num_hidden_layers=3))
    assert cli("cache", "warm", "org/tiny").exit_code == 0
    new_archive = tmp_path / "new.gz"
    r = cache.export(new_archive)
    assert r.entries == 2  # both commits are in the HTTP cache; main points at the new one
    cache.clear()
    assert cache.import_(new_archive).refs == 1
    assert cache.import_(old_archive).refs == 0  # an older record does not move main back
    attempts = network_off()
    assert cli_json("org/tiny", "--offline")["models"][0]["revision"] == new_sha
    assert cli_json(f"org/tiny@{old_sha}", "--offline")["models"][0]["parameters"]["total"] == TINY_TOTAL
    store = fresh_env / "metadata"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    names = sorted(p.name for p in store.iterdir())
    assert names == sorted([f"org--tiny@{old_sha}.json", f"org--tiny@{new_sha}.json", "org--tiny@main.ref"])
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in store.iterdir())
    for name in (n for n in names if n.endswith(".json")):
        snapshot.read_entry((store / name).read_bytes(), file=name)  # reviewable snapshot-format entries
    assert attempts == []


def test_importing_the_same_archive_twice_is_a_no_op(fakehub, fresh_env, endpoint, tmp_path):
    endpoint(fakehub)
    archive = tmp_path / "a.gz"
    first = warm_and_reimport(fakehub, "org/tiny", TINY, archive)
    snap = fingerprint(fresh_env)
    again = cache.import_(archive)
    assert (first.entries, first.new, again.entries, again.new) == (1, 1, 1, 0)
    assert fingerprint(fresh_env) == snap


def test_export_skips_a_revision_that_cannot_be_answered_offline(fakehub, fresh_env, endpoint, tmp_path):
    from fakehub import status
    endpoint(fakehub)
    sha, _ = serve_config(fakehub, "org/tiny", TINY)
    serve_config(fakehub, "org/other", dict(TINY, hidden_size=32))
    fakehub.inject("/org/tiny/resolve/*/model.safetensors", status(404, error_code="EntryNotFound"), times=None)
    r = cli("cache", "warm", "org/tiny", "org/other")
    assert r.exit_code == EXIT_PARTIAL  # org/tiny: its revision and config.json are cached, its header is not
    r = cli("cache", "export", str(tmp_path / "a.gz"))
    assert r.exit_code == 0
    assert r.stdout.startswith(f"wrote 1 entry (1 model) to {tmp_path / 'a.gz'} (")
    assert r.stderr == (f"hubvram: skipped org/tiny@{sha[:12]}: offline and not cached "
                        "(header model.safetensors)\n")


def test_export_of_an_empty_cache_is_valid_and_imports_nothing(fresh_env, tmp_path):
    r = cli("cache", "export", str(tmp_path / "empty.gz"))
    assert (r.exit_code, r.stdout.split(" (")[0]) == (0, "wrote 0 entries")
    assert cli_json("cache", "import", str(tmp_path / "empty.gz"))["entries"] == 0
    assert not fresh_env.exists()


# --------------------------------------------------------------------------------------------------
# cache snapshot (maintainers)
# --------------------------------------------------------------------------------------------------
def test_cache_snapshot_writes_a_valid_entry_with_the_real_header_inventory(fakehub, fresh_env, endpoint, tmp_path):
    endpoint(fakehub)
    sha, served = serve_indexed(fakehub, "meta-llama/Meta-Llama-3-8B")
    out = tmp_path / "snap"
    out.mkdir()
    r = cli("cache", "snapshot", "meta-llama/Meta-Llama-3-8B", "--out", str(out), "--format", "json")
    assert r.exit_code == EXIT_OK, r.output
    path = out / "meta-llama--Meta-Llama-3-8B.json"
    assert json.loads(r.stdout)["models"] == [{"model": "meta-llama/Meta-Llama-3-8B", "path": str(path), "sha": sha,
                                               "tensors": 291, "ok": True, "error": None, "exit_code": None}]
    entry = snapshot.read_entry(path.read_bytes(), file=path.name)
    assert entry["revision"] == sha and entry["recorded"] == date.today().isoformat()
    assert {t[0]: (t[1], tuple(t[2])) for t in entry["tensors"]} == served
    assert entry["config"] == snapshot_config("meta-llama/Meta-Llama-3-8B")
    assert entry["published_total"] == 8_030_261_248  # the Hub API's safetensors.total at that commit
    assert entry["published_total_source"].endswith(f"/api/models/meta-llama/Meta-Llama-3-8B/revision/{sha}: "
                                                    "safetensors.total")
    assert entry["config_source"].startswith(f"config.json of meta-llama/Meta-Llama-3-8B at {sha} (http://127.0.0.1:")
    assert entry["tensors_source"] == f"safetensors headers of 4 shard(s) at {sha[:12]}"
    assert entry["notes"] == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    arch = describe(snapshot.entry_to_metadata(entry, file=path.name))
    assert arch.counts.total == 8_030_261_248 and arch.metadata.tensors_from == "safetensors"
    assert path.read_text().startswith('{\n "format": "hubvram-snapshot/1",\n "model_id": "meta-llama/Meta-Llama-3-8B"')


def test_cache_snapshot_config_matches_what_the_hub_served(fakehub, fresh_env, endpoint, tmp_path):
    endpoint(fakehub)
    sha, _ = serve_config(fakehub, "org/tiny", TINY)
    r = cli("cache", "snapshot", "org/tiny", "org/missing", "--out", str(tmp_path))
    assert r.exit_code == EXIT_PARTIAL
    entry = snapshot.read_entry((tmp_path / "org--tiny.json").read_bytes(), file="org--tiny.json")
    assert entry["config"] == TINY and entry["published_total"] == TINY_TOTAL
    assert not (tmp_path / "org--missing.json").exists()
    r = cli("cache", "snapshot", "org/tiny", "--out", str(tmp_path / "nope"))
    assert r.exit_code == EXIT_INPUT and "no such folder" in r.stderr


# --------------------------------------------------------------------------------------------------
# max age parsing
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [("3600", 3600.0), ("90s", 90.0), ("12h", 43200.0), ("7d", 604800.0),
                                          ("2w", 1209600.0), ("1.5h", 5400.0), ("never", None), ("0", 1.0),
                                          (None, float(DEFAULT_MAX_AGE_S))])
def test_parse_max_age(text, seconds):
    assert parse_max_age(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1", "7 days", "h"])
def test_parse_max_age_rejects(text):
    with pytest.raises(ValueError):
        parse_max_age(text)
    r = cli("cache", "warm", "org/x", "--max-age", text)
    assert r.exit_code == 2 and "--max-age" in r.stderr


def test_warm_progress_goes_to_stderr_only_when_it_is_a_terminal(monkeypatch):
    import io
    import sys

    from hubvram import cli as cli_module
    from hubvram.errors import RepoNotFoundError

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    on = cli_module._progress("warm")
    on(1, 2, "org/a", None)
    on(2, 2, "org/b", RepoNotFoundError("model not found"))
    assert term.getvalue() == ("\r\x1b[Kwarm [1/2] org/a: ok"
                               "\r\x1b[Kwarm [2/2] org/b: failed (RepoNotFoundError)\n")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert cli_module._progress("warm") is None


def test_an_unreadable_http_cache_is_one_line_and_clear_removes_it(fresh_env):
    fresh_env.mkdir()
    (fresh_env / "http_cache.sqlite").write_bytes(b"not a database" * 400)
    for args in (("ls",), ("info",), ("export", str(fresh_env / "x.gz"))):
        r = cli("cache", *args)
        assert r.exit_code == EXIT_INPUT and r.stderr.count("\n") == 1
        assert "the HTTP cache is unreadable (file is not a database)" in r.stderr
        assert "`hubvram cache clear` removes it" in r.stderr
    r = cli("cache", "clear")
    assert (r.exit_code, r.stdout) == (0, "removed 0 HTTP cache entries and 0 imported files (5.5 KiB)\n")
    assert cli("cache", "ls").stdout == f"nothing cached in {fresh_env}\n"


def test_http_cache_may_have_is_one_key_read_for_the_revision_asked(two_models, fresh_env, fakehub):
    sha = two_models["org/tiny"]
    have = lambda repo, rev=None: cache.http_cache_may_have(repo, fresh_env, rev, fakehub.endpoint)  # noqa: E731
    assert have("org/tiny") and have("org/tiny", "main") and have("org/tiny", sha)  # the sha alias of main
    assert not have("org/tiny", "v2") and not have("org/never-cached") and not have("org/tiny", "0" * 40)
    assert not cache.http_cache_may_have("org/tiny", fresh_env, None, "https://elsewhere.example")
    assert not cache.http_cache_may_have("org/tiny", fresh_env / "nowhere", None, fakehub.endpoint)
