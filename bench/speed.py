#!/usr/bin/env python3
"""hubvram speed benchmark: one table, measured within one run as ratios (issue 7).

    .venv/bin/python bench/speed.py              # full run (about 2-4 minutes), writes bench/results/speed-<date>.{json,md}
    .venv/bin/python bench/speed.py --quick      # fewer repeats
    .venv/bin/python bench/speed.py --no-peers   # skip hf-mem and accelerate

What it measures (all on this machine, in this run):

(a) warm single model, whole CLI process, against ``python -c pass`` (same interpreter, same environment):
    ``hubvram meta-llama/Meta-Llama-3-8B --offline`` (bundled snapshot), and a model fetched once from the
    fake Hub then answered from the HTTP cache (``--offline``, and online pinned at its commit);
(b) ``hubvram compare`` over 100 cached models (26 snapshot models + 74 fake-Hub repos warmed into the HTTP
    cache, which also writes each commit's memo), plus the same load in-process (``api.load_models``), the
    26 snapshot models alone, and the 100 with the memo removed before each run (stored headers parsed again);
(c) cold fetch of a Llama-3.1-405B-shaped repo (191 safetensors shards, real tensor names and shapes from
    ``hubvram.inventory.tensors_from_config``) from the fake Hub with 50 ms added to every request: round trips
    implied, requests by kind (client ``HubClient.stats`` and the fake Hub's log), peak RSS;
(d) peers against the same fake Hub: hf-mem (PyPI, own venv in bench/_work/hfmem-venv) and
    ``accelerate estimate-memory`` (the oracle venv .simvenv).

The fake Hub (tests/fakehub.py) runs in its own process so that its CPU time is not charged to the client.
Children run with byte-code caching on (PYTHONPYCACHEPREFIX=bench/_work/pycache), as an installed package
would; PYTHONDONTWRITEBYTECODE, HF_TOKEN, HF_ENDPOINT and HUBVRAM_* of the calling shell are dropped.
Not a test: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work"
RESULTS = ROOT / "bench" / "results"
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
HUBVRAM = VENV / "bin" / "hubvram"
HFMEM_VENV = WORK / "hfmem-venv"
SIMVENV = ROOT / ".simvenv"

LLAMA405 = "meta-llama/Llama-3.1-405B"
SMALL = "bench/Meta-Llama-3-8B"          # a fake-Hub copy of Meta-Llama-3-8B (4 shards, as on the Hub)
SNAPSHOT_8B = "meta-llama/Meta-Llama-3-8B"
LATENCY = 0.05
SHARD_BYTES = 5_000_000_000              # the Hub's default max_shard_size ("5GB")
N_COMPARE = 100
TREE: Path | None = None                 # --tree

COMPARE_26 = "hubvram compare --offline, the 26 snapshot models only"
COMPARE_NO_MEMO = "hubvram compare --offline, memo removed (headers parsed again)"
TARGET_WARM_RATIO = 8.0
TARGET_COMPARE_S = 1.5
TARGET_COLD_RTS = 4
TARGET_COLD_SLACK_S = 0.3


# ==============================================================================================================
# The fake Hub, in its own process (``speed.py --serve``): JSON lines on stdin/stdout
# ==============================================================================================================
def _snapshot_entries() -> list[dict]:
    out = []
    for p in sorted((ROOT / "cache").glob("*.json")):
        out.append(json.loads(p.read_text()))
    return out


def _split(tensors, n: int) -> list[list]:
    """Contiguous split into n shards of about equal bytes (empty shards dropped)."""
    total = sum(t.nbytes for t in tensors) or 1
    groups: list[list] = [[] for _ in range(n)]
    before = 0
    for t in tensors:
        groups[min(n - 1, before * n // total)].append(t)
        before += t.nbytes
    return [g for g in groups if g]


def _repo_files(config: dict, n_shards: int | None = None) -> dict:
    from fakehub import VirtualSafetensors, build_safetensors_header
    from hubvram.inventory import tensors_from_config

    tensors, _ = tensors_from_config(config)
    total = sum(t.nbytes for t in tensors)
    n = n_shards or max(1, math.ceil(total / SHARD_BYTES))
    files: dict = {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": b'{"bos_token_id": 1, "eos_token_id": 2}',
        "tokenizer_config.json": b'{"model_max_length": 8192}',
        "README.md": b"# benchmark copy\n",
    }
    groups = _split(tensors, n) if n > 1 else [list(tensors)]
    if len(groups) == 1:
        h, size = build_safetensors_header({t.name: (t.dtype, t.shape) for t in groups[0]}, {"format": "pt"})
        files["model.safetensors"] = VirtualSafetensors(h, size)
        return files
    weight_map = {}
    for i, g in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        h, size = build_safetensors_header({t.name: (t.dtype, t.shape) for t in g}, {"format": "pt"})
        files[name] = VirtualSafetensors(h, size)
        weight_map.update({t.name: name for t in g})
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2).encode()
    return files


def variant_ids() -> list[str]:
    entries = _snapshot_entries()
    out = []
    for i in range(N_COMPARE - len(entries)):
        e = entries[i % len(entries)]
        out.append(f"bench/{e['model_id'].split('/')[1]}-v{i // len(entries) + 1}")
    return out


def _classify(rec) -> str:
    p = rec.path
    if p.startswith("/api/"):
        return "api" if "/revision/" in p or p.count("/") == 3 else "api_other"
    if p.startswith("/cdn/"):
        return "cdn_range" if rec.range else "cdn"
    if "/resolve/" in p:
        name = p.rsplit("/", 1)[-1]
        if rec.status == 302:
            return "resolve_302"
        if name == "config.json":
            return "config"
        if name.endswith(".index.json"):
            return "index"
        return "resolve_other"
    return "other"


def serve() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import fakehub
    from fakehub import FakeHub

    # 191 simultaneous connections: a deeper accept queue than the tests need (no SYN retries)
    fakehub._Server.request_queue_size = 1024
    hub = FakeHub().start()
    entries = {e["model_id"]: e for e in _snapshot_entries()}
    shas = {}
    files405 = _repo_files(entries[LLAMA405]["config"], 191)
    n405 = sum(1 for f in files405 if f.endswith(".safetensors"))
    shas[LLAMA405] = hub.add_repo(LLAMA405, files405)
    shas[SMALL] = hub.add_repo(SMALL, _repo_files(entries[SNAPSHOT_8B]["config"]))
    by_name = {mid.split("/")[1]: e for mid, e in entries.items()}
    for vid in variant_ids():
        base = vid.split("/")[1].rsplit("-v", 1)[0]
        shas[vid] = hub.add_repo(vid, _repo_files(by_name[base]["config"]))
    print(json.dumps({"endpoint": hub.endpoint, "shas": shas, "shards_405b": n405}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "latency":
            hub.latency = float(cmd["value"])
            reply: dict = {"ok": True}
        elif op == "clear":
            hub.requests.clear()
            reply = {"ok": True}
        elif op == "timeline":  # (seconds since the first request, kind) of every request, as logged
            recs = list(hub.requests)
            t0 = min((r.time for r in recs), default=0.0)
            reply = {"events": [(round(r.time - t0, 4), _classify(r)) for r in recs]}
        elif op == "log":
            kinds: dict[str, int] = {}
            for r in hub.requests:
                k = _classify(r)
                kinds[k] = kinds.get(k, 0) + 1
            reply = {"total": len(hub.requests), "kinds": kinds, "errors": len(hub.server_errors)}
        else:
            break
        print(json.dumps(reply), flush=True)
    hub.stop()


class Hub:
    """Client side of the fake-Hub process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(PY), __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=child_env(), cwd=ROOT, text=True)
        info = json.loads(self.proc.stdout.readline())
        self.endpoint, self.shas, self.shards_405b = info["endpoint"], info["shas"], info["shards_405b"]

    def _call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def latency(self, s: float) -> None:
        self._call(op="latency", value=s)

    def clear(self) -> None:
        self._call(op="clear")

    def log(self) -> dict:
        return self._call(op="log")

    def close(self) -> None:
        try:
            self._call(op="quit")
        except Exception:
            pass
        self.proc.wait(10)


