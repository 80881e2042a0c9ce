#!/usr/bin/env python3
"""Seed cache/ (the bundled snapshot) from ../shared/hub-snapshots: verbatim config.json files of real Hub
models, their sources and published parameter totals. Entries are "derived from config.json": the tensor
inventory is rebuilt on load by hubvram's layout rules, which tests/test_counts.py checks against the
published totals; where the Hub repo's index file was copied too, it rides along (its names add stored
buffers, its total_size is checked to the byte). `hubvram cache snapshot MODEL` replaces an entry with live safetensors headers.

    python tools/seed_snapshot.py [--shared ../shared] [--recorded YYYY-MM-DD]
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources_table(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and re.fullmatch(r"[\w.-]+/[\w.-]+", cells[1] or ""):
            src = re.sub(r"<br>.*", "", cells[3]).replace("`", "")
            out[cells[1]] = src
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--recorded", default=dt.date.today().isoformat())
    args = ap.parse_args()
    snaps = Path(args.shared) / "hub-snapshots"
    totals = {r["model_id"]: (int(r["total_params"]), r["source"])
              for r in csv.DictReader((snaps / "param_counts.csv").open())}
    srcs = sources_table((snaps / "SOURCES.md").read_text())
    for cfg in sorted(snaps.glob("*/*/config*.json")):
        mid = f"{cfg.parent.parent.name}/{cfg.parent.name}"
        total, tsrc = totals.get(mid, (None, None))
        index = None
        for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if (cfg.parent / name).exists():
                idx = json.loads((cfg.parent / name).read_text())
                index = {"file": name, "total_size": idx.get("metadata", {}).get("total_size"),
                         "weight_map": idx["weight_map"]}
                break
        entry = {
            "format": "hubvram-snapshot/1",
            "model_id": mid,
            "revision": None,
            "recorded": args.recorded,
            "config_source": f"verbatim copy of the Hub's {cfg.name}: {srcs.get(mid, 'see shared/hub-snapshots/SOURCES.md')}",
            "config": json.loads(cfg.read_text()),
            "tensors_source": None,
            "tensors": None,
            "published_total": total,
            "published_total_source": tsrc,
            "notes": (["historical RW-era config (2023-08-13)"] if "rev-" in cfg.name else []),
        }
        if index:
            entry["index"] = index
        out = ROOT / "cache" / (mid.replace("/", "--") + ".json")
        out.write_text(json.dumps(entry, indent=1) + "\n")
        print(out.relative_to(ROOT))


if __name__ == "__main__":
    main()
