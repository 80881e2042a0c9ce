"""A row of ../shared/calibration/measurements-calibration.csv -> hubvram Setup, Plan and figure. No torch.

The rules are per column and per framework (documented below), never per row: the final judgement uses
rows this bench does not have, so nothing here is fitted to the numbers.

Column rules
------------
* ``status``: MEASURED rows are scored; OOM_BOUND / FIT_BOUND rows are pass/fail checks of hubvram's own
  fit rule (``hubvram.fit.fits``: per-GPU reserved <= the GPU's usable memory); ESTIMATED rows are skipped.
* ``method``: full / lora / qlora; every other method (adapter, adapter_v2, dora, ia3, ...) is skipped.
* ``hf_model_id``: the bundled snapshot, an alias with identical shapes (:data:`ALIASES`), or a config
  this bench ships in ``bench/models/`` (exact published configs, README there); else skipped.
* ``precision``: fp32 -> ``fp32``; "autocast" / "mixed" / "AMP" -> ``amp-bf16`` (``amp-fp16`` when fp16);
  fp16 -> ``fp16``; bf16 -> ``bf16`` (pure). The HF Trainer QLoRA recipes (Unsloth baselines, the HF blog)
  run ``bf16=True`` / ``fp16=True``, i.e. autocast: ``amp-*`` (framework rule).
* ``optimizer``: bnb PagedAdamW -> ``paged-adamw`` (32-bit paged states, outside PyTorch's allocator);
  adamw_8bit -> ``adamw-8bit``; "fused" -> ``adamw``; any other torch AdamW (torch.optim.AdamW, HF
  Trainer's adamw_torch, train.py 'adamw') -> ``adamw-foreach`` (torch's CUDA default when neither
  ``foreach`` nor ``fused`` is passed); unknown -> hubvram's default (``adamw``), flagged.
* ``lora_rank``: the first integer; unknown -> hubvram's default 16, flagged.
* ``lora_targets``: logical names (query/key/value/projection/mlp/head, q/k/v/o/gate/up/down,
  q_proj ... output_proj, "+ MLP") resolved against the model's own Linear names (a fused ``qkv_proj`` /
  ``query_key_value`` / ``gate_up_proj`` stands for each of its parts); "all linear" -> ``all-linear``.
* ``micro_batch_size``, ``seq_len``: the first integer. ``seq_len_note`` saying that real samples are
  shorter (padded datasets: "padded to longest in batch", "dataset-dependent", "typical samples shorter")
  flags the row ``len≤``: hubvram is evaluated at the stated maximum, an upper bound on the tokens.
* ``grad_checkpointing``: yes/no; "unknown (... probably single-device, no ckpt)" -> no;
  other unknown -> hubvram's default (on), flagged.
* ``flash_attention``: "no" -> ``eager``; FA2 stated explicitly (use_flash_attn, "yes (FA2)") -> ``flash``;
  otherwise ``sdpa`` (which runs the flash kernel for half-precision unpadded batches).
* ``double_quant``: yes/no; unknown -> hubvram's default (on), flagged.
* ``num_gpus`` / ``sharding`` / ``cpu_offload``: FSDP FULL_SHARD -> ``Plan("fsdp", n)`` (+ ``offload
  params`` for FSDP CPU offload), NO_SHARD -> ``Plan("ddp", n)``; "unknown (config devices=1)" rows are the
  LitGPT 4xA10G duplicates whose YAML says one device: evaluated on one GPU, flagged. Per-GPU figures come
  from ``hubvram.parallel.per_gpu(estimate, plan, model_layout(arch, setup))``.
* ``measure``: allocated (max_memory_allocated, HF Trainer's peak torch allocated) -> peak allocated;
  "active" peak -> peak allocated (active bytes are allocated blocks; said in the notes); reserved ->
  reserved; nvidia-smi -> device; unknown -> reserved (said in the notes).

Framework rules (:data:`FRAMEWORKS`)
------------------------------------
LitGPT and torchtune run their own model code with the whole model (adapters included) in bf16 and no
PEFT; padded batches there carry no attention mask (``is_causal``), so ``padding`` is off. PEFT >= 0.12
(fms-acceleration's peft 0.13.2, the PEFT benchmark) keeps adapters in fp32 (``autocast_adapter_dtype``);
older PEFT (fsdp_qlora Mar 2024, llama-recipes 2023, Unsloth Dec 2023 and the 2023 HF blog) cast adapters to
the base weight's dtype when it is a float (bf16 for LoRA, and for fsdp_qlora's bf16-stored 4-bit weights),
and left them fp32 over a uint8 4-bit weight. ``prepare_model_for_kbit_training`` is what the single-GPU
HF Trainer/TRL QLoRA recipes call; FSDP QLoRA (TRL skips it for sharded 4-bit weights, fsdp_qlora's own
loop), LitGPT and torchtune do not. Padding (an attention mask) applies to HF-based rows whose
``seq_len_note`` says the batch is padded. transformers 4.x for the HF-based stacks of 2023-2025 (it
matters for MoE only: experts are nn.Linear there).
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if os.path.join(REPO, "src") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "src"))

from hubvram.api import load_model  # noqa: E402
from hubvram.architecture import Architecture  # noqa: E402
from hubvram.fit import FIT_FIGURE, fits  # noqa: E402
from hubvram.gpus import GPU, get_gpu  # noqa: E402
from hubvram.memory import Setup, estimate  # noqa: E402
from hubvram.parallel import Plan, model_layout, per_gpu  # noqa: E402

from oracle_map import snapshot_model  # noqa: E402

GIB = 1024 ** 3
DEFAULT_CSV = os.path.normpath(os.path.join(REPO, "..", "shared", "calibration", "measurements-calibration.csv"))
MODELS_DIR = os.path.join(HERE, "models")

# ---- models ----------------------------------------------------------------------------------------------
#: hf_model_id -> (snapshot id with identical tensor shapes, why)
ALIASES: dict[str, tuple[str, str]] = {
    "meta-llama/Meta-Llama-3.1-8B": ("meta-llama/Llama-3.1-8B", "the repo's former name"),
    "meta-llama/Llama-3.1-8B-Instruct": ("meta-llama/Llama-3.1-8B", "Instruct = base shapes"),
    "meta-llama/Llama-3.2-3B-Instruct": ("meta-llama/Llama-3.2-3B", "Instruct = base shapes"),
    "NousResearch/Llama-2-70b-hf": ("meta-llama/Llama-2-70b-hf", "re-upload of the same checkpoint"),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": ("mistralai/Mixtral-8x7B-v0.1", "Instruct = base shapes"),
    "decapoda-research/llama-7b-hf": ("meta-llama/Llama-2-7b-hf", "LLaMA-1 7B has Llama-2-7B's shapes"),
    "decapoda-research/llama-13b-hf": ("meta-llama/Llama-2-13b-hf", "LLaMA-1 13B has Llama-2-13B's shapes"),
    "not stated (Mistral 7B v0.2 base)": ("mistralai/Mistral-7B-v0.1",
                                          "v0.2 has v0.1's shapes (rope_theta, sliding window differ)"),
}
#: hf_model_id -> reason it is not evaluated
UNSUPPORTED_MODELS: dict[str, str] = {
    "bigscience/T0_3B": "encoder-decoder (T5): hubvram models decoder-only language models",
    "bigscience/mt0-xxl": "encoder-decoder (mT5): hubvram models decoder-only language models",
}


def clean_model_id(raw: str) -> str:
    s = raw.strip()
    if s.startswith("not stated"):
        return s
    return re.sub(r"\s*\(.*\)\s*$", "", s).strip()


@lru_cache(maxsize=None)
def resolve_model(raw: str) -> tuple[Architecture, str, str]:
    """(architecture, what was loaded, note). Raises LookupError with the reason when it cannot."""
    mid = clean_model_id(raw)
    if not mid:
        raise LookupError("no model id")
    if mid in UNSUPPORTED_MODELS:
        raise LookupError(UNSUPPORTED_MODELS[mid])
    note = ""
    if mid in ALIASES:
        target, why = ALIASES[mid]
        note = f"as {target} ({why})"
        mid = target
    local = os.path.join(MODELS_DIR, mid.replace("/", "--"))
    if os.path.isfile(os.path.join(local, "config.json")):
        return load_model(local), f"bench/models/{mid.replace('/', '--')}", "config: bench/models"
    try:
        return snapshot_model(mid), mid, note
    except LookupError:
        raise LookupError(f"{mid}: neither in the snapshot nor with an exactly known config") from None


# ---- frameworks --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Framework:
    group: str
    hf: bool                 # runs transformers' model code (attention mask, HF loss path)
    peft_new: bool | None    # PEFT >= 0.12 (fp32 adapters); False = older PEFT; None = no PEFT (own LoRA)
    prepare_kbit: bool       # calls peft.prepare_model_for_kbit_training for single-GPU QLoRA
    trainer_amp: bool        # HF Trainer bf16/fp16=True on a half model: autocast
    transformers_major: int
    note: str = ""


FRAMEWORKS: dict[str, Framework] = {
    "LitGPT resource tables": Framework("LitGPT", False, None, False, False, 5,
                                        "own model code; lm_head + cross-entropy in 128-token chunks on bf16 logits"),
    "LitGPT config_hub benchmarks (Lightning Studio automated benchmarks)": Framework(
        "LitGPT", False, None, False, False, 5, "own model code; chunked lm_head + cross-entropy"),
    "LitGPT tutorials/prepare_dataset.md": Framework("LitGPT", False, None, False, False, 5,
                                                     "own model code; chunked lm_head + cross-entropy"),
    "torchtune": Framework("torchtune", False, None, False, False, 5, "own model code (torchtune modules)"),
    "fms-acceleration benchmark refs": Framework("fms-acceleration", True, True, False, False, 4,
                                                 "HF Trainer + TRL, transformers 4.48.1, peft 0.13.2, torch 2.4.1"),
    "PEFT method_comparison (MetaMathQA)": Framework("PEFT", True, True, False, False, 5,
                                                     "custom loop, transformers 5.13.1, torch 2.13"),
    "PEFT README": Framework("PEFT", True, False, False, False, 4, "peft 0.1 (Dec 2022)"),
    "Answer.AI fsdp_qlora benchmarks": Framework("fsdp_qlora", True, False, False, False, 4,
                                                 "own FSDP loop over transformers + peft (Mar 2024)"),
    "Unsloth README (Dec 2023)": Framework("HF baseline (Unsloth README)", True, False, True, True, 4,
                                           "HF + PEFT + TRL baseline columns of a vendor benchmark"),
    "Unsloth README (Jan 2025) context benchmarks": Framework("HF baseline (Unsloth README)", True, True, True, True,
                                                              4, "HF + FA2 baseline column of a vendor benchmark"),
    "HF blog: 4-bit bitsandbytes + QLoRA": Framework("HF blog (TRL)", True, False, True, True, 4,
                                                     "TRL SFTTrainer + PEFT, 2023"),
    "llama-recipes PR #41 (awgu)": Framework("llama-recipes", True, False, False, False, 4,
                                             "FSDP, --pure_bf16 casts the whole PEFT model to bf16 (2023)"),
}

#: lower-case GPU text of the CSV -> catalog id
GPU_IDS = {"a100-sxm4-40gb": "a100-40gb", "a100 40gb": "a100-40gb", "nvidia a10g 24gb": "a10g",
           "a100 80gb": "a100-80gb", "nvidia t4 16gb": "t4", "rtx 4090 24gb": "rtx-4090",
           "rtx 3090 24gb": "rtx-3090", "nvidia l40s 48gb": "l40s", "rtx a6000 48gb": "rtx-a6000",
           "12 gb gpu": "rtx-3060", "40 gb gpu": "a100-40gb"}


def gpu_of(text: str) -> GPU | None:
    gid = GPU_IDS.get(text.strip().lower())
    return get_gpu(gid) if gid else None


# ---- parsing helpers ------------------------------------------------------------------------------------
def first_int(s: str) -> int | None:
    m = re.search(r"\d+", s or "")
    return int(m.group()) if m else None


def _yes(s: str) -> bool | None:
    t = (s or "").strip().lower()
    if t.startswith("yes"):
        return True
    if t.startswith("no"):
        return False
    return None


LOGICAL = {
    "q": "query", "q_proj": "query", "query": "query", "wq": "query",
    "k": "key", "k_proj": "key", "key": "key", "wk": "key",
    "v": "value", "v_proj": "value", "value": "value", "wv": "value",
    "o": "proj", "o_proj": "proj", "output_proj": "proj", "projection": "proj", "wo": "proj",
    "gate": "gate", "gate_proj": "gate", "w1": "gate", "up": "up", "up_proj": "up", "w3": "up",
    "down": "down", "down_proj": "down", "w2": "down", "mlp": "mlp", "head": "head", "lm_head": "head",
}
#: logical part -> module names that implement it, own module first, then fused ones
CANDIDATES = {
    "query": (("q_proj", "query", "wq"), ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "W_pack")),
    "key": (("k_proj", "key", "wk"), ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "W_pack")),
    "value": (("v_proj", "value", "wv"), ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "W_pack")),
    "proj": (("o_proj", "dense", "out_proj", "wo", "c_proj"), ()),
    "gate": (("gate_proj", "w1"), ("gate_up_proj",)),
    "up": (("up_proj", "w3", "fc1", "dense_h_to_4h", "c_fc"), ("gate_up_proj",)),
    "down": (("down_proj", "w2", "fc2", "dense_4h_to_h"), ()),
    "head": (("lm_head",), ()),
}


def lora_targets(text: str, arch: Architecture) -> tuple[str | tuple[str, ...], str]:
    """(hubvram lora_targets, note) for the CSV's lora_targets text."""
    t = (text or "").strip()
    if not t:
        return "all-linear", "targets not stated: hubvram default all-linear"
    if t.lower().startswith("all linear") or t.lower().startswith("all-linear"):
        return "all-linear", ""
    t = t.split("(", 1)[0]
    parts = [p for p in re.split(r"[,\s+]+", t) if p]
    attn = {m.name for m in arch.linears if m.group == "attention"}
    mlp = {m.name for m in arch.linears if m.group == "mlp"}
    names: list[str] = []
    fused = []
    for p in parts:
        key = LOGICAL.get(p.lower())
        if key is None:
            raise ValueError(f"LoRA target {p!r} not understood")
        if key == "mlp":
            names += sorted(mlp)
            continue
        own, fus = CANDIDATES[key]
        pool = attn if key in ("query", "key", "value", "proj") else (mlp if key != "head" else {"lm_head"})
        hit = next((n for n in own if n in pool), None)
        if hit is None:
            hit = next((n for n in fus if n in pool), None)
            if hit is not None:
                fused.append(f"{p}->{hit}")
        if hit is None:
            raise ValueError(f"LoRA target {p!r}: no matching Linear in this model")
        names.append(hit)
    names = list(dict.fromkeys(names))
    note = ("fused module adapted whole: " + ", ".join(fused)) if fused else ""
    return tuple(names), note