# ==============================================================================================================
# Child processes
# ==============================================================================================================
def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                        "HUGGING_FACE_HUB_TOKEN") and not k.startswith("HUBVRAM_")}
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    if TREE is not None:  # measure the hubvram sources of another checkout (a git worktree) with this venv
        env["PYTHONPATH"] = str(TREE / "src")
    env["HF_HOME"] = str(WORK / "hf_home")          # no token, no user config
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def timed(cmd: list[str], env: dict[str, str], *, stdin: str | None = None) -> dict:
    """Run one process; wall seconds (fork to reap), its own peak RSS, exit code, output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT,
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
        if stdin is not None:
            p.stdin.write(stdin.encode())
            p.stdin.close()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return {"wall": wall, "maxrss_kb": ru.ru_maxrss, "rc": p.returncode,
                "out": out.read().decode(errors="replace"), "err": err.read().decode(errors="replace")}


def check(r: dict, what: str) -> dict:
    if r["rc"] != 0:
        raise SystemExit(f"bench: {what} failed (exit {r['rc']}):\n{r['err'][-2000:]}")
    return r


def last_line(r: dict) -> str:
    lines = r["err"].strip().splitlines()
    return f"exit {r['rc']}: " + (lines[-1][:200] if lines else "?")


def summary(walls: list[float]) -> dict:
    return {"median": statistics.median(walls), "min": min(walls), "n": len(walls)}


def interleaved(cmds: dict[str, tuple[list[str], dict[str, str]]], repeats: int) -> dict[str, dict]:
    """Run every command once untimed (byte code, page cache), then `repeats` rounds, one of each per round."""
    for name, (cmd, env) in cmds.items():
        check(timed(cmd, env), name)
    walls: dict[str, list[float]] = {name: [] for name in cmds}
    rss: dict[str, int] = {}
    for _ in range(repeats):
        for name, (cmd, env) in cmds.items():
            r = check(timed(cmd, env), name)
            walls[name].append(r["wall"])
            rss[name] = max(rss.get(name, 0), r["maxrss_kb"])
    return {name: {**summary(w), "maxrss_kb": rss[name]} for name, w in walls.items()}


COLD_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from hubvram import api
t1 = time.perf_counter()
endpoint, cache_dir, model = sys.argv[1:4]
client = api.make_client(offline=False, cache_dir=cache_dir, endpoint=endpoint, token=False)
t2 = time.perf_counter()
arch = api.load_model(model, client=client)
t3 = time.perf_counter()
client.close()
import pathlib
cache_bytes = sum(p.stat().st_size for p in pathlib.Path(cache_dir).glob("http_cache.sqlite*"))
print(json.dumps({"import_s": t1 - t0, "cache_bytes": cache_bytes, "client_s": t2 - t1, "fetch_s": t3 - t2, "params": arch.counts.total,
                  "tensors": len(arch.tensors), "stats": client.stats.as_dict(),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

LOAD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from hubvram import api
ids = [l.strip() for l in open(sys.argv[2]) if l.strip()]
archs = api.load_models(ids, offline=True, cache_dir=sys.argv[1])
t1 = time.perf_counter()
bad = [str(a) for a in archs if isinstance(a, Exception)]
print(json.dumps({"load_s": t1 - t0, "models": len(archs), "failed": bad[:5], "n_failed": len(bad),
                  "sources": sorted({getattr(a.metadata, "source", "?") for a in archs if not isinstance(a, Exception)})}))
"""

