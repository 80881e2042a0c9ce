"""Output formats: table (tabulate), markdown, json, csv. Pure: objects in, text out.

Sizes print in GiB (2^30 bytes) and say so; JSON carries exact bytes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any, Iterable, Mapping, Sequence

from .architecture import GROUPS, Architecture

GIB = 1 << 30


def gib(n: int | float | None, digits: int = 2) -> str:
    return "—" if n is None else f"{n / GIB:.{digits}f}"


def human_count(n: int) -> str:
    for div, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], fmt: str = "table", **kw: Any) -> str:
    """Render rows with tabulate: ``simple`` for the terminal, ``github`` for markdown."""
    from tabulate import tabulate  # a terminal-only dependency: JSON output never imports it

    return tabulate(rows, headers=list(headers), tablefmt="github" if fmt == "markdown" else "simple",
                    disable_numparse=True, **kw)


# --------------------------------------------------------------------------------------------------
# Model picture
# --------------------------------------------------------------------------------------------------
def hub_total_notes(arch: Architecture) -> list[str]:
    """Why the Hub's published total (Σ numel of stored tensors) differs from the trained count."""
    c = arch.counts
    if c.stored_elements == c.total:
        return []
    parts = []
    kinds: dict[str, int] = {}
    for t in arch.tensors:
        if t.kind in ("buffer", "quant_side", "tied_copy"):
            kinds[t.kind] = kinds.get(t.kind, 0) + t.stored_elements
    packed = sum(t.stored_elements - t.params for t in arch.tensors
                 if t.kind == "weight" and t.quantized in ("gptq", "awq", "bnb4", "mxfp4"))
    if kinds.get("buffer"):
        parts.append(f"{kinds['buffer']:,} elements of non-trained buffers stored in the checkpoint "
                     "(rotary inv_freq, causal masks, router score biases)")
    if kinds.get("quant_side"):
        parts.append(f"{kinds['quant_side']:,} elements of quantization side tensors (scales, zeros, absmax)")
    if kinds.get("tied_copy"):
        parts.append(f"{kinds['tied_copy']:,} elements of a stored copy of the tied lm_head")
    if packed:
        parts.append(f"packed weights count {-packed:,} fewer stored elements than real parameters")
    return [f"Hub total {c.stored_elements:,} = {c.total:,} trained parameters + " + "; ".join(parts)]


def architecture_dict(arch: Architecture) -> dict[str, Any]:
    d = arch.dims
    out = {k: v for k, v in asdict(d).items() if k not in ("moe", "mla")}
    out["moe"] = asdict(d.moe) if d.moe else None
    out["mla"] = asdict(d.mla) if d.mla else None
    return out


def model_dict(arch: Architecture) -> dict[str, Any]:
    m, c = arch.metadata, arch.counts
    return {
        "id": m.model_id,
        "revision": m.revision,
        "source": m.source,
        "architecture_class": arch.dims.architecture,
        "provenance": {
            "config": m.provenance.config,
            "tensors": m.provenance.tensors,
            "revision": m.provenance.revision,
            "recorded": m.provenance.recorded,
            "notes": list(m.provenance.notes),
        },
        "parameters": {
            "total": c.total,
            "by_dtype": dict(c.by_dtype),
            "by_group": dict(c.by_group),
            "buffers": c.buffers,
            "quant_side_bytes": c.quant_side_bytes,
            "hub_total": c.stored_elements,
            "stored_bytes": c.stored_bytes,
            "notes": hub_total_notes(arch),
        },
        "architecture": architecture_dict(arch),
        "linear_modules": [asdict(lm) for lm in arch.linears],
        "warnings": list(arch.warnings),
    }


