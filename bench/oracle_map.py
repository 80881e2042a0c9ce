"""Oracle fixture -> hubvram Setup, and the comparison of one fixture with hubvram's estimate. No torch.

The one copy of the mapping used by ``bench/accuracy.py`` (tables) and ``tests/test_oracle_agreement.py``
(the pinned agreement). Import it with ``bench/`` on ``sys.path``.

Each fixture (``fixtures/oracle/<name>.json``, written by ``bench/run_oracle.py``) holds the oracle's flags
under ``oracle_args.config``. They map onto hubvram's knobs one to one, with these rules:

=====================  ==================================================================================
oracle flag            hubvram Setup
=====================  ==================================================================================
method, batch, seq     method, batch_size, seq_len
grad_ckpt              grad_checkpointing (the oracle uses use_reentrant=False, as hubvram assumes)
optimizer adamw        adam_impl foreach -> ``adamw-foreach``; fused -> ``adamw`` (torch fused);
                       single -> ``adamw`` (see SINGLE_NOTE: hubvram has no single-tensor AdamW)
optimizer sgd          sgd_momentum 0 -> ``sgd``; > 0 -> ``sgd-momentum``
dtype / autocast       bf16|fp16|fp32 + none -> same precision (pure, no autocast);
                       amp-bf16 (fp32 params + bf16 autocast) -> ``amp-bf16`` for full fine-tuning;
                       bf16|fp16 params + autocast -> ``amp-bf16|amp-fp16`` for LoRA/QLoRA (hubvram's amp
                       for adapters = half base + autocast). Other pairs cannot be expressed: the row says so.
attn                   attention (sdpa|eager)
padding_mask           padding
lora_r                 lora_rank (alpha does not change memory)
lora_targets           lora_targets as the explicit list the oracle got (never rewritten to all-linear)
lora_dropout           lora_dropout (passed explicitly: hubvram's default is 0.05, the oracle's 0.0)
lora_same_dtype        lora_dtype ``bf16`` (else ``fp32``, peft's default)
double_quant           double_quant (explicit: hubvram's default is True)
prepare_kbit           prepare_kbit (explicit: hubvram's default is True)
(transformers 5.24)    transformers_major 5
=====================  ==================================================================================

Phases: the oracle names ``step<N>.forward|backward|optimizer``; hubvram's phases are finer
(``forward.layer``, ``forward``, ``backward.start`` ... ``backward.end``, ``optimizer``). They are compared
by kind (forward / backward / optimizer), the step number dropped (hubvram describes step >= 2; step 1 and
step 2 differ only by optimizer states, which step 1's optimizer phase creates).
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if os.path.join(REPO, "src") not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(REPO, "src"))

from hubvram.architecture import Architecture, describe  # noqa: E402
from hubvram import snapshot  # noqa: E402
from hubvram.memory import Estimate, Setup, estimate  # noqa: E402

FIXTURE_DIR = os.path.join(REPO, "fixtures", "oracle")
GIB = 1024 ** 3
TOLERANCE_PCT = 3.0

SINGLE_NOTE = ("adam_impl single mapped to adamw (fused): hubvram has no single-tensor AdamW; its step makes "
               "per-parameter temporaries (sqrt(exp_avg_sq) and the denominator, ~2x the largest parameter) "
               "instead of foreach's copy of every state at once")

#: oracle flags this mapping knows; any other key in a fixture's config makes the row unmappable
KNOWN_FLAGS = frozenset({"name", "model", "note", "method", "batch", "seq", "grad_ckpt", "optimizer", "adam_impl",
                         "sgd_momentum", "dtype", "autocast", "attn", "lora_r", "lora_dropout", "lora_targets",
                         "lora_same_dtype", "double_quant", "prepare_kbit", "padding_mask"})


class Unmappable(Exception):
    """The oracle's flags describe a configuration hubvram's Setup cannot express."""


def phase_kind(phase: str) -> str:
    """``step2.backward`` -> ``backward``; ``backward.start`` -> ``backward``; ``forward.layer`` -> ``forward``."""
    p = phase.split(".", 1)[1] if phase.startswith("step") and "." in phase else phase
    return p.split(".", 1)[0]


def _precision(cfg: dict) -> tuple[str, list[str]]:
    dtype, ac, method = cfg["dtype"], cfg["autocast"], cfg["method"]
    if dtype in ("bf16", "fp16", "fp32") and ac == "none":
        return dtype, []
    if dtype == "amp-bf16" and ac in ("none", "bf16"):
        if method == "full":
            return "amp-bf16", []
        raise Unmappable("dtype amp-bf16 (fp32 base) with LoRA/QLoRA: hubvram's amp for adapters keeps the "
                         "base in the half dtype")
    if dtype in ("bf16", "fp16") and ac in ("bf16", "fp16"):
        if ac != dtype:
            raise Unmappable(f"{dtype} params with {ac} autocast: no hubvram precision")
        if method == "full":
            raise Unmappable(f"full fine-tuning with {dtype} params + autocast: hubvram's amp-* for full "
                             "fine-tuning means fp32 master weights")
        return "amp-" + dtype, []
    if dtype == "fp32" and ac in ("bf16", "fp16"):
        if method == "full":
            return "amp-" + ac, []
        raise Unmappable("fp32 base + autocast with LoRA/QLoRA: hubvram's amp for adapters keeps the base in "
                         "the half dtype")
    raise Unmappable(f"dtype {dtype!r} with autocast {ac!r}")


def _optimizer(cfg: dict) -> tuple[str, list[str]]:
    if cfg["optimizer"] == "adamw":
        impl = cfg["adam_impl"]
        if impl == "foreach":
            return "adamw-foreach", []
        if impl == "fused":
            return "adamw", []
        if impl == "single":
            return "adamw", [SINGLE_NOTE]
        raise Unmappable(f"adam_impl {impl!r}")
    if cfg["optimizer"] == "sgd":
        return ("sgd-momentum" if float(cfg["sgd_momentum"]) > 0 else "sgd"), []
    raise Unmappable(f"optimizer {cfg['optimizer']!r}")


def setup_from_oracle(cfg: dict) -> tuple[Setup, list[str]]:
    """The hubvram Setup for one oracle configuration (``oracle_args.config``), and notes on the mapping.

    Raises :class:`Unmappable` when hubvram cannot express the configuration.
    """
    unknown = set(cfg) - KNOWN_FLAGS
    if unknown:
        raise Unmappable(f"oracle flags this mapping does not know: {sorted(unknown)}")
    precision, n1 = _precision(cfg)
    optimizer, n2 = _optimizer(cfg)
    if cfg["attn"] not in ("sdpa", "eager"):
        raise Unmappable(f"attn {cfg['attn']!r}")
    targets = tuple(t.strip() for t in str(cfg["lora_targets"]).split(",") if t.strip())
    if cfg["lora_same_dtype"] and cfg["dtype"] not in ("bf16",):
        raise Unmappable(f"lora_same_dtype with {cfg['dtype']} params: hubvram's lora_dtype is fp32 or bf16")
    setup = Setup(
        method=cfg["method"], batch_size=int(cfg["batch"]), seq_len=int(cfg["seq"]),
        grad_checkpointing=bool(cfg["grad_ckpt"]), precision=precision, optimizer=optimizer,
        lora_rank=int(cfg["lora_r"]), lora_targets=targets, lora_dropout=float(cfg["lora_dropout"]),
        lora_dtype="bf16" if cfg["lora_same_dtype"] else "fp32", double_quant=bool(cfg["double_quant"]),
        prepare_kbit=bool(cfg["prepare_kbit"]), attention=cfg["attn"], padding=bool(cfg["padding_mask"]),
        transformers_major=5)
    return setup, n1 + n2


@lru_cache(maxsize=None)
def snapshot_model(model_id: str) -> Architecture:
    """The bundled snapshot's picture of ``model_id`` (what ``load_model(id, offline=True)`` answers with no
    HTTP cache or imported metadata; read directly so the comparison never depends on a user's cache)."""
    meta = snapshot.load(model_id)
    if meta is None:
        raise LookupError(f"{model_id} is not in the bundled snapshot (cache/)")
    return describe(meta)