# hf-mem hard-codes https://huggingface.co; this shim (run by hf-mem's own interpreter) rewrites that origin
# to the fake Hub in httpx before hf-mem's CLI runs. Nothing else of hf-mem is touched.
HFMEM_SHIM = r"""
import os, sys, httpx2
target = httpx2.URL(os.environ["BENCH_FAKE_HUB"])
_send = httpx2.AsyncClient.send
async def send(self, request, *a, **k):
    if request.url.host == "huggingface.co":
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        request.headers["Host"] = f"{target.host}:{target.port}"
    return await _send(self, request, *a, **k)
httpx2.AsyncClient.send = send
from hf_mem.cli import main
sys.argv = ["hf-mem", *sys.argv[1:]]
main()
"""


# ==============================================================================================================
# Scenarios
# ==============================================================================================================
def machine() -> dict:
    src = TREE or ROOT
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    py = subprocess.run([str(PY), "-c", "import sys, platform; print(platform.python_implementation(), "
                                       "sys.version.split()[0])"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=src).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True,
                           text=True, cwd=src).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "python": py,
            "os": platform.platform(), "hubvram_commit": commit + ("+dirty" if dirty else "")}


def warm_single(hub: Hub, work: Path, repeats: int) -> dict:
    empty = work / "cache-empty"
    warm = work / "cache-warm"
    sha = hub.shas[SMALL]
    hub.latency(0)
    check(timed([str(HUBVRAM), SMALL], child_env(HUBVRAM_CACHE_DIR=str(warm), HF_ENDPOINT=hub.endpoint)),
          "fetching the fake-Hub model once")
    online = child_env(HUBVRAM_CACHE_DIR=str(warm), HF_ENDPOINT=hub.endpoint)
    cmds = {
        "python -c pass": ([str(PY), "-c", "pass"], child_env()),
        "snapshot --offline": ([str(HUBVRAM), SNAPSHOT_8B, "--offline"], child_env(HUBVRAM_CACHE_DIR=str(empty))),
        "HTTP cache --offline": ([str(HUBVRAM), SMALL, "--offline"], online),
        "HTTP cache, online @sha": ([str(HUBVRAM), f"{SMALL}@{sha}"], online),
        "HTTP cache, online @main": ([str(HUBVRAM), SMALL], online),
    }
    res = interleaved(cmds, repeats)
    # requests the warm online runs send (one each, counted separately)
    reqs = {}
    for name in ("HTTP cache --offline", "HTTP cache, online @sha", "HTTP cache, online @main"):
        hub.clear()
        check(timed(*cmds[name]), name)
        reqs[name] = hub.log()["total"]
    base = res["python -c pass"]
    for name, r in res.items():
        r["ratio_median"] = r["median"] / base["median"]
        r["ratio_min"] = r["min"] / base["min"]
        r["requests"] = reqs.get(name, 0)
    return res