LEN_SHORTER = ("padded to longest in batch", "dataset-dependent", "typical samples shorter", "peak likely at")


# ---- one row ---------------------------------------------------------------------------------------------
@dataclass
class CalibRow:
    row_id: str
    status: str
    trust: str
    group: str
    method: str
    model_text: str
    model: str = ""
    gpu: str = ""
    plan: str = ""
    setup_text: str = ""
    figure: str = ""               # allocated | reserved | device | bound
    measured_gib: float | None = None
    hub: dict[str, int] = field(default_factory=dict)   # allocated / reserved / device (per GPU)
    hub_phase: str = ""
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skip: str | None = None
    bound_gpu_usable: int | None = None
    bound_pass: bool | None = None
    trainable_row: int | None = None
    trainable_hub: int | None = None
    secondary: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hub_gib(self) -> float | None:
        if self.figure in ("allocated", "reserved", "device") and self.figure in self.hub:
            return self.hub[self.figure] / GIB
        return None

    @property
    def error_pct(self) -> float | None:
        if self.measured_gib and self.hub_gib is not None:
            return 100.0 * (self.hub_gib - self.measured_gib) / self.measured_gib
        return None

    @property
    def scored(self) -> bool:
        return self.status == "MEASURED" and self.error_pct is not None

    @property
    def exact_length(self) -> bool:
        return "len≤" not in self.flags

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d.update(hub_gib=self.hub_gib, error_pct=self.error_pct, scored=self.scored)
        return d


