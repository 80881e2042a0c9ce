"""Rendering of fit answers: the fit matrix, the GPU list, per-GPU breakdowns, compare, advice. Pure.

Tables go through :func:`hubvram.render.table` (``table`` = tabulate ``simple``, ``markdown`` = GitHub);
JSON and CSV callers take the ``*_records`` dicts and pass them to :func:`render.to_json` / ``to_csv``.
Sizes print in GiB (2^30 bytes); JSON carries bytes.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .fit import FIT_FIGURE, HOST_RAM_PER_NODE, LADDER, Advice, MatrixRow, Verdict
from .gpus import GPU
from .parallel import PerGPU
from .render import gib, table

__all__ = [
    "render_fit_matrix", "fit_records", "fit_csv_rows", "render_gpus", "gpu_records", "render_per_gpu",
    "render_advice", "advice_records", "matrix_legend",
]


def _gpu_header(gpu: GPU) -> str:
    return f"{gpu.id} ({gpu.usable_bytes / 2**30:.0f})"


def matrix_legend(max_gpus: int, host_ram: int | None = HOST_RAM_PER_NODE) -> str:
    ram = "no limit" if host_ram is None else f"{host_ram / 2**30:g} GiB"
    tried = ", ".join(s + (f" + offload {o}" if o else "") for s, o in LADDER)
    return (f"Cells compare per-GPU reserved memory with the card's usable GiB (header). \"N × S\": the fewest GPUs "
            f"(≤ {max_gpus}; --gpus N raises the cap) over {tried}; GPU-resident before CPU offload, which must fit "
            f"the host RAM per node (--host-ram: {ram}). zero* = DeepSpeed (fp32 master weights, 20 B/param for "
            f"full fine-tuning); fsdp keeps the recipe's own bytes. T4/V100 run the fp16 twin of each setup.")


def render_fit_matrix(rows: Sequence[MatrixRow], fmt: str = "table", *, legend: bool = True,
                      host_ram: int | None = HOST_RAM_PER_NODE) -> str:
    """Rows = methods, columns = GPUs; each cell "fits on 1", "4 × zero3" or "does not fit"."""
    if not rows:
        return ""
    gpus = [v.gpu for v in rows[0].verdicts]
    headers = ["method", "1 GPU reserved", *(_gpu_header(g) for g in gpus)]
    body = []
    for r in rows:
        single = r.verdicts[0].single if r.verdicts else None
        one = gib(getattr(single, FIT_FIGURE)) if single is not None else "—"
        body.append([r.label, one, *(v.cell for v in r.verdicts)])
    title = ("### " if fmt == "markdown" else "") + "GPU fit (GiB = 2^30 bytes; column headers give usable memory)"
    text = title + "\n\n" + table(body, headers, fmt, colalign=("left", "right", *("left",) * len(gpus)))
    if legend:
        text += "\n\n" + matrix_legend(rows[0].verdicts[0].max_gpus if rows[0].verdicts else 64, host_ram)
    return text


def fit_records(verdicts: Iterable[Verdict]) -> list[dict[str, Any]]:
    """The JSON ``fit`` list of one estimate."""
    return [v.to_dict() for v in verdicts]


def fit_csv_rows(model: str, rows: Sequence[MatrixRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        for v in r.verdicts:
            out.append({"model": model, "method": r.label, "gpu": v.gpu.id, "gpu_memory_bytes": v.gpu.memory_bytes,
                        "usable_bytes": v.gpu.usable_bytes, "fits_on_one": v.fits_on_one,
                        "min_gpus": "" if v.min_gpus is None else v.min_gpus, "strategy": v.strategy or "",
                        "offload": v.offload or "", "per_gpu_bytes": getattr(v.per_gpu, FIT_FIGURE),
                        "verdict": v.cell})
    return out


# --------------------------------------------------------------------------------------------------
def gpu_records(gpus: Iterable[GPU]) -> list[dict[str, Any]]:
    return [{"id": g.id, "name": g.name, "vendor": g.vendor, "memory_bytes": g.memory_bytes,
             "usable_bytes": g.usable_bytes, "context_bytes": g.context_bytes, "bf16": g.bf16, "fp8": g.fp8,
             "interconnect": g.interconnect, "architecture": g.architecture, "default": g.default,
             "aliases": list(g.aliases), "memory_source": g.memory_source} for g in gpus]


def render_gpus(gpus: Iterable[GPU], fmt: str = "table") -> str:
    rows = [(g.id + (" *" if g.default else ""), g.name, gib(g.memory_bytes), gib(g.usable_bytes),
             "yes" if g.bf16 else "no (fp16)", g.interconnect, ", ".join(g.aliases[:3])) for g in gpus]
    text = table(rows, ("id", "name", "memory GiB", "usable GiB", "bf16", "interconnect", "aliases"), fmt,
                 colalign=("left", "left", "right", "right", "left", "left", "left"))
    return text + ("\n\n* = a default fit-matrix column. usable = memory − runtime context (512 MiB NVIDIA/AMD, "
                   "1 GiB Gaudi). --gpu ID (repeatable), --gpu all, or --gpu-memory 24GiB for another card.")


# --------------------------------------------------------------------------------------------------
def render_per_gpu(pg: PerGPU, fmt: str = "table", gpu: GPU | None = None) -> str:
    """One GPU's breakdown under a plan: each component, what divides it, and the totals."""
    rows = []
    for p in pg.parts:
        where = "host" if p.host_bytes and not p.bytes else "GPU"
        div = "replicated" if p.divisor == 1 else f"÷ {p.divisor}"
        rows.append((p.name, p.category, gib(p.replica_bytes) if p.replica_bytes else "—",
                     div if p.replica_bytes else "added", where, gib(p.bytes or p.host_bytes)))
    head = ("### " if fmt == "markdown" else "") + f"Per GPU under {pg.plan.label} (GiB)"
    text = head + "\n\n" + table(rows, ("component", "category", "1 replica", "split", "where", "per GPU"), fmt,
                                 colalign=("left", "left", "right", "left", "left", "right"))
    text += (f"\n\npeak allocated {gib(pg.peak_allocated_bytes)} ({pg.peak_phase}), reserved {gib(pg.reserved_bytes)}, "
             f"device {gib(pg.device_bytes)} GiB per GPU")
    if pg.host_bytes_per_node:
        text += f"; host RAM for offload {gib(pg.host_bytes_per_node)} GiB per node ({pg.plan.gpus_per_node} GPUs, ×1.5 buffers)"
    if gpu is not None:
        ok = getattr(pg, FIT_FIGURE) <= gpu.usable_bytes
        text += (f"\n{gpu.id}: {'fits' if ok else 'does not fit'} "
                 f"(reserved {gib(getattr(pg, FIT_FIGURE))} vs usable {gib(gpu.usable_bytes)} GiB)")
    for n in pg.notes:
        text += f"\nnote: {n}"
    return text