def compare_100(hub: Hub, work: Path, repeats: int) -> dict:
    cache = work / "cache-compare"
    ids_all = [e["model_id"] for e in _snapshot_entries()] + variant_ids()
    assert len(ids_all) == N_COMPARE, len(ids_all)
    ids_file = work / "compare-ids.txt"
    ids_file.write_text("\n".join(ids_all) + "\n")
    hub.latency(0)
    t = time.perf_counter()
    check(timed([str(HUBVRAM), "cache", "warm", "--from-file", "-", "-j", "8"],
                child_env(HUBVRAM_CACHE_DIR=str(cache), HF_ENDPOINT=hub.endpoint),
                stdin="\n".join(variant_ids()) + "\n"), "cache warm")
    warm_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    out: dict = {"models": N_COMPARE, "snapshot_models": N_COMPARE - len(variant_ids()),
                 "http_cache_models": len(variant_ids()), "warm_s": warm_s, "cache_bytes": size}
    env = child_env(HUBVRAM_CACHE_DIR=str(cache), HF_ENDPOINT=hub.endpoint)  # the cache is keyed by endpoint
    has_compare = timed([str(HUBVRAM), "compare", "--help"], env)["rc"] == 0
    snap_file = work / "compare-snapshot-ids.txt"
    snap_file.write_text("\n".join(e["model_id"] for e in _snapshot_entries()) + "\n")
    cmds = {"api.load_models (in-process, 100 models)": ([str(PY), "-c", LOAD_CHILD, str(cache), str(ids_file)], env)}
    if has_compare:
        cmds["hubvram compare --offline (whole process)"] = (
            [str(HUBVRAM), "compare", "--from-file", str(ids_file), "--offline"], env)
        cmds[COMPARE_26] = ([str(HUBVRAM), "compare", "--from-file", str(snap_file), "--offline"], env)
        cmds[COMPARE_NO_MEMO] = ([str(HUBVRAM), "compare", "--from-file", str(ids_file), "--offline"], env)
    res = {}
    for name, (cmd, e) in cmds.items():
        no_memo = name == COMPARE_NO_MEMO
        if no_memo:
            shutil.rmtree(cache / "memo", ignore_errors=True)
        r = timed(cmd, e)                       # untimed warm-up
        if r["rc"] != 0:
            res[name] = {"error": last_line(r)}
            continue
        walls = []
        for _ in range(max(2, repeats // 2) if no_memo else repeats):
            if no_memo:  # every run parses the stored headers again (and writes the memo again)
                shutil.rmtree(cache / "memo", ignore_errors=True)
            r = timed(cmd, e)
            walls.append(r["wall"])
        res[name] = {**summary(walls), "maxrss_kb": r["maxrss_kb"]}
        if name.startswith("api."):
            res[name]["child"] = json.loads(r["out"])
    out["runs"] = res
    out["compare_cli"] = has_compare
    return out


def cold_405b(hub: Hub, work: Path, repeats: int) -> dict:
    out: dict = {"shards": hub.shards_405b}
    for lat in (0.0, LATENCY):
        hub.latency(lat)
        runs = []
        for i in range(repeats):
            cache = work / f"cache-cold-{lat}-{i}"
            shutil.rmtree(cache, ignore_errors=True)
            hub.clear()
            r = check(timed([str(PY), "-c", COLD_CHILD, hub.endpoint, str(cache), LLAMA405], child_env()), "cold fetch")
            child = json.loads(r["out"])
            child["process_s"] = r["wall"]
            child["server"] = hub.log()
            runs.append(child)
        cli, cli_error = [], None
        for i in range(repeats):
            cache = work / f"cache-cold-cli-{lat}-{i}"
            shutil.rmtree(cache, ignore_errors=True)
            r = timed([str(HUBVRAM), LLAMA405], child_env(HUBVRAM_CACHE_DIR=str(cache), HF_ENDPOINT=hub.endpoint))
            if r["rc"] != 0:
                cli_error = last_line(r)
                break
            cli.append(r["wall"])
        best = min(runs, key=lambda c: c["fetch_s"])
        out[f"lat{int(lat * 1000)}"] = {
            "fetch": summary([c["fetch_s"] for c in runs]), "cli": summary(cli) if cli else {"error": cli_error},
            "stats": best["stats"], "server": best["server"], "maxrss_kb": max(c["maxrss_kb"] for c in runs),
            "import_s": statistics.median(c["import_s"] for c in runs), "params": best["params"],
            "cache_bytes": best["cache_bytes"],
            "tensors": best["tensors"]}
    l0, l50 = out["lat0"], out[f"lat{int(LATENCY * 1000)}"]
    out["round_trips_implied"] = (l50["fetch"]["median"] - l0["fetch"]["median"]) / LATENCY
    out["target_s"] = TARGET_COLD_RTS * LATENCY + TARGET_COLD_SLACK_S
    return out


def peers(hub: Hub, work: Path, repeats: int, ours: dict) -> dict:
    out: dict = {}
    # ---- hf-mem
    hf_py = HFMEM_VENV / "bin" / "python"
    if not hf_py.exists():
        out["hf-mem"] = {"skipped": f"no {HFMEM_VENV} (python3 -m venv {HFMEM_VENV} && {HFMEM_VENV}/bin/pip install hf-mem)"}
    else:
        version = subprocess.run([str(hf_py), "-c", "import importlib.metadata as m; print(m.version('hf-mem'))"],
                                 capture_output=True, text=True).stdout.strip()
        hf = {"version": version}
        # Does it honour HF_ENDPOINT? Point HF_ENDPOINT at the fake Hub and see whether a request arrives.
        hub.latency(0)
        hub.clear()
        r = timed([str(HFMEM_VENV / "bin" / "hf-mem"), "--model-id", SMALL, "--json-output"],
                  child_env(HF_ENDPOINT=hub.endpoint, REQUEST_TIMEOUT="5"))
        got = hub.log()["total"]
        hf["honours_HF_ENDPOINT"] = got > 0
        hf["HF_ENDPOINT_probe"] = (f"{got} request(s) reached the fake Hub; exit {r['rc']}"
                                   + ("" if got else " (it calls https://huggingface.co directly)"))
        env = child_env(BENCH_FAKE_HUB=hub.endpoint)
        for model, lat, key in ((SMALL, 0.0, "8b_lat0"), (SMALL, LATENCY, "8b_lat50"), (LLAMA405, 0.0, "405b_lat0"),
                                (LLAMA405, LATENCY, "405b_lat50")):
            hub.latency(lat)
            cmd = [str(hf_py), "-c", HFMEM_SHIM, "--model-id", model, "--json-output"]
            check(timed(cmd, env), f"hf-mem {model}")
            walls = []
            for _ in range(repeats):
                hub.clear()
                r = check(timed(cmd, env), f"hf-mem {model}")
                walls.append(r["wall"])
            res = json.loads(r["out"])
            hf[key] = {**summary(walls), "requests": hub.log(), "maxrss_kb": r["maxrss_kb"],
                       "memory_bytes": res.get("memory")}
        out["hf-mem"] = hf
    # ---- hubvram, cold, for the same models (hf-mem keeps no cache: every hf-mem run is a cold one)
    mine: dict = {}
    for model, lat, key in ((SMALL, 0.0, "8b_lat0"), (SMALL, LATENCY, "8b_lat50")):
        hub.latency(lat)
        walls = []
        for i in range(repeats + 1):
            cache = work / f"cache-peer-{key}-{i}"
            hub.clear()
            r = check(timed([str(HUBVRAM), model], child_env(HUBVRAM_CACHE_DIR=str(cache), HF_ENDPOINT=hub.endpoint)),
                      f"hubvram {model} cold")
            if i:  # the first run is the untimed warm-up
                walls.append(r["wall"])
        mine[key] = {**summary(walls), "requests": hub.log(), "maxrss_kb": r["maxrss_kb"]}
    out["hubvram_cold"] = mine
    # ---- accelerate estimate-memory
    acc = SIMVENV / "bin" / "accelerate"
    if not acc.exists():
        out["accelerate"] = {"skipped": f"no {acc}"}
    else:
        a: dict = {}
        hf_home = work / "acc-hf-home"
        local = work / "acc-local-config"
        local.mkdir(parents=True, exist_ok=True)
        cfg = next(e for e in _snapshot_entries() if e["model_id"] == SNAPSHOT_8B)["config"]
        (local / "config.json").write_text(json.dumps(cfg))
        r = timed([str(acc), "estimate-memory", str(local), "--library_name", "transformers"],
                  child_env(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home)))
        a["offline_local_config"] = (f"exit {r['rc']}: " + (r["err"].strip().splitlines() or ["?"])[-1][:200])
        hub.latency(0)
        cmd = [str(acc), "estimate-memory", SMALL, "--library_name", "transformers"]
        env = child_env(HF_ENDPOINT=hub.endpoint, HF_HOME=str(hf_home))
        r0 = timed(cmd, env)  # downloads config.json once into hf_home
        if r0["rc"] != 0:
            a["error"] = r0["err"].strip().splitlines()[-1][:300] if r0["err"].strip() else f"exit {r0['rc']}"
        else:
            walls = []
            for _ in range(max(2, repeats // 2)):
                hub.clear()
                r = check(timed(cmd, env), "accelerate estimate-memory")
                walls.append(r["wall"])
            a["8b_warm"] = {**summary(walls), "requests": hub.log(), "maxrss_kb": r["maxrss_kb"]}
        out["accelerate"] = a
    return out


# ==============================================================================================================
# Report
# ==============================================================================================================
def fmt_s(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def build_table(m: dict, a: dict, b: dict, c: dict, d: dict) -> str:
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    ok = lambda cond: "PASS" if cond else "FAIL"  # noqa: E731
    mm = lambda r: f"{fmt_s(r['median'])} / {fmt_s(r['min'])}"  # noqa: E731
    # (a)
    base = a["python -c pass"]
    rows.append(("(a) python -c pass (baseline, same interpreter)", mm(base), "1.00×", ""))
    for name in ("snapshot --offline", "HTTP cache --offline", "HTTP cache, online @sha", "HTTP cache, online @main"):
        r = a[name]
        model = SNAPSHOT_8B if name.startswith("snapshot") else SMALL + ("@<sha>" if "@sha" in name else "")
        flag = " --offline" if "offline" in name else ""
        where = {"snapshot --offline": "bundled snapshot", "HTTP cache --offline": "HTTP cache",
                 "HTTP cache, online @sha": "HTTP cache, online, 0 requests",
                 "HTTP cache, online @main": f"HTTP cache, online, {r['requests']} request"}[name]
        rows.append((f"(a) hubvram {model}{flag} ({where})", mm(r),
                     f"{r['ratio_median']:.2f}× / {r['ratio_min']:.2f}×",
                     f"≤ {TARGET_WARM_RATIO:.0f}× {ok(r['ratio_median'] <= TARGET_WARM_RATIO)}"))
    notes.append("(a) warm runs read the memo (one JSON file per fetched commit); online, `@<sha>` sends nothing and "
                 "a branch sends one revision GET by http.client: requests, requests-cache and huggingface_hub are "
                 "not imported (hubvram/fastpath.py)")
    # (b)
    for name, r in b["runs"].items():
        is_cli = name.startswith("hubvram compare")
        if "error" in r:
            rows.append((f"(b) {name}", "failed", "", ""))
            notes.append(f"(b) {name}: {r['error']}")
            continue
        target = "(part of it)" if not is_cli else "(info)" if name in (COMPARE_26, COMPARE_NO_MEMO) else \
            f"≤ {TARGET_COMPARE_S} s {ok(r['median'] <= TARGET_COMPARE_S)}"
        rows.append((f"(b) {name}", mm(r), "", target))
    if not b["compare_cli"]:
        rows.append(("(b) hubvram compare (CLI)", "not available", "", ""))
    notes.append(f"(b) {b['models']} models: {b['snapshot_models']} bundled snapshot + {b['http_cache_models']} fake-Hub "
                 f"repos warmed into the HTTP cache ({b['cache_bytes'] / 2**20:.0f} MiB, warmed in {b['warm_s']:.1f} s); "
                 "they include 4 × DeepSeek-V3 (91,991 tensors each) and 4 × Qwen3-30B-A3B (18,867); `cache warm` "
                 "writes each commit's memo, which the compare reads (the 'memo removed' row parses the stored "
                 "headers again); the 74 fake-Hub repos are copies of the 26 snapshot models under other names")
    # (c)
    lat = f"lat{int(LATENCY * 1000)}"
    l0, l50 = c["lat0"], c[lat]
    rows.append((f"(c) cold 405B ({c['shards']} shards), 0 ms, fetch", mm(l0["fetch"]), "", "(CPU floor)"))
    rows.append((f"(c) cold 405B, {int(LATENCY * 1000)} ms per request, fetch", mm(l50["fetch"]),
                 f"{c['round_trips_implied']:.1f} RTs implied",
                 f"≤ {fmt_s(c['target_s'])} {ok(l50['fetch']['median'] <= c['target_s'])}"))
    for key, r in (("0 ms", l0), (f"{int(LATENCY * 1000)} ms", l50)):
        if "error" in r["cli"]:
            rows.append((f"(c) cold 405B, {key}, whole CLI process", "failed", "", ""))
            notes.append(f"(c) CLI at {key}: {r['cli']['error']}")
        else:
            rows.append((f"(c) cold 405B, {key}, whole CLI process", mm(r["cli"]), "", "(info: start-up + fit table)"))
    st = l50["stats"]
    kinds = l50["server"]["kinds"]
    rows.append(("(c) requests per cold 405B fetch", f"{l50['server']['total']}", "", ""))
    rows.append(("(c) peak RSS of the cold 405B process", f"{l50['maxrss_kb'] / 1024:.0f} MiB", "", ""))
    rows.append(("(c) HTTP cache written by it", f"{l50['cache_bytes'] / 2**20:.1f} MiB", "", ""))
    notes.append("(c) requests by kind, fake Hub log: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
                 + "; client HubClient.stats: " + ", ".join(f"{k} {v}" for k, v in sorted(st.items()))
                 + " (revision lookups = api; extra header reads = header_extra)")
    notes.append(f"(c) round trips implied = (fetch at {int(LATENCY * 1000)} ms − fetch at 0 ms) / {int(LATENCY * 1000)} ms; "
                 "the latency chain itself is 3 round trips: revision lookup ∥ config.json ∥ index, then per shard "
                 "resolve (302) → CDN (206), all shards at once")
    # (d)
    hf = d.get("hf-mem", {})
    if "skipped" in hf:
        rows.append(("(d) hf-mem", "skipped", "", ""))
        notes.append(f"(d) hf-mem: {hf['skipped']}")
    elif hf:
        rows.append((f"(d) hf-mem {hf['version']} honours HF_ENDPOINT?", "yes" if hf["honours_HF_ENDPOINT"] else "no", "", ""))
        notes.append(f"(d) hf-mem with HF_ENDPOINT=<fake Hub>: {hf['HF_ENDPOINT_probe']}; it is timed through a shim "
                     "that rewrites https://huggingface.co to the fake Hub inside its httpx client (its HTTP/2 "
                     "is not used over plain http)")
        mine = d.get("hubvram_cold", {})
        for key in ("8b_lat0", "8b_lat50"):
            if key in hf and key in mine:
                r, o = hf[key], mine[key]
                ms = key.split("_lat")[1]
                rows.append((f"(d) hubvram {SMALL}, cold, {ms} ms, whole process", mm(o), "1.00×",
                             f"{o['requests']['total']} req"))
                rows.append((f"(d) hf-mem, same model, {ms} ms (keeps no cache)", mm(r),
                             f"{r['median'] / o['median']:.2f}× hubvram", f"{r['requests']['total']} req"))
        for key, ours_key in (("405b_lat0", "lat0"), ("405b_lat50", lat)):
            if key in hf:
                r = hf[key]
                ours_cli = c[ours_key]["cli"]
                ours = ours_cli["median"] if "median" in ours_cli else c[ours_key]["fetch"]["median"]
                rows.append((f"(d) hf-mem 405B, {key.split('_lat')[1]} ms (keeps no cache)", mm(r),
                             f"{r['median'] / ours:.2f}× hubvram cold CLI", f"{r['requests']['total']} req"))
    acc = d.get("accelerate", {})
    if "skipped" in acc:
        rows.append(("(d) accelerate estimate-memory", "skipped", "", ""))
        notes.append(f"(d) accelerate: {acc['skipped']}")
    elif acc:
        rows.append(("(d) accelerate estimate-memory <local config dir>, offline", "does not run", "", ""))
        notes.append(f"(d) accelerate offline from a local config folder: {acc['offline_local_config']} "
                     "(it always asks the Hub API for model_info first)")
        if "8b_warm" in acc:
            r = acc["8b_warm"]
            ours = a["HTTP cache, online @main"]["median"]
            rows.append((f"(d) accelerate estimate-memory {SMALL}, config cached", mm(r),
                         f"{r['median'] / ours:.1f}× hubvram warm @main", f"{r['requests']['total']} req"))
        elif "error" in acc:
            rows.append(("(d) accelerate estimate-memory", "failed", "", ""))
            notes.append(f"(d) accelerate: {acc['error']}")
    head = ("measurement", "median / min", "ratio", "target")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    mach = (f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['python']}, {m['os']}; "
            f"hubvram {m['hubvram_commit']}")
    return "\n".join([mach, "", line(head), sep, *(line(r) for r in rows), "", *(f"- {n}" for n in notes)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--only", default="abcd", help="subset of sections, e.g. 'ac'")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--label", default="", help="suffix of the result files: speed-<date>-<label>.{json,md}")
    ap.add_argument("--tree", default=None, help="measure the hubvram sources of this checkout (e.g. a git worktree "
                                                  "at another commit) instead of the working tree")
    args = ap.parse_args()
    global TREE
    TREE = Path(args.tree).resolve() if args.tree else None
    if args.serve:
        return serve()
    reps = args.repeats or (5 if args.quick else 15)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="speed-", dir=WORK))
    m = machine()
    print(f"bench: {m}", file=sys.stderr)
    hub = Hub()
    try:
        a = b = c = d = {}
        if "a" in args.only:
            print("bench: (a) warm single model ...", file=sys.stderr)
            a = warm_single(hub, work, reps)
        if "b" in args.only:
            print("bench: (b) compare over 100 cached models ...", file=sys.stderr)
            b = compare_100(hub, work, max(3, reps // 3))
        if "c" in args.only:
            print("bench: (c) cold 405B ...", file=sys.stderr)
            c = cold_405b(hub, work, max(3, reps // 3))
        if "d" in args.only and not args.no_peers:
            print("bench: (d) peers ...", file=sys.stderr)
            d = peers(hub, work, max(3, reps // 3), c)
    finally:
        hub.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": m, "warm_single": a,
              "compare": b, "cold_405b": c, "peers": d, "repeats": reps}
    table = build_table(m, a, b, c, d) if a and b and c else json.dumps(result, indent=1)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d") + (f"-{args.label}" if args.label else "")
    (out / f"speed-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"speed-{stamp}.md").write_text(f"# hubvram speed, {result['date']}\n\n{table}\n")
    print(f"bench: wrote {out}/speed-{stamp}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
