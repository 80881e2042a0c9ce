"""A broken HTTP cache is set aside and rebuilt with one warning; eight processes share one cache safely."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from hostile_support import (LLAMA, MISTRAL, MODELS, QWEN, ROOT, cached_paths, check_rows_complete, hub_env,
                             integrity, python, serve, within)
from hubvram import hub as hub_module

assert hub_env

SET_ASIDE = r"http_cache\.sqlite\.corrupt-\d{8}-\d{6}(-\d+)?"


def _drop_wal(db: Path) -> None:
    for ext in ("-wal", "-shm"):
        Path(f"{db}{ext}").unlink(missing_ok=True)


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(16384))


def _garbage_pages(db: Path) -> None:  # a valid SQLite header, then noise
    data = db.read_bytes()
    db.write_bytes(data[:100] + os.urandom(len(data) - 100))


def _truncated(db: Path) -> None:
    os.truncate(db, 4096 + 100)


def _folder(db: Path) -> None:
    db.unlink()
    db.mkdir()
    (db / "something").write_text("x")


CORRUPTIONS = {
    "garbage": (_garbage, "file is not a database"),
    "garbage-pages": (_garbage_pages, "database disk image is malformed"),
    "truncated": (_truncated, "database disk image is malformed"),
    "folder": (_folder, "Is a directory"),
}


def _healthy_then(hub_env, model=QWEN) -> int:
    serve(hub_env.hub, model)
    total = hub_env.total(model)
    _drop_wal(hub_env.db)
    return total


def _check_rebuilt(hub_env, result, reason: str | None, model=QWEN) -> None:
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["models"][0]["parameters"]["total"] == MODELS[model][1]
    warning = result.stderr
    assert warning.count("\n") == 1, warning
    m = re.fullmatch(rf"hubvram: warning: the HTTP cache {re.escape(str(hub_env.db))} was unreadable \((.+)\); "
                     rf"moved it to ({SET_ASIDE}) and started a new one\n", warning)
    assert m, warning
    if reason is not None:
        assert m[1] == reason
    assert (hub_env.cache / m[2]).exists() or (hub_env.cache / m[2]).is_symlink()
    assert integrity(hub_env.db) == "ok"
    check_rows_complete(hub_env.db)
    hub_env.hub.requests.clear()  # the new cache works: the next run is answered from it, silently
    again = hub_env.cli("show", model, "--format", "json")
    assert again.exit_code == 0 and again.stderr == ""
    assert [x.path for x in hub_env.hub.requests] == [f"/api/models/{model}/revision/main"]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_cache_is_set_aside_and_rebuilt(hub_env, name):
    corrupt, reason = CORRUPTIONS[name]
    _healthy_then(hub_env)
    corrupt(hub_env.db)
    with within(10):
        r = hub_env.cli("show", QWEN, "--format", "json")
    _check_rebuilt(hub_env, r, reason)


def test_cache_file_with_wrong_mode_is_made_private_again(hub_env):
    _healthy_then(hub_env)
    os.chmod(hub_env.db, 0o644)
    r = hub_env.cli("show", QWEN, "--format", "json")
    assert r.exit_code == 0 and r.stderr == ""
    assert os.stat(hub_env.db).st_mode & 0o777 == 0o600


def test_cache_file_of_another_user_is_set_aside(hub_env, monkeypatch):
    """A file we may neither read, write nor chmod (another user's). Emulated on the file's inode, as the
    tests may run as root, who can do all three."""
    _healthy_then(hub_env)
    foreign = os.stat(hub_env.db).st_ino
    os.chmod(hub_env.db, 0)
    real_access, real_chmod = os.access, os.chmod

    def ours(p) -> bool:
        try:
            return os.stat(p).st_ino != foreign
        except OSError:
            return True

    def chmod(p, mode, *a, **kw):
        if not ours(p):
            raise PermissionError(1, "Operation not permitted", str(p))
        return real_chmod(p, mode, *a, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(hub_module.os, "access", lambda p, mode, **kw: ours(p) and real_access(p, mode, **kw))
        mp.setattr(hub_module.os, "chmod", chmod)
        r = hub_env.cli("show", QWEN, "--format", "json")
    _check_rebuilt(hub_env, r, "Operation not permitted")
    assert os.stat(hub_env.db).st_mode & 0o777 == 0o600


def test_garbage_in_the_wal_is_ignored_by_sqlite(hub_env):
    _healthy_then(hub_env)
    Path(f"{hub_env.db}-wal").write_bytes(os.urandom(50_000))
    r = hub_env.cli("show", QWEN, "--format", "json")
    assert r.exit_code == 0 and r.stderr == ""
    assert json.loads(r.stdout)["models"][0]["parameters"]["total"] == MODELS[QWEN][1]


def test_unusable_cache_folder_gives_a_temporary_cache(hub_env, tmp_path, monkeypatch):
    serve(hub_env.hub, QWEN)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder's parent should be")
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    from click.testing import CliRunner

    from hubvram.cli import main

    r = CliRunner().invoke(main, ["show", QWEN, "--format", "json", "--cache-dir", str(blocker / "cache")])
    assert r.exit_code == 0, r.output
    assert r.stderr == (f"hubvram: warning: cannot use the HTTP cache in {blocker / 'cache'} (Not a directory); "
                        "this run uses a temporary cache\n")
    assert json.loads(r.stdout)["models"][0]["parameters"]["total"] == MODELS[QWEN][1]
    assert list(temp_root.iterdir()) == []  # removed when the client closed


_WORKER = """
import json, sys
from hubvram.api import load_model
print(json.dumps({m: load_model(m).counts.total for m in sys.argv[1:]}))
"""


def test_eight_processes_share_one_cache(hub_env, tmp_path):
    hub = hub_env.hub
    models = [LLAMA, QWEN, MISTRAL]
    for m in models:
        serve(hub, m)
    hub.latency = 0.01  # widen the windows in which the processes overlap
    env = hub_env.subprocess_env()
    with within(90):
        procs = [subprocess.Popen([python(), "-c", _WORKER, *(models[i % 3:] + models[:i % 3])], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
        outs = [p.communicate(timeout=90) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and err == "", err
        assert json.loads(out) == {m: MODELS[m][1] for m in models}
    assert integrity(hub_env.db) == "ok"
    check_rows_complete(hub_env.db)
    shared = set(cached_paths(hub_env.db))

    # no lost entry: the same rows as one process alone writes, and every model answers offline from them
    hub.latency = 0.0
    alone = tmp_path / "alone"
    one = subprocess.run([python(), "-c", _WORKER, *models], env={**env, "HUBVRAM_CACHE_DIR": str(alone)},
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert one.returncode == 0, one.stderr
    assert shared == set(cached_paths(alone / "http_cache.sqlite"))
    hub.requests.clear()
    for m in models:
        assert hub_env.total(m, "--offline") == MODELS[m][1]
    assert len(hub.requests) == 0