def _precision(row: dict, fw: Framework, method: str) -> tuple[str, str]:
    p = (row["precision"] or "").lower()
    half = "fp16" if ("fp16" in p and "bf16" not in p) else "bf16"
    if p.startswith("fp32"):
        return "fp32", ""
    if "pure" in p or "-true" in p or "no amp" in p:
        return half, ""
    if "autocast" in p or "mixed" in p or re.search(r"\bamp\b", p):
        return "amp-" + half, ""
    if fw.trainer_amp and method in ("lora", "qlora"):
        return "amp-" + half, "HF Trainer bf16/fp16=True: autocast"
    if "bf16" in p or "bfloat16" in p or "fp16" in p:
        return half, ""
    return "bf16", "precision not stated: bf16"


def _optimizer(text: str) -> tuple[str, str]:
    t = (text or "").lower()
    if "paged" in t:
        return "paged-adamw", ""
    if "8bit" in t or "8-bit" in t:
        return "adamw-8bit", ""
    if "fused" in t:
        return "adamw", ""
    if "adamw" in t and "unknown" not in t:
        return "adamw-foreach", ""
    return "adamw", "optimizer unknown: hubvram default adamw (fused)"


def _figure(measure: str) -> tuple[str, str]:
    m = (measure or "").lower()
    if "capacity bound" in m or "fit/oom" in m:
        return "bound", ""
    if "nvidia-smi" in m:
        return "device", ""
    if "active" in m:
        return "allocated", "active peak compared with peak allocated"
    if m.startswith("unknown"):
        return "reserved", "statistic unknown: compared with reserved"
    ia, ir = m.find("allocated"), m.find("reserved")
    if ia >= 0 and (ir < 0 or ia < ir):
        return "allocated", ""
    if ir >= 0:
        return "reserved", ""
    return "reserved", "statistic unknown: compared with reserved"


