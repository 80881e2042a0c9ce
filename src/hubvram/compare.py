"""Compare many models: one row per model × method with parameters, peak memory and a verdict per GPU. Pure
once the architectures are loaded (``api.load_models`` fetches them concurrently; a failed model keeps its
error in its slot and gets a row saying so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import HubvramError, InputError
from .fit import FIT_FIGURE, HOST_RAM_PER_NODE, LADDER, MAX_GPUS, Verdict, fit_matrix
from .gpus import GPU
from .render import gib, human_count, table

__all__ = ["CompareRow", "compare_rows", "sort_rows", "compare_records", "compare_csv_rows", "render_compare",
           "SORT_COLUMNS"]


@dataclass(frozen=True)
class CompareRow:
    model: str
    method: str | None = None
    params: int | None = None
    peak_allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    setup: Any = None
    verdicts: tuple[Verdict, ...] = ()
    error: HubvramError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def compare_rows(ids: Sequence[str], archs: Sequence[Any], setups: Mapping[str, Any], gpus: Sequence[GPU], *,
                 estimator: Callable[[Any, Any], Any] | None = None,
                 ladder: Sequence[tuple[str, str | None]] = LADDER, max_gpus: int = MAX_GPUS,
                 nodes: int = 1, host_ram: int | None = HOST_RAM_PER_NODE, strict: bool = False) -> list[CompareRow]:
    """Rows in input order: one per (model, method), or one error row for a model that failed to load or
    to estimate (its error kept; the other models are unaffected). An unexpected exception while
    estimating one model becomes that model's error row too, unless ``strict`` (``--debug``) re-raises it.
    Models with the same memory picture (fine-tunes, revisions) share the per-plan work (``fit_matrix``'s
    ``replicas``)."""
    out: list[CompareRow] = []
    replicas: dict = {}
    for model_id, arch in zip(ids, archs):
        if isinstance(arch, HubvramError):
            out.append(CompareRow(model=model_id, error=arch))
            continue
        try:
            rows = fit_matrix(arch, setups, gpus, estimator=estimator, ladder=ladder, max_gpus=max_gpus, nodes=nodes,
                              host_ram=host_ram, replicas=replicas)
        except HubvramError as e:
            out.append(CompareRow(model=model_id, error=e))
            continue
        except Exception as e:  # noqa: BLE001 - one model's surprise must not sink the batch
            if strict:
                raise
            out.append(CompareRow(model=model_id, error=HubvramError(
                f"cannot estimate this model ({type(e).__name__}: {e})", model=model_id,
                hint="rerun with --debug for the traceback")))
            continue
        for r in rows:
            out.append(CompareRow(model=arch.model_id, method=r.label, params=arch.counts.total,
                                  peak_allocated_bytes=int(r.estimate.peak_allocated_bytes),
                                  reserved_bytes=int(r.estimate.reserved_bytes), setup=r.setup,
                                  verdicts=r.verdicts))
    return out


# --------------------------------------------------------------------------------------------------
# sorting: by any column of the table
# --------------------------------------------------------------------------------------------------
SORT_COLUMNS = ("model", "method", "params", "peak")


def _verdict_key(v: Verdict) -> tuple:
    """fits on 1 < N × S (fewer GPUs first, GPU-resident before offload) < does not fit; then per-GPU bytes."""
    per_gpu = getattr(v.per_gpu, FIT_FIGURE)
    if v.fits_on_one:
        return (0, 1, 0, per_gpu)
    if v.plan is None:
        return (2, 0, 0, per_gpu)
    return (1, v.plan.gpus, v.plan.offload is not None, per_gpu)


def sort_rows(rows: Sequence[CompareRow], column: str | None, gpus: Sequence[GPU]) -> list[CompareRow]:
    """Sort by ``model``, ``method``, ``params``, ``peak`` or a GPU id (fits on 1 < fewest GPUs < does not
    fit); rows with errors go last; ties keep input order. Unknown columns are input errors."""
    if not column:
        return list(rows)
    col = column.strip().lower()
    ids = [g.id for g in gpus]
    if col not in SORT_COLUMNS and col not in ids:
        raise InputError(f"cannot sort by {column!r}", hint="columns: " + ", ".join((*SORT_COLUMNS, *ids)))

    def key(r: CompareRow) -> tuple:
        if not r.ok:
            return (1,)
        if col == "model":
            return (0, r.model.lower())
        if col == "method":
            return (0, r.method or "")
        if col == "params":
            return (0, r.params or 0)
        if col == "peak":
            return (0, r.peak_allocated_bytes or 0)
        return (0, _verdict_key(r.verdicts[ids.index(col)]))

    return sorted(rows, key=key)


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------
def compare_records(rows: Sequence[CompareRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if not r.ok:
            out.append({"model": r.model, "error": {"type": type(r.error).__name__, "message": str(r.error),
                                                    "exit_code": r.error.exit_code}})
            continue
        out.append({"model": r.model, "method": r.method, "parameters": r.params,
                    "setup": r.setup.to_dict() if hasattr(r.setup, "to_dict") else None,
                    "peak_allocated_bytes": r.peak_allocated_bytes, "reserved_bytes": r.reserved_bytes,
                    "fit": [v.to_dict() for v in r.verdicts]})
    return out


def compare_csv_rows(rows: Sequence[CompareRow], gpus: Sequence[GPU]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d: dict[str, Any] = {"model": r.model, "method": r.method or "", "params": r.params or "",
                             "peak_allocated_bytes": r.peak_allocated_bytes or "",
                             "reserved_bytes": r.reserved_bytes or ""}
        for i, g in enumerate(gpus):
            v = r.verdicts[i] if r.ok else None
            d[g.id] = v.cell if v else ""
            d[f"{g.id}_min_gpus"] = "" if v is None or v.min_gpus is None else v.min_gpus
            d[f"{g.id}_per_gpu_bytes"] = getattr(v.per_gpu, FIT_FIGURE) if v else ""
        d["error"] = str(r.error) if r.error else ""
        out.append(d)
    return out


def render_compare(rows: Sequence[CompareRow], gpus: Sequence[GPU], fmt: str = "table") -> str:
    headers = ["model", "method", "params", "peak GiB", *(f"{g.id} ({g.usable_bytes / 2**30:.0f})" for g in gpus)]
    failed = any(not r.ok for r in rows)
    if failed:
        headers.append("error")
    body = []
    for r in rows:
        if r.ok:
            line = [r.model, r.method, human_count(r.params or 0), gib(r.peak_allocated_bytes),
                    *(v.cell for v in r.verdicts)]
            if failed:
                line.append("")
        else:
            line = [r.model, "—", "—", "—", *("—" for _ in gpus), str(r.error)]
        body.append(line)
    title = ("### " if fmt == "markdown" else "") + \
        "Compare (peak = one GPU's allocated peak, GiB = 2^30 B; GPU headers give usable GiB)"
    return title + "\n\n" + table(body, headers, fmt)
