#!/usr/bin/env python3
"""Run the fake-tensor oracle over bench/oracle_configs.py and write fixtures/oracle/<name>.json.

Bench-only: this script never imports torch itself.  It calls the oracle in its own virtual environment
(.simvenv, see ../shared/README.md) one configuration at a time, and writes each result verbatim plus
an `oracle_args` key (exact command line, package versions, the configuration entry).  Product code and
CI read only the JSON fixtures.

    python bench/run_oracle.py                      # every configuration
    python bench/run_oracle.py --only l1b-lora-gc,q05-lora   # a subset (repeatable, comma list)
    python bench/run_oracle.py --skip-existing      # only those without a fixture yet
    python bench/run_oracle.py --readme-only        # rebuild README.md / FAILURES.md from the fixtures

A failed run is recorded in fixtures/oracle/failed/<name>.json and listed in FAILURES.md; the loop goes
on with the next configuration.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from oracle_configs import DEFAULTS, ORACLE_CONFIGS  # noqa: E402

FIX_DIR = os.path.join(REPO, "fixtures", "oracle")
FAIL_DIR = os.path.join(FIX_DIR, "failed")
WORK_DIR = os.path.join(REPO, "bench", "_work", "oracle")  # git-ignored raw outputs and logs
GIB = 1024**3
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "numpy")
BOOL_FLAGS = ("grad_ckpt", "lora_same_dtype", "double_quant", "prepare_kbit", "padding_mask")
VALUE_FLAGS = ("method", "batch", "seq", "optimizer", "adam_impl", "sgd_momentum", "dtype", "autocast",
               "attn", "lora_r", "lora_dropout", "lora_targets")
REGEN = "python bench/run_oracle.py            # or: --only NAME[,NAME...]"


def _rel(path: str) -> str:
    return os.path.relpath(path, REPO)


def shared_dir(cli_value: str | None) -> str:
    d = cli_value or os.environ.get("HUBVRAM_SHARED") or os.path.join(REPO, "..", "shared")
    return os.path.normpath(os.path.abspath(d))


def build_argv(cfg: dict, python: str, shared: str, raw_out: str) -> list[str]:
    """The oracle command line, every flag spelled out (paths relative to the repo root)."""
    argv = [_rel(python) if os.path.isabs(python) else python,
            _rel(os.path.join(shared, "tools", "simulate_peak.py")),
            "--config", _rel(os.path.join(shared, "hub-snapshots", cfg["model"], "config.json"))]
    for key in VALUE_FLAGS:
        argv += ["--" + key.replace("_", "-"), str(cfg[key])]
    for key in BOOL_FLAGS:
        if cfg[key]:
            argv.append("--" + key.replace("_", "-"))
    argv += ["--out", _rel(raw_out)]
    return argv


def package_versions(python: str) -> dict:
    code = ("import importlib.metadata as m, json, sys\n"
            "v = {'python': sys.version.split()[0]}\n"
            f"for p in {PACKAGES!r}:\n"
            "    try:\n        v[p] = m.version(p)\n    except m.PackageNotFoundError:\n        v[p] = None\n"
            "print(json.dumps(v))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout)


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def run_one(cfg: dict, python: str, shared: str, versions: dict, timeout: int) -> tuple[bool, float]:
    name = cfg["name"]
    raw_out = os.path.join(WORK_DIR, f"{name}.raw.json")
    if os.path.exists(raw_out):
        os.remove(raw_out)
    argv = build_argv(cfg, python, shared, raw_out)
    oracle = os.path.join(shared, "tools", "simulate_peak.py")
    meta = {
        "name": name,
        "config": cfg,
        "command": shlex.join(argv),
        "argv": argv,
        "cwd": "repository root",
        "versions": versions,
        "oracle_path": _rel(oracle),
        "oracle_sha256": sha256(oracle),
        "model_config_sha256": sha256(os.path.join(shared, "hub-snapshots", cfg["model"], "config.json")),
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    t0 = time.time()
    err = None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=timeout)
        rc = proc.returncode
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, err = None, f"timed out after {timeout} s"
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    wall = round(time.time() - t0, 2)
    meta["run_wall_s"] = wall
    with open(os.path.join(WORK_DIR, f"{name}.log"), "w") as fh:
        fh.write(f"$ {meta['command']}\n--- rc={rc} wall={wall}s\n--- stderr\n{stderr}\n--- stdout\n{stdout}")
    result = None
    if rc == 0 and os.path.exists(raw_out):
        with open(raw_out) as fh:
            result = json.load(fh)
    elif err is None:
        err = f"exit status {rc}" + ("" if rc != 0 else " but no --out file")
    fail_path = os.path.join(FAIL_DIR, f"{name}.json")
    if result is None:
        os.makedirs(FAIL_DIR, exist_ok=True)
        tail = "\n".join((stderr or "").strip().splitlines()[-40:])
        with open(fail_path, "w") as fh:
            json.dump({"error": err, "stderr_tail": tail, "oracle_args": meta}, fh, indent=1)
            fh.write("\n")
        print(f"  FAILED {name}: {err} ({wall} s); see {_rel(fail_path)}", flush=True)
        return False, wall
    if "oracle_args" in result:
        raise SystemExit("oracle output already has an 'oracle_args' key")
    result["oracle_args"] = meta
    with open(os.path.join(FIX_DIR, f"{name}.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=str)
        fh.write("\n")
    if os.path.exists(fail_path):
        os.remove(fail_path)
    print(f"  ok {name}: peak {result['peak_bytes']} B = {result['peak_bytes'] / GIB:.3f} GiB "
          f"at {result['peak_phase']} ({wall} s)", flush=True)
    return True, wall


# ------------------------------------------------------------------------------------------------------
def _flags_summary(cfg: dict) -> str:
    parts = []
    for key in VALUE_FLAGS + BOOL_FLAGS:
        if key in ("method", "batch", "seq", "grad_ckpt"):
            continue
        val = cfg[key]
        if cfg["method"] == "full" and key.startswith("lora_"):
            continue
        if cfg["method"] != "qlora" and key in ("double_quant", "prepare_kbit"):
            continue
        if cfg["optimizer"] != "adamw" and key == "adam_impl":
            continue
        if val == DEFAULTS[key]:
            continue
        if key in BOOL_FLAGS:
            parts.append(key.replace("_", "-"))
        elif key == "lora_targets":
            parts.append("targets=" + val)
        else:
            parts.append(f"{key.replace('_', '-')}={val}")
    return ", ".join(parts)


def write_docs() -> None:
    rows, versions, oracle_sha, failures = [], set(), set(), []
    total_run = 0.0
    for cfg in ORACLE_CONFIGS:
        path = os.path.join(FIX_DIR, f"{cfg['name']}.json")
        fpath = os.path.join(FAIL_DIR, f"{cfg['name']}.json")
        if os.path.exists(path):
            with open(path) as fh:
                res = json.load(fh)
            oa = res["oracle_args"]
            versions.add(json.dumps(oa["versions"], sort_keys=True))
            oracle_sha.add(oa["oracle_sha256"])
            total_run += oa["run_wall_s"]
            rows.append((cfg, res))
        elif os.path.exists(fpath):
            with open(fpath) as fh:
                failures.append((cfg, json.load(fh)))
        else:
            rows.append((cfg, None))

    lines = [
        "# Oracle fixtures: simulated peak GPU memory of fine-tuning steps",
        "",
        "Ground truth for the memory model, produced by the fake-tensor oracle "
        "`../shared/tools/simulate_peak.py` (real transformers + peft + bitsandbytes training steps on fake "
        "tensors, live bytes tracked as `torch.cuda.max_memory_allocated` would count them; see "
        "`../shared/reference/simulation.md`). The oracle runs in its own venv `.simvenv`; product code and CI "
        "never import torch, they only read these JSON files.",
        "",
        "Each `<name>.json` is the oracle's JSON output verbatim, plus a key `oracle_args` holding the exact "
        "command line (`command`, `argv`, run from the repository root), the configuration entry from "
        "`bench/oracle_configs.py` (`config`), package versions, the oracle's sha256 and the run's wall time.",
        "",
        "## Regenerate",
        "",
        "```",
        "python3 -m venv .simvenv && .simvenv/bin/pip install torch==2.13.0 \\",
        "  && .simvenv/bin/pip install transformers==5.24.0 peft==0.21.2 accelerate bitsandbytes==0.50.2",
        REGEN,
        "python bench/run_oracle.py --readme-only   # rebuild this table from the fixtures",
        "```",
        "",
        "## Versions",
        "",
    ]
    for v in sorted(versions):
        lines.append("- " + ", ".join(f"{k} {val}" for k, val in json.loads(v).items()))
    for s in sorted(oracle_sha):
        lines.append(f"- oracle `simulate_peak.py` sha256 `{s}`")
    lines += [
        f"- total oracle wall time for the runs recorded here: {total_run:.0f} s "
        f"({len([r for r in rows if r[1]])} runs, one at a time on 2 cores)",
        "",
        "## Results",
        "",
        "Peak = the largest live-byte total over two training steps (allocations rounded to 512 B). "
        "GiB = 2^30 B. Flags not shown are at their defaults: AdamW foreach, bf16 weights, no autocast, sdpa "
        "(flash), LoRA r16 alpha 32 on all decoder Linear layers with fp32 adapters (peft default), "
        "no dropout, no padding, nf4 without double quant. `trainable` = trainable parameters.",
        "",
        "| name | model | method | B | S | GC | other flags | peak bytes | peak GiB | peak phase | trainable | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cfg, res in rows:
        head = (f"| {cfg['name']} | {cfg['model']} | {cfg['method']} | {cfg['batch']} | {cfg['seq']} | "
                f"{'yes' if cfg['grad_ckpt'] else 'no'} | {_flags_summary(cfg)} | ")
        if res is None:
            lines.append(head + "not run | | | | |")
        else:
            lines.append(head + f"{res['peak_bytes']} | {res['peak_bytes'] / GIB:.3f} | {res['peak_phase']} | "
                         f"{res['param_count_trainable']} | {res['oracle_args']['run_wall_s']:.0f} |")
    lines += [
        "",
        "## Notes",
        "",
        "- `lora_targets`: the oracle splits the targets on commas, so peft's `all-linear` shorthand cannot be "
        "passed; the default list `q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj` is what "
        "`all-linear` selects for Llama/Mistral/Qwen (lm_head excluded). For phi-2 the equivalent list is "
        "`q_proj,k_proj,v_proj,dense,fc1,fc2`.",
        "- phi-2's config has `resid_pdrop: 0.1`; the oracle runs the model in train mode, so its residual "
        "dropout masks (1 byte per element, fused CUDA dropout) are part of the phi-2 activations.",
        "- bitsandbytes prints `Failed to load CPU gemm_4bit_forward from kernels-community` on import; it is "
        "harmless here (the oracle uses bitsandbytes' fake kernels).",
        "- Cross-check with `../shared/reference/simulation.md`: the l8-* runs reproduce its Llama-3-8B table "
        "(74.79 / 60.13 / 36.40 / 18.93 / 9.58 GiB), l70-qlora-gc its Llama-3-70B QLoRA+GC 47.65 GiB, q7-lora-gc "
        "its Qwen2-7B 18.56 GiB; m7-lora-gc gives 15.26 GiB where that table says 15.28.",
        "- Not modelled by the oracle: allocator fragmentation (reserved > allocated), CUDA context, cuBLAS "
        "workspace, kernel-internal scratch (tens of MB).",
        "",
    ]
    if failures:
        lines += [f"{len(failures)} configuration(s) failed: see `FAILURES.md`.", ""]
    with open(os.path.join(FIX_DIR, "README.md"), "w") as fh:
        fh.write("\n".join(lines))

    fl = ["# Oracle runs that failed", ""]
    if not failures:
        fl.append("None of the recorded runs failed (configurations never run are listed as `not run` in README.md).")
    for cfg, rec in failures:
        fl += [f"## {cfg['name']} ({cfg['model']})", "", f"- error: {rec['error']}",
               f"- command: `{rec['oracle_args']['command']}`", "", "```", rec["stderr_tail"], "```", ""]
    with open(os.path.join(FIX_DIR, "FAILURES.md"), "w") as fh:
        fh.write("\n".join(fl) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="config names (comma list, repeatable)")
    ap.add_argument("--skip-existing", action="store_true", help="skip configs that already have a fixture")
    ap.add_argument("--list", action="store_true", help="print the oracle commands and exit")
    ap.add_argument("--readme-only", action="store_true", help="only rebuild README.md and FAILURES.md")
    ap.add_argument("--python", default=os.path.join(REPO, ".simvenv", "bin", "python"),
                    help="the oracle venv's python (default .simvenv/bin/python)")
    ap.add_argument("--shared", default=None, help="the shared/ folder (default ../shared or $HUBVRAM_SHARED)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per oracle run")
    args = ap.parse_args(argv)

    os.makedirs(FIX_DIR, exist_ok=True)
    if args.readme_only:
        write_docs()
        return 0
    shared = shared_dir(args.shared)
    wanted = {n.strip() for item in args.only for n in item.split(",") if n.strip()}
    known = {c["name"] for c in ORACLE_CONFIGS}
    if wanted - known:
        raise SystemExit(f"unknown config name(s): {sorted(wanted - known)}")
    todo = [c for c in ORACLE_CONFIGS if not wanted or c["name"] in wanted]
    if args.skip_existing:
        todo = [c for c in todo if not os.path.exists(os.path.join(FIX_DIR, f"{c['name']}.json"))]
    if args.list:
        for c in todo:
            print(shlex.join(build_argv(c, args.python, shared, os.path.join(WORK_DIR, f"{c['name']}.raw.json"))))
        return 0
    if not os.path.exists(args.python):
        raise SystemExit(f"{args.python} not found: create the oracle venv first (see fixtures/oracle/README.md)")
    os.makedirs(WORK_DIR, exist_ok=True)
    versions = package_versions(args.python)
    print(f"oracle venv: {versions}", flush=True)
    t0 = time.time()
    n_ok = 0
    for i, cfg in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {cfg['name']}", flush=True)
        ok, _ = run_one(cfg, args.python, shared, versions, args.timeout)
        n_ok += ok
    print(f"{n_ok}/{len(todo)} ok in {time.time() - t0:.0f} s", flush=True)
    write_docs()
    return 0 if n_ok == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