def _plan(row: dict) -> tuple[Plan, str]:
    n = first_int(row["num_gpus"]) or 1
    sh = (row["sharding"] or "").lower()
    off = (row["cpu_offload"] or "").lower()
    if n == 1 or sh in ("", "none"):
        if "deepspeed" in sh:
            return Plan("zero3", 1, offload="params"), ""
        return Plan(), ""
    if sh.startswith("unknown"):
        return Plan(), "YAML says devices=1: evaluated on one GPU"
    if "no_shard" in sh or "ddp" in sh:
        return Plan("ddp", n), ""
    if "fsdp" in sh:
        offload = "params" if off.startswith("yes") else None
        return Plan("fsdp", n, offload=offload), ""
    if "zero-3" in sh or "zero3" in sh:
        return Plan("zero3", n, offload="params" if off.startswith("yes") else None), ""
    raise ValueError(f"sharding {row['sharding']!r} not understood")


def evaluate_row(row: dict) -> CalibRow:
    fw = FRAMEWORKS.get(row["source"])
    group = fw.group if fw else (row["source"] or "unknown")
    r = CalibRow(row_id=row["row_id"], status=row["status"], trust=row["trust"], group=group,
                 method=row["method"], model_text=row["hf_model_id"] or row["model"], gpu=row["gpu"])
    if row["trust"] == "low":
        r.flags.append("low")
    if (row.get("notes") or "").startswith("SUSPICIOUS"):
        r.notes.append("CSV: " + row["notes"].split(";")[0])
    if row["status"] == "ESTIMATED":
        r.skip = "ESTIMATED: a rule of thumb, not a measurement"
        return r
    if fw is None:
        r.skip = f"framework of source {row['source']!r} not described"
        return r
    method = row["method"].strip().lower()
    if method not in ("full", "lora", "qlora"):
        r.skip = f"method {row['method']!r}: hubvram models full / lora / qlora"
        return r
    try:
        arch, loaded, mnote = resolve_model(row["hf_model_id"])
    except LookupError as e:
        r.skip = f"model: {e}"
        return r
    r.model = loaded
    if mnote:
        r.notes.append(mnote)
        r.flags.append("cfg" if mnote.startswith("config:") else "alias")
    batch = first_int(row["micro_batch_size"])
    seq = first_int(row["seq_len"])
    if not batch or not seq:
        r.skip = f"batch {row['micro_batch_size']!r} / seq {row['seq_len']!r} not stated as numbers"
        return r
    note = (row["seq_len_note"] or "").lower()
    if any(k in note for k in LEN_SHORTER):
        r.flags.append("len≤")
    notes = []
    precision, n = _precision(row, fw, method)
    notes.append(n)
    optimizer, n = _optimizer(row["optimizer"])
    notes.append(n)
    if "optimizer_in_bwd" in (row["optimizer"] or ""):
        notes.append("optimizer-in-backward not modelled (gradients freed during backward)")
        r.flags.append("stack≠")
    sec = (row["secondary_measurement"] or "").lower()
    if "activations" in (row["cpu_offload"] or "").lower():
        notes.append("activation offloading to CPU not modelled")
        r.flags.append("stack≠")
    if "chunked" in sec:
        notes.append("chunked cross-entropy (no full fp32 logits) not modelled")
        r.flags.append("stack≠")
    gc = _yes(row["grad_checkpointing"])
    if gc is None:
        if "no ckpt" in (row["grad_checkpointing"] or ""):
            gc = False
        else:
            gc = True
            notes.append("checkpointing unknown: hubvram default on")
            r.flags.append("unk")
    fa = (row["flash_attention"] or "").lower()
    attention = "eager" if fa.startswith("no") else ("flash" if ("use_flash_attn" in fa or fa.startswith("yes (fa2)"))
                                                      else "sdpa")
    padding = fw.hf and "pad" in note and "pack" not in note and "forced" not in note
    kw: dict[str, Any] = dict(method=method, batch_size=batch, seq_len=seq, grad_checkpointing=gc,
                              precision=precision, optimizer=optimizer, attention=attention, padding=padding,
                              transformers_major=fw.transformers_major)
    if method in ("lora", "qlora"):
        rank = first_int(row["lora_rank"])
        if rank is None:
            rank = 16
            notes.append("rank unknown: hubvram default 16")
            r.flags.append("unk")
        try:
            targets, tnote = lora_targets(row["lora_targets"], arch)
        except ValueError as e:
            r.skip = str(e)
            return r
        notes.append(tnote)
        if fw.peft_new is None:
            lora_dtype = "bf16" if precision != "fp32" else "fp32"
        elif fw.peft_new:
            lora_dtype = "fp32"
        else:  # older PEFT: adapters take the base weight's dtype when it is a float
            float_base = method == "lora" or fw.group == "fsdp_qlora"
            lora_dtype = "bf16" if float_base and precision != "fp32" else "fp32"
        kw.update(lora_rank=rank, lora_targets=targets, lora_dtype=lora_dtype)
    if method == "qlora":
        dq = _yes(row["double_quant"])
        if dq is None:
            dq = True
            notes.append("double quant unknown: hubvram default on")
            r.flags.append("unk")
        kw.update(double_quant=dq, prepare_kbit=fw.prepare_kbit)
    try:
        plan, pnote = _plan(row)
    except ValueError as e:
        r.skip = str(e)
        return r
    notes.append(pnote)
    if pnote:
        r.flags.append("1gpu?")
    try:
        setup = Setup(**kw)
    except Exception as e:  # noqa: BLE001 - an InputError says which knob
        r.skip = f"setup: {e}"
        return r
    est = estimate(arch, setup)
    pg = per_gpu(est, plan, model_layout(arch, setup))
    r.plan = plan.label
    r.setup_text = setup.describe()
    r.hub = {"allocated": pg.peak_allocated_bytes, "reserved": pg.reserved_bytes, "device": pg.device_bytes}
    r.hub_phase = pg.peak_phase
    r.trainable_row = first_int(row["trainable_params"]) if row["trainable_params"] else None
    r.trainable_hub = est.trainable_params
    if r.trainable_row and r.trainable_row != r.trainable_hub:
        notes.append(f"trainable params: row {r.trainable_row:,}, hubvram {r.trainable_hub:,}")
    fig, fnote = _figure(row["measure"])
    notes.append(fnote)
    if fnote.startswith("statistic unknown"):
        r.flags.append("meas?")
    r.figure = fig
    if row["status"] in ("OOM_BOUND", "FIT_BOUND"):
        gpu = gpu_of(row["gpu"])
        if gpu is None:
            r.skip = f"GPU {row['gpu']!r} not in the catalog"
            return r
        r.figure = "bound"
        r.bound_gpu_usable = gpu.usable_bytes
        fit = fits(pg, gpu)
        r.bound_pass = (not fit) if row["status"] == "OOM_BOUND" else fit
        notes.append(f"{FIT_FIGURE.replace('_bytes', '')} {getattr(pg, FIT_FIGURE) / GIB:.2f} GiB vs usable "
                     f"{gpu.usable_bytes / GIB:.2f} GiB on {gpu.id}")
    elif row["peak_mem_gib"]:
        r.measured_gib = float(row["peak_mem_gib"])
    else:
        r.skip = "no peak_mem_gib"
    for s in secondary_measurements(row):
        if s["figure"] in r.hub:
            s["hub_gib"] = r.hub[s["figure"]] / GIB
            s["error_pct"] = 100.0 * (s["hub_gib"] - s["measured_gib"]) / s["measured_gib"]
            r.secondary.append(s)
    r.flags = list(dict.fromkeys(r.flags))
    r.notes = [n for n in notes if n] + r.notes
    return r