def model_summary(arch: Architecture, fmt: str = "table") -> str:
    m, c, d = arch.metadata, arch.counts, arch.dims
    rev = m.revision or m.provenance.revision
    lines = [f"{'## ' if fmt == 'markdown' else ''}{m.model_id}  ({d.architecture}, {m.source}: {rev})",
             ""]
    lines.append(f"Parameters: {c.total:,} ({human_count(c.total)})" +
                 (f"   [Hub total {c.stored_elements:,}]" if c.stored_elements != c.total else ""))
    lines += [f"  {n}" for n in hub_total_notes(arch)]
    by_dtype = ", ".join(f"{k} {v:,}" for k, v in c.by_dtype.items())
    lines.append(f"  by dtype: {by_dtype}")
    rows = [(g, f"{c.by_group[g]:,}", f"{100 * c.by_group[g] / c.total:.2f} %" if c.total else "")
            for g in (*GROUPS, "buffers") if c.by_group.get(g)]
    lines.append("")
    lines.append(table(rows, ("group", "parameters", "share"), fmt, colalign=("left", "right", "right")))
    lines.append("")
    dims = [("layers", d.num_layers), ("hidden", d.hidden_size), ("heads / kv heads", f"{d.num_heads} / {d.num_kv_heads}"),
            ("head_dim", d.head_dim), ("intermediate", d.intermediate_size), ("vocab", d.vocab_size),
            ("tied embeddings", "yes" if d.tied_embeddings else "no"),
            ("context length", d.max_position or "—"), ("sliding window", d.sliding_window or "—"),
            ("norm / mlp", f"{d.norm} / {d.mlp} ({d.activation})")]
    if d.moe:
        dims.append(("MoE", f"{d.moe.num_experts} experts, top-{d.moe.top_k}, expert width {d.moe.expert_intermediate}"
                     + (f", {d.moe.shared_experts} shared" if d.moe.shared_experts else "")
                     + f", {d.moe.moe_layers} MoE / {d.moe.dense_layers} dense layers"))
    if d.mla:
        dims.append(("MLA", f"q_lora {d.mla.q_lora_rank}, kv_lora {d.mla.kv_lora_rank}, "
                            f"qk {d.mla.qk_nope_head_dim}+{d.mla.qk_rope_head_dim}, v {d.mla.v_head_dim}"))
    if d.mtp_layers:
        dims.append(("MTP layers", d.mtp_layers))
    lines.append(table([(k, str(v)) for k, v in dims], ("dimension", "value"), fmt))
    lines.append("")
    lines.append(f"config:  {m.provenance.config}")
    lines.append(f"tensors: {m.provenance.tensors}")
    for w in arch.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Memory estimates
# --------------------------------------------------------------------------------------------------
#: Display rows of the breakdown: (label, component-name prefixes). Components alive at the peak are
#: summed into the first row whose prefix matches; the rows add up to the peak.
BREAKDOWN_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("weights (frozen or trained)", ("weights", "buffers", "master_weights")),
    ("LoRA adapters", ("lora_adapters",)),
    ("autocast weight copies", ("autocast_cache",)),
    ("gradients", ("gradients",)),
    ("optimizer states", ("optimizer_states",)),
    ("optimizer step temporaries", ("optimizer_step",)),
    ("activations (saved for backward)", ("activations", "inputs_embeds_grad", "grad_hidden", "backward.")),
    ("logits and loss (fp32)", ("logits",)),
    ("inputs, scratch, other", ("",)),
)


def _row_of(name: str) -> str:
    for label, prefixes in BREAKDOWN_ROWS:
        if any(name == p or name.startswith(p + ".") or (p.endswith(".") and name.startswith(p)) or p == ""
               for p in prefixes):
            return label
    return BREAKDOWN_ROWS[-1][0]


def estimate_breakdown(est: Any) -> dict[str, int]:
    """Bytes at the peak by display row (they sum to ``peak_allocated_bytes``)."""
    out = {label: 0 for label, _ in BREAKDOWN_ROWS}
    for c in est.at_peak():
        out[_row_of(c.name)] += c.bytes
    return out


def estimate_table(estimates: Sequence[Any], fmt: str = "table") -> str:
    """Components × methods at each method's peak, then the three figures and the setups."""
    if not estimates:
        return ""
    cols = [e.method for e in estimates]
    parts = [estimate_breakdown(e) for e in estimates]
    rows = [[label, *(gib(p[label]) if p[label] else "—" for p in parts)] for label, _ in BREAKDOWN_ROWS
            if any(p[label] for p in parts)]
    rows.append(["peak allocated (max_memory_allocated)", *(gib(e.peak_allocated_bytes) for e in estimates)])
    rows.append(["peak phase", *(e.peak_phase for e in estimates)])
    rows.append(["reserved (+ allocator fragmentation)", *(gib(e.reserved_bytes) for e in estimates)])
    rows.append(["device (+ CUDA context, as nvidia-smi)", *(gib(e.device_bytes) for e in estimates)])
    rows.append(["trainable parameters", *(f"{e.trainable_params:,}" for e in estimates)])
    title = ("### " if fmt == "markdown" else "") + "Training memory on one GPU (GiB = 2^30 bytes, at each method's peak)"
    lines = [title, "", table(rows, ["component", *cols], fmt, colalign=("left", *("right",) * len(cols))), ""]
    lines += [f"{e.method}: {e.setup.describe()}" for e in estimates]
    for w in dict.fromkeys(w for e in estimates for w in e.warnings):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    rows = list(rows)
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