@dataclass
class OracleRow:
    name: str
    model: str
    method: str
    oracle_bytes: int
    oracle_phase: str
    hub_bytes: int | None = None
    hub_phase: str | None = None
    setup: Setup | None = None
    notes: list[str] = field(default_factory=list)
    unmappable: str | None = None
    oracle_phases: dict[str, int] = field(default_factory=dict)   # step2 peak per kind (oracle)
    hub_phases: dict[str, int] = field(default_factory=dict)      # max per kind (hubvram)
    est: Estimate | None = field(default=None, repr=False)

    @property
    def error_pct(self) -> float | None:
        if self.hub_bytes is None:
            return None
        return 100.0 * (self.hub_bytes - self.oracle_bytes) / self.oracle_bytes

    @property
    def ok(self) -> bool:
        e = self.error_pct
        return e is not None and abs(e) <= TOLERANCE_PCT

    @property
    def phase_agrees(self) -> bool | None:
        if self.hub_phase is None:
            return None
        return phase_kind(self.hub_phase) == phase_kind(self.oracle_phase)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "method": self.method, "oracle_peak_bytes": self.oracle_bytes,
                "oracle_peak_phase": self.oracle_phase, "hubvram_peak_allocated_bytes": self.hub_bytes,
                "hubvram_peak_phase": self.hub_phase, "error_pct": self.error_pct, "within_tolerance": self.ok,
                "phase_kind_agrees": self.phase_agrees, "unmappable": self.unmappable, "notes": self.notes,
                "setup": self.setup.to_dict() if self.setup else None,
                "oracle_step2_phase_peaks": self.oracle_phases, "hubvram_phase_kind_peaks": self.hub_phases}


