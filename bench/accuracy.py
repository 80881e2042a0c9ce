#!/usr/bin/env python3
"""How close is hubvram? Three measurements, printed as tables and written to bench/results/.

    python bench/accuracy.py                  # all three parts; writes bench/results/accuracy-<date>.md/.json
    python bench/accuracy.py --part oracle    # oracle | calibration | article (repeatable)
    python bench/accuracy.py --no-write       # print only
    python bench/accuracy.py --csv PATH       # another calibration CSV (same columns)

(a) **oracle**: hubvram's peak allocated against the fake-tensor oracle over every fixtures/oracle/*.json
    (bench/oracle_map.py holds the flag -> Setup mapping, shared with tests/test_oracle_agreement.py).
(b) **calibration**: hubvram against ../shared/calibration/measurements-calibration.csv, each row compared
    with the figure its ``measure`` names (bench/calib_map.py holds the column and framework rules; no rule
    is per row: this is a measurement, not a fit).
(c) **article**: the seed article's Llama 3 numbers beside hubvram's (issue 3, "The seed's worked example").

Bench only: needs no torch and no network (the models come from the bundled snapshot or bench/models/).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import calib_map  # noqa: E402
import oracle_map  # noqa: E402
from hubvram.memory import Setup, estimate  # noqa: E402

GIB = 1024 ** 3
GB = 1e9
RESULTS = os.path.join(HERE, "results")


# =====================================================================================================
# (a) oracle
# =====================================================================================================
def part_oracle() -> tuple[str, dict]:
    rows = oracle_map.compare_all()
    worst = sorted((r for r in rows if r.error_pct is not None), key=lambda r: -abs(r.error_pct))[:5]
    lines = ["## (a) hubvram vs the fake-tensor oracle", "",
             f"{len(rows)} fixtures in fixtures/oracle/ (oracle: real transformers 5.24 / peft 0.21.2 / bitsandbytes "
             "0.50.2 training steps on fake tensors, shared/tools/simulate_peak.py). hubvram figure: "
             "`peak_allocated_bytes` (the oracle counts live tensors as `torch.cuda.max_memory_allocated` "
             "would). Phases compared by kind (forward / backward / optimizer; ≠ marks a disagreement). "
             "Mapping of the oracle's flags: bench/oracle_map.py.", "",
             oracle_map.summary_table(rows), "", "Largest |error|:", "",
             oracle_map.table(worst), "", "<details><summary>every configuration</summary>", "",
             oracle_map.table(rows), "", "</details>", ""]
    data = {"summary": oracle_map.summary(rows), "rows": [r.to_dict() for r in rows]}
    return "\n".join(lines), data


# =====================================================================================================
# (b) calibration
# =====================================================================================================
FLAG_TEXT = {
    "len≤": "real samples shorter than seq_len (padded dataset): hubvram evaluated at the maximum",
    "stack≠": "the framework used a feature hubvram does not model (see notes)",
    "unk": "a knob the row does not state: hubvram's default used (see notes)",
    "meas?": "statistic not stated: compared with reserved",
    "alias": "model resolved to a snapshot entry with identical shapes",
    "cfg": "model config from bench/models/ (exact published config)",
    "1gpu?": "table says several GPUs, the run's YAML says devices=1: evaluated on one GPU",
    "low": "trust 'low' in the CSV",
}


def _fmt(x, spec=".2f", dash="–"):
    return dash if x is None else format(x, spec)


def calib_tables(rows: list[calib_map.CalibRow]) -> tuple[str, dict]:
    scored = [r for r in rows if r.scored]
    bounds = [r for r in rows if r.figure == "bound" and r.skip is None]
    skipped = [r for r in rows if r.skip]
    groups = sorted({r.group for r in scored} | {r.group for r in bounds})

    lines = ["## (b) hubvram vs published measurements (shared/calibration)", "",
             f"{len(rows)} rows in the calibration CSV: {len(scored)} measured rows scored, {len(bounds)} bound rows "
             f"checked, {len(skipped)} skipped. Each measured row is compared with the hubvram figure its "
             "`measure` names (allocated → peak allocated; reserved → reserved; nvidia-smi → device; 'active' → "
             "peak allocated; unknown → reserved), per GPU for multi-GPU rows (hubvram.parallel.per_gpu). "
             "Error = (hubvram − measured) / measured. p90 = nearest-rank 90th percentile of |error|. "
             "Rules: bench/calib_map.py (per column and per framework, none per row).", "",
             "### Summary per framework", "",
             "| framework | scored rows | median \\|error\\| | p90 \\|error\\| | median signed error | exact-length rows: n, median \\|error\\| | bounds passed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    summary_fw = []
    for g in groups:
        rs = [r for r in rows if r.group == g]
        st = calib_map.stats(rs)
        b = [r for r in rs if r in bounds]
        bp = f"{sum(1 for r in b if r.bound_pass)}/{len(b)}" if b else "–"
        lines.append(f"| {g} | {st['n']} | {_fmt(st['median_abs_pct'], '.1f')} % | {_fmt(st['p90_abs_pct'], '.1f')} % | "
                     f"{_fmt(st['median_signed_pct'], '+.1f')} % | {st['n_exact_length']}, "
                     f"{_fmt(st['median_abs_pct_exact_length'], '.1f')} % | {bp} |")
        summary_fw.append({"framework": g, **st, "bounds_passed": sum(1 for r in b if r.bound_pass), "bounds": len(b)})
    st = calib_map.stats(rows)
    lines.append(f"| **all** | {st['n']} | {_fmt(st['median_abs_pct'], '.1f')} % | {_fmt(st['p90_abs_pct'], '.1f')} % | "
                 f"{_fmt(st['median_signed_pct'], '+.1f')} % | {st['n_exact_length']}, "
                 f"{_fmt(st['median_abs_pct_exact_length'], '.1f')} % | "
                 f"{sum(1 for r in bounds if r.bound_pass)}/{len(bounds)} |")
    summary_all = {**st, "bounds_passed": sum(1 for r in bounds if r.bound_pass), "bounds": len(bounds)}

    lines += ["", "### Summary per method", "",
              "| method | scored rows | median \\|error\\| | p90 \\|error\\| | median signed error |", "|---|---:|---:|---:|---:|"]
    summary_m = []
    for m in ("full", "lora", "qlora"):
        rs = [r for r in scored if r.method == m]
        if not rs:
            continue
        s = calib_map.stats(rs)
        lines.append(f"| {m} | {s['n']} | {_fmt(s['median_abs_pct'], '.1f')} % | {_fmt(s['p90_abs_pct'], '.1f')} % | "
                     f"{_fmt(s['median_signed_pct'], '+.1f')} % |")
        summary_m.append({"method": m, **s})

    worst = sorted(scored, key=lambda r: -abs(r.error_pct))[:5]
    lines += ["", "### Largest |error|", "", _row_header()] + [_row_line(r) for r in worst]
    lines += ["", "### Every measured row", "", _row_header()]
    lines += [_row_line(r) for r in sorted(scored, key=lambda r: (r.group, r.row_id))]
    lines += ["", "Flags: " + "; ".join(f"`{k}` {v}" for k, v in FLAG_TEXT.items()) + ".", ""]

    lines += ["### Bounds (OOM_BOUND: hubvram should not fit; FIT_BOUND: it should)", "",
              "Checked with hubvram's own fit rule (`hubvram.fit.fits`: per-GPU reserved ≤ the GPU's usable memory "
              "= total − 512 MiB context).", "",
              "| row | framework | status | model | method | setup | GPUs | hubvram reserved/GPU GiB | usable GiB | result | flags |",
              "|---|---|---|---|---|---|---|---:|---:|---|---|"]
    for r in sorted(bounds, key=lambda r: (r.group, r.row_id)):
        lines.append(f"| {r.row_id} | {r.group} | {r.status} | {_short(r.model)} | {r.method} | {r.setup_text} | "
                     f"{r.plan} on {r.gpu} | {r.hub['reserved'] / GIB:.2f} | {r.bound_gpu_usable / GIB:.2f} | "
                     f"{'pass' if r.bound_pass else '**fail**'} | {','.join(r.flags)} |")

    sec = [(r, s) for r in rows for s in r.secondary if "error_pct" in s]
    if sec:
        lines += ["", "### Secondary figures of the same runs (not in the summaries)", "",
                  "| row | framework | what | measured GiB | hubvram GiB | error % |", "|---|---|---|---:|---:|---:|"]
        for r, s in sec:
            lines.append(f"| {r.row_id} | {r.group} | {s['what']} → hubvram {s['figure']} | {s['measured_gib']:.2f} | "
                         f"{s['hub_gib']:.2f} | {s['error_pct']:+.1f} |")

    gaps = [(r, s) for r, s in sec if s["figure"] == "device" and r.figure == "allocated" and r.scored]
    if gaps:
        lines += ["", "### Overhead: nvidia-smi minus allocated, same run", "",
                  "What the allocator and the driver add on top of the live tensors (fragmentation, CUDA context, "
                  "and for multi-GPU runs NCCL buffers outside PyTorch's allocator), measured vs hubvram's "
                  "device − peak allocated.", "",
                  "| row | GPUs | measured allocated | measured nvidia-smi | measured gap GiB | hubvram gap GiB |",
                  "|---|---|---:|---:|---:|---:|"]
        for r, s in gaps:
            lines.append(f"| {r.row_id} | {r.plan} | {r.measured_gib:.2f} | {s['measured_gib']:.2f} | "
                         f"{s['measured_gib'] - r.measured_gib:.2f} | {(r.hub['device'] - r.hub['allocated']) / GIB:.2f} |")

    lines += ["", "### Skipped rows", "", "| row | status | method | model | reason |", "|---|---|---|---|---|"]
    for r in skipped:
        lines.append(f"| {r.row_id} | {r.status} | {r.method} | {r.model_text or '–'} | {r.skip} |")
    lines.append("")
    data = {"summary_per_framework": summary_fw, "summary_all": summary_all, "summary_per_method": summary_m,
            "rows": [r.to_dict() for r in rows]}
    return "\n".join(lines), data


def _short(model: str) -> str:
    return model.replace("bench/models/", "").replace("--", "/")


def _row_header() -> str:
    return ("| row | framework | model | method | setup | GPUs | measure → figure | measured GiB | hubvram GiB | "
            "error % | flags | notes |\n|---|---|---|---|---|---|---|---:|---:|---:|---|---|")


def _row_line(r: calib_map.CalibRow) -> str:
    return (f"| {r.row_id} | {r.group} | {_short(r.model)} | {r.method} | {r.setup_text} | {r.plan} | {r.figure} | "
            f"{r.measured_gib:.2f} | {r.hub_gib:.2f} | {r.error_pct:+.1f} | {','.join(r.flags)} | "
            f"{'; '.join(r.notes)} |")


def part_calibration(csv_path: str) -> tuple[str, dict]:
    if not os.path.exists(csv_path):
        return f"## (b) calibration\n\n{csv_path} not found: skipped.\n", {"error": "csv not found"}
    return calib_tables(calib_map.evaluate_all(csv_path))


# =====================================================================================================
# (c) the seed article
# =====================================================================================================
ARTICLE_MODELS = (("Llama 3 8B", "meta-llama/Meta-Llama-3-8B"), ("Llama 3.1 70B", "meta-llama/Llama-3.1-70B"),
                  ("Llama 3.1 405B", "meta-llama/Llama-3.1-405B"))
#: GB (1e9) as the article states them; None where the article gives no number
ARTICLE_GB = {("Llama 3 8B", "full"): 69, ("Llama 3 8B", "lora"): 18, ("Llama 3 8B", "qlora"): 6,
              ("Llama 3.1 70B", "full"): 500, ("Llama 3.1 70B", "lora"): 160, ("Llama 3.1 70B", "qlora"): None,
              ("Llama 3.1 405B", "full"): 3250, ("Llama 3.1 405B", "lora"): 950, ("Llama 3.1 405B", "qlora"): 250}
#: the knobs under which hubvram's model states are the article's arithmetic (2 + 2 + 4 B/param for full)
ARTICLE_KNOBS = dict(precision="bf16", optimizer="adamw", prepare_kbit=False)
MODEL_STATES = ("weights", "weights.nf4", "weights.nf4_stats", "lora_adapters", "gradients", "optimizer_states",
                "optimizer_states.paged")


def model_states(est) -> dict[str, int]:
    c = {x.name: x.bytes for x in est.components}
    return {k: c[k] for k in MODEL_STATES if k in c}


def part_article() -> tuple[str, dict]:
    rows = []
    for label, mid in ARTICLE_MODELS:
        arch = oracle_map.snapshot_model(mid)
        for m in ("full", "lora", "qlora"):
            d = estimate(arch, Setup(method=m))
            nogc = estimate(arch, Setup(method=m, grad_checkpointing=False))
            a = estimate(arch, Setup(method=m, **ARTICLE_KNOBS))
            ms = model_states(a)
            rows.append({"model": label, "model_id": mid, "method": m, "article_gb": ARTICLE_GB[(label, m)],
                         "states_gb": sum(ms.values()) / GB, "states": {k: v / GB for k, v in ms.items()},
                         "article_setup_alloc_gb": a.peak_allocated_bytes / GB,
                         "default_alloc_gb": d.peak_allocated_bytes / GB, "default_device_gb": d.device_bytes / GB,
                         "default_phase": d.peak_phase, "nogc_alloc_gb": nogc.peak_allocated_bytes / GB,
                         "default_setup": d.setup.describe(), "article_setup": a.setup.describe(),
                         "params": arch.counts.total})
    lines = ["## (c) The seed article's Llama 3 numbers", "",
             "GB = 10⁹ B, as the article counts (8B × 2 B = 16 GB). *hubvram states* = weights + gradients + "
             "optimizer states that hubvram computes under `--precision bf16 --optimizer adamw` (pure bf16, torch "
             "AdamW: states in the parameter dtype) and, for QLoRA, `--no-prepare-kbit`: the article's own "
             "accounting, before its activation allowance. *defaults* = `hubvram MODEL` as shipped (batch 1 × seq "
             "2048, grad checkpointing, LoRA r16 all-linear fp32 adapters, QLoRA with double quant and "
             "prepare-kbit).", "",
             "| model | method | article | hubvram states (W + G + O) | article − states | hubvram peak allocated, defaults | "
             "hubvram device, defaults | hubvram peak allocated, no GC |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        art = r["article_gb"]
        art_s = "–" if art is None else f"{art:,}"
        diff_s = "–" if art is None else f"{art - r['states_gb']:+,.1f}"
        lines.append(f"| {r['model']} | {r['method']} | {art_s} | {r['states_gb']:,.1f} | "
                     f"{diff_s} | {r['default_alloc_gb']:,.1f} | "
                     f"{r['default_device_gb']:,.1f} | {r['nogc_alloc_gb']:,.1f} |")
    e8 = next(r for r in rows if r["model"] == "Llama 3 8B" and r["method"] == "full")["states"]
    lines += ["", f"Llama 3 8B full under those knobs: weights {e8['weights']:.2f} + gradients {e8['gradients']:.2f} + "
              f"AdamW states {e8['optimizer_states']:.2f} GB = {sum(e8.values()):.2f} GB; the article's 16 + 16 + 32 "
              "(+ ~5 activations) = 69 GB.", ""]
    return "\n".join(lines), {"rows": rows, "article_knobs": ARTICLE_KNOBS}


# =====================================================================================================
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", action="append", choices=("oracle", "calibration", "article"))
    ap.add_argument("--csv", default=calib_map.DEFAULT_CSV)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    parts = args.part or ["oracle", "calibration", "article"]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    md = [f"# hubvram accuracy ({date})", "",
          "Produced by `python bench/accuracy.py` from the working tree "
          f"(hubvram {_version()}); no torch, no network.", ""]
    data: dict = {"date": date}
    for p in parts:
        text, d = {"oracle": part_oracle, "calibration": lambda: part_calibration(args.csv),
                   "article": part_article}[p]()
        md.append(text)
        data[p] = d
    out = "\n".join(md)
    print(out)
    if not args.no_write:
        os.makedirs(RESULTS, exist_ok=True)
        base = os.path.join(RESULTS, f"accuracy-{date}")
        with open(base + ".md", "w") as fh:
            fh.write(out)
        with open(base + ".json", "w") as fh:
            json.dump(data, fh, indent=1, default=_json_default)
            fh.write("\n")
        print(f"\nwritten: {os.path.relpath(base, os.path.dirname(HERE))}.md / .json", file=sys.stderr)
    return 0


def _json_default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _version() -> str:
    try:
        from hubvram import __version__
        return __version__
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