# --------------------------------------------------------------------------------------------------
def advice_records(advices: Sequence[Advice]) -> list[dict[str, Any]]:
    return [a.to_dict() for a in advices]


def render_advice(advices: Sequence[Advice], model: str, gpu: GPU, fmt: str = "table") -> str:
    head = ("### " if fmt == "markdown" else "") + f"Setups that fit {model} on {gpu.id} ({gib(gpu.usable_bytes)} GiB usable), least compromise first"
    if not advices:
        return head + "\n\nNothing fits, not even QLoRA at batch 1 with checkpointing on the GPU budget."
    rows = [(a.rank, a.setup.method, a.setup.optimizer, "yes" if a.setup.grad_checkpointing else "no",
             a.setup.batch_size, a.setup.lora_rank if a.setup.method != "full" else "—", a.plan.label,
             gib(getattr(a.per_gpu, FIT_FIGURE))) for a in advices]
    text = head + "\n\n" + table(rows, ("#", "method", "optimizer", "ckpt", "batch", "rank", "GPUs", "GiB/GPU"), fmt,
                                 colalign=("right", "left", "left", "left", "right", "right", "left", "right"))
    text += "\n"
    for a in advices:
        gave = "; ".join(a.compromises) or "no compromise"
        text += f"\n{a.rank}. {gave}\n   " + (f"`{a.command}`" if fmt == "markdown" else a.command)
    return text