def fixture_paths() -> list[str]:
    return sorted(glob.glob(os.path.join(FIXTURE_DIR, "*.json")))


def compare(path: str) -> OracleRow:
    """hubvram against one oracle fixture."""
    with open(path) as fh:
        fx = json.load(fh)
    cfg = fx["oracle_args"]["config"]
    row = OracleRow(name=cfg["name"], model=cfg["model"], method=cfg["method"], oracle_bytes=int(fx["peak_bytes"]),
                    oracle_phase=fx["peak_phase"])
    for ph, v in fx.get("phases", {}).items():
        if ph.startswith("step2."):
            row.oracle_phases[phase_kind(ph)] = int(v["peak_bytes"])
    try:
        setup, notes = setup_from_oracle(cfg)
    except Unmappable as e:
        row.unmappable = str(e)
        return row
    row.setup, row.notes = setup, notes
    est = estimate(snapshot_model(cfg["model"]), setup)
    row.est = est
    row.hub_bytes = est.peak_allocated_bytes
    row.hub_phase = est.peak_phase
    for ph, b in est.phase_bytes.items():
        k = phase_kind(ph)
        row.hub_phases[k] = max(row.hub_phases.get(k, 0), b)
    return row


@lru_cache(maxsize=1)
def compare_all() -> tuple[OracleRow, ...]:
    return tuple(compare(p) for p in fixture_paths())


# ---- rendering (shared by the bench and the test's failure message) ----------------------------------
def fmt_row(r: OracleRow) -> str:
    if r.unmappable:
        return (f"| {r.name} | {r.method} | {r.oracle_bytes / GIB:.3f} | not mappable | | {r.oracle_phase} | "
                f"| {r.unmappable} |")
    mark = "" if r.ok else " ✗"
    agree = "" if r.phase_agrees else " ≠"
    return (f"| {r.name} | {r.method} | {r.oracle_bytes / GIB:.3f} | {r.hub_bytes / GIB:.3f} | "
            f"{r.error_pct:+.2f}{mark} | {r.oracle_phase} | {r.hub_phase}{agree} | {'; '.join(r.notes)} |")


def table(rows) -> str:
    head = ["| config | method | oracle GiB | hubvram GiB | error % | oracle phase | hubvram phase | notes |",
            "|---|---|---:|---:|---:|---|---|---|"]
    return "\n".join(head + [fmt_row(r) for r in rows])


def summary(rows) -> list[dict[str, Any]]:
    """Per method and overall: n, within tolerance, median and max |error|, unmappable count."""
    out = []
    groups: dict[str, list[OracleRow]] = {}
    for r in rows:
        groups.setdefault(r.method, []).append(r)
    order = [m for m in ("full", "lora", "qlora") if m in groups] + sorted(set(groups) - {"full", "lora", "qlora"})
    for label, rs in [(m, groups[m]) for m in order] + [("all", list(rows))]:
        errs = [abs(r.error_pct) for r in rs if r.error_pct is not None]
        out.append({"group": label, "n": len(rs), "within": sum(1 for r in rs if r.ok),
                    "unmappable": sum(1 for r in rs if r.unmappable),
                    "median_abs_pct": statistics.median(errs) if errs else None,
                    "max_abs_pct": max(errs) if errs else None,
                    "phase_kind_agree": sum(1 for r in rs if r.phase_agrees)})
    return out


def summary_table(rows) -> str:
    lines = [f"| method | configs | within {TOLERANCE_PCT:g} % | median abs error | max abs error | phase kind agrees "
             "| not mappable |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary(rows):
        med = "–" if s["median_abs_pct"] is None else f"{s['median_abs_pct']:.2f} %"
        mx = "–" if s["max_abs_pct"] is None else f"{s['max_abs_pct']:.2f} %"
        lines.append(f"| {s['group']} | {s['n']} | {s['within']} | {med} | {mx} | {s['phase_kind_agree']} | "
                     f"{s['unmappable']} |")
    return "\n".join(lines)