def secondary_measurements(row: dict) -> list[dict[str, Any]]:
    """Other statistics of the same run given in ``secondary_measurement`` (not part of the summaries)."""
    t = row["secondary_measurement"] or ""
    out = []
    m = re.search(r"nvidia-smi peak memory\.used (\d+) MiB", t)
    if m and row["status"] == "MEASURED":
        out.append({"figure": "device", "what": "nvidia-smi memory.used (MiB/1024)", "measured_gib": int(m.group(1)) / 1024})
    m = re.search(r"peak allocated ([\d.]+) GiB", t)
    if m:
        out.append({"figure": "allocated", "what": "peak allocated (GiB)", "measured_gib": float(m.group(1))})
    m = re.search(r"peak reserved ([\d.]+) GB", t)
    if m:
        out.append({"figure": "reserved", "what": "peak reserved (unit as the row's: GiB)", "measured_gib": float(m.group(1))})
    m = re.search(r"99th pct of per-step reserved ([\d.]+) GiB", t)
    if m:
        out.append({"figure": "reserved", "what": "p99 of per-step reserved (GiB)", "measured_gib": float(m.group(1))})
    return out


def load_rows(path: str = DEFAULT_CSV) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def evaluate_all(path: str = DEFAULT_CSV) -> list[CalibRow]:
    return [evaluate_row(r) for r in load_rows(path)]


# ---- statistics ------------------------------------------------------------------------------------------
def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile (the value below which 90 % of the sorted values lie, ceil rank)."""
    s = sorted(values)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def stats(rows: list[CalibRow]) -> dict[str, Any]:
    errs = [abs(r.error_pct) for r in rows if r.scored]
    signed = [r.error_pct for r in rows if r.scored]
    exact = [abs(r.error_pct) for r in rows if r.scored and r.exact_length]
    return {"n": len(errs), "median_abs_pct": statistics.median(errs) if errs else None,
            "p90_abs_pct": p90(errs) if errs else None,
            "median_signed_pct": statistics.median(signed) if signed else None,
            "n_exact_length": len(exact), "median_abs_pct_exact_length": statistics.median(exact) if exact else None}
