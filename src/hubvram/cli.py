"""The ``hubvram`` command: parse, call the API, render. No formulas here.

``hubvram MODEL`` is short for ``hubvram show MODEL``.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import click

from . import errors
from .errors import HubvramError

FORMATS = ("table", "markdown", "json", "csv")


class _DefaultGroup(click.Group):
    """A group whose first argument may be a model id: ``hubvram org/name`` runs ``show``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


def source_options(f):
    """Options shared by every command that reads model metadata."""
    for opt in reversed([
        click.option("--revision", default=None, help="Branch, tag or commit (same as MODEL@REV)."),
        click.option("--offline", is_flag=True, default=None,
                     help="No network: answer from the HTTP cache or the bundled snapshot (also HF_HUB_OFFLINE=1)."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, envvar="HUBVRAM_CACHE_DIR",
                     help="HTTP cache folder (default: $HUBVRAM_CACHE_DIR or ~/.cache/hubvram)."),
        click.option("--token", default=None, help="Hub token (default: HF_TOKEN or the `hf auth login` token)."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True),
        click.option("--debug", is_flag=True, help="Show tracebacks."),
    ]):
        f = opt(f)
    return f


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hubvram")
def main() -> None:
    """Will fine-tuning this model fit on my GPUs, and how?

    \b
      hubvram meta-llama/Meta-Llama-3-8B
      hubvram meta-llama/Llama-3.1-70B --offline --format json
      hubvram ./my-checkpoint-folder
    """
    _few_collections()


#: Collect young objects every 100,000 allocations, not 700: a run builds its model pictures (tens of
#: thousands of small objects for 100 models) and exits; the default threshold makes the collector walk
#: them over and over (~0.25 s of a 1.3 s compare of 100 models). mypy's main does the same.
GC_THRESHOLD = (100_000, 50, 100)


def _few_collections() -> None:
    import gc

    gc.set_threshold(*GC_THRESHOLD)


@main.command()
@click.argument("model")
@click.option("--explain", is_flag=True, help="Print every memory component's formula, numbers and source.")
@source_options
def show(model: str, explain: bool, revision: str | None, offline: bool | None, cache_dir: str | None,
         token: str | None, fmt: str, debug: bool, **fit_kw: Any) -> None:
    """The model picture (identity, exact parameters, dimensions), the training-memory breakdown per
    method, and the GPU fit matrix."""
    from . import api, render

    def run() -> int:
        arch = api.load_model(model, revision=revision, offline=offline, cache_dir=cache_dir, token=token)
        fit, code = show_fit(arch, fmt, **fit_kw)
        if explain:
            from .memory import explain as explain_lines

            for est, js in zip(fit["estimates"], fit["json"]["estimates"]):
                js["explain"] = explain_lines(est)
        if fmt == "json":
            click.echo(render.to_json({"models": [{**render.model_dict(arch), **fit["json"]}]}))
        elif fmt == "csv":
            d = render.model_dict(arch)
            click.echo(render.to_csv([{"id": d["id"], "revision": d["revision"], "source": d["source"],
                                       "parameters": d["parameters"]["total"],
                                       "hub_total": d["parameters"]["hub_total"],
                                       **{f"params_{k}": v for k, v in d["parameters"]["by_group"].items()},
                                       **fit["csv"]}]),
                       nl=False)
        else:
            text = render.model_summary(arch, fmt) + "\n\n" + fit["text"]
            if explain:
                text += "\n\n" + "\n\n".join("\n".join(js["explain"]) for js in fit["json"]["estimates"])
            click.echo(text)
        return code

    _exit(_guard(run, debug))


def _guard(fn, debug: bool) -> int:
    """Run a command body: project errors become one line on stderr and their exit code."""
    try:
        return fn()
    except HubvramError as e:
        if debug:
            raise
        click.echo(f"hubvram: error: {e}", err=True)
        return e.exit_code
    except (KeyError, ValueError) as e:
        code = getattr(e, "exit_code", None)
        if code is None or debug:
            raise
        msg = e.args[0] if e.args else str(e)
        click.echo(f"hubvram: error: {msg}", err=True)
        return code
    except KeyboardInterrupt:
        click.echo("hubvram: interrupted", err=True)
        return 130


def _exit(code: int) -> None:
    if code:
        sys.exit(code)


# --------------------------------------------------------------------------------------------------
# hubvram cache ...: inspect, prefetch, clear, export/import, refresh the bundled snapshot (hubvram.cache)
# --------------------------------------------------------------------------------------------------
CACHE_FORMATS = ("table", "json")


def cache_options(f):
    """Options shared by the ``cache`` commands."""
    for opt in reversed([
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, envvar="HUBVRAM_CACHE_DIR",
                     help="Cache folder (default: $HUBVRAM_CACHE_DIR or ~/.cache/hubvram)."),
        click.option("--format", "fmt", type=click.Choice(CACHE_FORMATS), default="table", show_default=True),
        click.option("--debug", is_flag=True, help="Show tracebacks."),
    ]):
        f = opt(f)
    return f


def _max_age(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .httpcache import parse_max_age

    if value is not None:
        try:
            parse_max_age(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


def _fetch_options(f):
    for opt in reversed([
        click.option("--token", default=None, help="Hub token (default: HF_TOKEN or the `hf auth login` token)."),
        click.option("--max-age", default=None, envvar="HUBVRAM_MAX_AGE", callback=_max_age,
                     help="Revalidate cached entries older than this (e.g. 12h, 7d, never; default 7d) with "
                          "conditional requests."),
        click.option("--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True,
                     help="Models fetched at once."),
    ]):
        f = opt(f)
    return f


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun if count == 1 else (noun[:-1] + 'ies' if noun.endswith('y') else noun + 's')}"


def _ago(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    for unit, div, limit in (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 36 * 3600)):
        if seconds < limit:
            return f"{seconds // div} {unit}"
    return f"{seconds // 86400} d"


def _progress(label: str):
    """A progress callback writing ``[done/total] model: ok|error`` on stderr, only when it is a TTY."""
    isatty = getattr(sys.stderr, "isatty", None)
    if not (isatty and isatty()):
        return None

    def on(done: int, total: int, model: str, error) -> None:
        state = "ok" if error is None else f"failed ({type(error).__name__})"
        click.echo(f"\r\x1b[K{label} [{done}/{total}] {model}: {state}", err=True, nl=done == total)
    return on


def _batch_exit(results) -> int:
    failed = [r for r in results if not r.ok]
    if not failed:
        return errors.EXIT_OK
    return failed[0].error.exit_code if len(failed) == len(results) else errors.EXIT_PARTIAL


@main.group("cache")
def cache_group() -> None:
    """The metadata cache: inspect it, prefetch for offline use, clear it, carry it to another machine.

    \b
      hubvram cache warm meta-llama/Llama-3.1-8B Qwen/Qwen2.5-7B
      hubvram cache export models.hubvram.gz     # then, on the air-gapped machine:
      hubvram cache import models.hubvram.gz
      hubvram meta-llama/Llama-3.1-8B --offline
    """


@cache_group.command("ls")
@cache_options
def cache_ls(cache_dir: str | None, fmt: str, debug: bool) -> None:
    """Cached models: where (HTTP cache or imported), revisions, entries, size, age."""
    from . import cache, render

    def run() -> int:
        models = cache.list_models(cache_dir)
        if fmt == "json":
            click.echo(render.to_json({"cache_dir": str(cache._root(cache_dir)),
                                       "models": [m.as_dict() for m in models]}))
        elif not models:
            click.echo(f"nothing cached in {cache._root(cache_dir)}")
        else:
            rows = []
            for m in models:
                d = m.as_dict()
                pinned = set(m.refs.values())
                revs = [f"{b} → {s[:12]}" for b, s in m.refs.items()] + [s[:12] for s in m.shas if s not in pinned]
                rows.append((m.model_id, "imported" if m.where == "imported" else "HTTP cache", ", ".join(revs),
                             str(m.entries), _size(m.size), _ago(d["age_s"])))
            click.echo(render.table(rows, ("model", "where", "revisions", "entries", "size", "age"),
                                    colalign=("left", "left", "left", "right", "right", "right")))
        return errors.EXIT_OK

    _exit(_guard(run, debug))


@cache_group.command("info")
@cache_options
def cache_info(cache_dir: str | None, fmt: str, debug: bool) -> None:
    """Where the caches are, their sizes and entry counts, the revalidation age."""
    from . import cache, render

    def run() -> int:
        i = cache.info(cache_dir)
        if fmt == "json":
            click.echo(render.to_json(i.as_dict()))
            return errors.EXIT_OK
        age = "never" if i.max_age_s is None else _ago(int(i.max_age_s))
        rows = [("cache folder", str(i.cache_dir)),
                ("HTTP cache", f"{i.http_cache} ({_size(i.http_cache_bytes)}, {_n(i.http_entries, 'entry')}, "
                               f"{_n(i.http_models, 'model')})"),
                ("revalidate after", f"{age} (--max-age / HUBVRAM_MAX_AGE)"),
                ("imported metadata", f"{i.store_dir} ({_n(i.store_entries, 'entry')}, "
                                      f"{_n(i.store_models, 'model')}, {_size(i.store_bytes)})"),
                ("metadata memo", f"{i.memo_dir} ({_n(i.memo_entries, 'commit')}, {_size(i.memo_bytes)})"),
                ("bundled snapshot", f"{i.snapshot_dir} ({_n(i.snapshot_entries, 'model')})")]
        width = max(len(k) for k, _ in rows)
        click.echo("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
        return errors.EXIT_OK

    _exit(_guard(run, debug))


@cache_group.command("clear")
@click.argument("model", required=False)
@cache_options
def cache_clear(model: str | None, cache_dir: str | None, fmt: str, debug: bool) -> None:
    """Remove everything cached (HTTP cache and imported metadata), or one model's entries only."""
    from . import cache, render

    def run() -> int:
        r = cache.clear(model, cache_dir)
        if fmt == "json":
            click.echo(render.to_json(r.as_dict()))
        elif model and not (r.http_entries or r.store_files):
            click.echo(f"nothing cached for {r.model}")
        else:
            click.echo(f"removed {_n(r.http_entries, 'HTTP cache entry')} and {_n(r.store_files, 'imported file')} "
                       f"({_size(r.bytes)})" + (f" for {r.model}" if model else ""))
        return errors.EXIT_OK

    _exit(_guard(run, debug))


@cache_group.command("warm")
@click.argument("models", nargs=-1)
@click.option("--from-file", type=click.File("r"), default=None,
              help="Also read model ids from FILE, one per line (# comments; - for stdin).")
@_fetch_options
@cache_options
def cache_warm(models: tuple[str, ...], from_file, token: str | None, max_age: str | None, jobs: int,
               cache_dir: str | None, fmt: str, debug: bool) -> None:
    """Fetch models now (concurrently) so that they answer later with no network."""
    from . import api, cache, render

    def run() -> int:
        ids = list(models) + (api.iter_ids_from_file(from_file) if from_file is not None else [])
        if not ids:
            raise click.UsageError("give at least one MODEL or --from-file FILE")
        results = cache.warm(ids, cache_dir=cache_dir, token=token, max_age=max_age, max_workers=jobs,
                             on_progress=_progress("warm"))
        if fmt == "json":
            click.echo(render.to_json({"models": [r.as_dict() for r in results]}))
        else:
            click.echo(render.table([(r.model, r.sha or "—", "cached" if r.ok else f"error: {r.error}")
                                     for r in results], ("model", "commit", "result")))
        return _batch_exit(results)

    _exit(_guard(run, debug))


@cache_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "only", multiple=True, help="Only this model (repeatable).")
@cache_options
def cache_export(file: str, only: tuple[str, ...], cache_dir: str | None, fmt: str, debug: bool) -> None:
    """Write the parsed metadata of every cached model to FILE (gzip'd JSON, checksummed)."""
    from . import cache, render

    def run() -> int:
        r = cache.export(file, cache_dir, models=list(only) or None)
        for s in r.skipped:
            click.echo(f"hubvram: skipped {s}", err=True)
        if fmt == "json":
            click.echo(render.to_json(r.as_dict()))
        else:
            click.echo(f"wrote {_n(r.entries, 'entry')} ({_n(r.models, 'model')}) to {r.path} ({_size(r.bytes)})")
        return errors.EXIT_OK

    _exit(_guard(run, debug))


@cache_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@cache_options
def cache_import(file: str, cache_dir: str | None, fmt: str, debug: bool) -> None:
    """Validate every entry of an export FILE, then merge them into this machine's metadata store."""
    from . import cache, render

    def run() -> int:
        r = cache.import_(file, cache_dir)
        if fmt == "json":
            click.echo(render.to_json(r.as_dict()))
        else:
            click.echo(f"imported {_n(r.entries, 'entry')} ({r.new} new, {_n(r.models, 'model')}) from {r.path} "
                       f"into {cache.store_dir(cache_dir)}")
        return errors.EXIT_OK

    _exit(_guard(run, debug))


@cache_group.command("snapshot")
@click.argument("models", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="cache", show_default=True,
              help="Folder of the bundled snapshot.")
@click.option("--token", default=None, help="Hub token (default: HF_TOKEN or the `hf auth login` token).")
@cache_options
def cache_snapshot(models: tuple[str, ...], out_dir: str, token: str | None, cache_dir: str | None, fmt: str,
                   debug: bool) -> None:
    """Maintainers: refresh bundled snapshot files from the live Hub (config, header inventory, sha, date)."""
    from . import cache, render

    def run() -> int:
        results = cache.snapshot_models(models, out_dir=out_dir, cache_dir=cache_dir, token=token,
                                        on_progress=_progress("snapshot"))
        if fmt == "json":
            click.echo(render.to_json({"models": [r.as_dict() for r in results]}))
        else:
            click.echo(render.table([(r.model, str(r.path) if r.ok else "—", r.sha or "—",
                                      str(r.tensors) if r.ok else f"error: {r.error}") for r in results],
                                    ("model", "file", "commit", "tensors")))
        return _batch_exit(results)

    _exit(_guard(run, debug))


# --------------------------------------------------------------------------------------------------
# GPU fit, multi-GPU, compare, advise (hubvram.fit / parallel / compare / render_fit): gpus, compare, advise,
# and the fit options `show` takes (fit_options, fit_section)
# --------------------------------------------------------------------------------------------------
def _gpu_list(gpu_ids: Sequence[str], gpu_memory: Sequence[str]):
    """--gpu ID (repeatable, `all` = the catalog) and --gpu-memory SIZE (repeatable); default: default_gpus()."""
    from .gpus import custom_gpu, default_gpus, get_gpu, load_catalog

    out = []
    for g in gpu_ids:
        out.extend(load_catalog() if g.strip().lower() == "all" else [get_gpu(g)])
    out.extend(custom_gpu(m) for m in gpu_memory)
    return tuple(dict.fromkeys(out)) or default_gpus()


def _one_gpu(text: str):
    """A GPU id, or a size such as 24GiB (a custom card)."""
    from .gpus import UnknownGPUError, custom_gpu, get_gpu

    try:
        return get_gpu(text)
    except UnknownGPUError:
        if text.strip()[:1].isdigit():
            return custom_gpu(text)
        raise


def plan_options(f):
    """GPU columns and the multi-GPU plan (show and compare)."""
    from .parallel import OFFLOADS, STRATEGIES

    for opt in reversed([
        click.option("--gpu", "gpu_ids", multiple=True, metavar="ID",
                     help="A GPU column (repeatable); `all` for the whole catalog (see `hubvram gpus`)."),
        click.option("--gpu-memory", multiple=True, metavar="SIZE",
                     help="A custom card with this much usable memory, e.g. 24GiB or 80GB (repeatable)."),
        click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
                     help="Multi-GPU strategy (default: try zero2, zero3, fsdp, then CPU offload)."),
        click.option("--gpus", "n_gpus", type=click.IntRange(1, 4096), default=None,
                     help="GPU count (with --strategy: show the per-GPU breakdown; otherwise a cap)."),
        click.option("--nodes", type=click.IntRange(1, 512), default=1, show_default=True,
                     help="Nodes the GPUs are spread over (fsdp-hybrid shards within a node)."),
        click.option("--offload", type=click.Choice(OFFLOADS), default=None,
                     help="CPU offload (DeepSpeed/FSDP): optimizer states, or parameters too."),
        click.option("--host-ram", default="1TiB", show_default=True, metavar="SIZE",
                     help="Host RAM per node an offload may use (e.g. 128GiB for a workstation)."),
    ]):
        f = opt(f)
    return f


def fit_options(f):
    """plan_options plus the inverse questions and the CI gate (show)."""
    for opt in reversed([
        click.option("--max-batch", is_flag=True, help="Largest micro-batch that fits on the (one) --gpu, per method."),
        click.option("--max-seq-len", is_flag=True, help="Longest sequence that fits on the (one) --gpu, per method."),
        click.option("--require-fit", metavar="GPU",
                     help="Exit 1 unless the selected method fits on this GPU (id or size; with --gpus/--strategy "
                          "under that plan)."),
    ]):
        f = opt(f)
    return plan_options(f)


def _fit_request(gpu_ids, gpu_memory, strategy, n_gpus, nodes, offload, host_ram="1TiB"):
    from .fit import FitRequest
    from .gpus import parse_bytes

    return FitRequest(gpus=_gpu_list(gpu_ids, gpu_memory), strategy=strategy, n_gpus=n_gpus, nodes=nodes,
                      offload=offload, host_ram=parse_bytes(host_ram))


def fit_section(arch, setups, req, fmt: str, *, selected: str, max_batch: bool = False,
                max_seq_len: bool = False, require_fit: str | None = None) -> tuple[dict[str, Any], int]:
    """Everything `show` prints after the breakdown: the fit matrix, the per-GPU breakdown of an explicit
    plan, the inverse answers and the --require-fit verdict.

    ``setups`` maps a method label to its Setup; ``selected`` is the label --require-fit and the plan
    breakdown use. Returns ``({"text", "fit", "parallel", "inverse", "require_fit"}, exit code)``: ``fit``
    maps each label to its JSON ``fit`` list, the other keys hold JSON-ready dicts (or None).
    """
    from . import fit as F
    from . import render_fit as R
    from .parallel import model_layout, per_gpu

    rows = F.fit_matrix(arch, setups, req.gpus, ladder=req.ladder, max_gpus=req.cap, nodes=req.nodes,
                        host_ram=req.host_ram)
    parts = [R.render_fit_matrix(rows, fmt, host_ram=req.host_ram)]
    out: dict[str, Any] = {"fit": {r.label: R.fit_records(r.verdicts) for r in rows}, "rows": rows,
                           "parallel": None, "inverse": None, "require_fit": None}
    by_label = {r.label: r for r in rows}
    plan = req.plan_or_none()
    if plan is not None:
        r = by_label[selected]
        pg = per_gpu(r.estimate, plan, model_layout(arch, r.setup))
        out["parallel"] = {"method": selected, **pg.to_dict()}
        parts.append(R.render_per_gpu(pg, fmt, req.gpus[0] if len(req.gpus) == 1 else None))
    if max_batch or max_seq_len:
        if len(req.gpus) != 1:
            raise errors.InputError("--max-batch / --max-seq-len need exactly one --gpu (or --gpu-memory)")
        gpu = req.gpus[0]
        inv = []
        for label, setup in setups.items():
            s = F.adapt_setup(setup, gpu)
            p = plan or F.Plan()
            inv.append({"method": label, "gpu": gpu.id, "plan": p.label, "seq_len": s.seq_len,
                        "batch_size": s.batch_size,
                        "max_batch": F.max_batch(arch, s, gpu, plan=p) if max_batch else None,
                        "max_seq_len": F.max_seq_len(arch, s, gpu, plan=p) if max_seq_len else None})
        out["inverse"] = inv
        from .render import table

        head = ("### " if fmt == "markdown" else "") + f"Largest that fits on {gpu.id} ({inv[0]['plan']})"
        cols = ["method"] + (["max micro-batch (at seq)"] if max_batch else []) + \
            (["max seq len (at batch)"] if max_seq_len else [])
        def cell(n: int, at: str) -> str:
            return f"{n} ({at})" if n else f"does not fit ({at})"

        body = [[d["method"]] + ([cell(d["max_batch"], f"seq {d['seq_len']}")] if max_batch else [])
                + ([cell(d["max_seq_len"], f"batch {d['batch_size']}")] if max_seq_len else []) for d in inv]
        parts.append(head + "\n\n" + table(body, cols, fmt))
    code = errors.EXIT_OK
    if require_fit:
        gpu = _one_gpu(require_fit)
        ladder, cap = req.require_plan()
        r = by_label[selected]
        s = F.adapt_setup(r.setup, gpu)
        v = F.fit(arch, s, gpu, ladder=ladder, max_gpus=cap, nodes=req.nodes, host_ram=req.host_ram)
        ok = v.min_gpus is not None
        out["require_fit"] = {"gpu": gpu.id, "method": selected, "ok": ok, **v.to_dict()}
        what = "1 GPU" if cap == 1 else f"≤ {cap} GPUs"
        parts.append(f"require-fit {gpu.id} ({selected}, {what}): " +
                     (f"OK ({v.cell})" if ok else f"FAILED ({gib_text(v)})"))
        code = errors.EXIT_OK if ok else errors.EXIT_REQUIRE_FIT
    out["text"] = "\n\n".join(parts)
    return out, code


def gib_text(v) -> str:
    return f"{v.per_gpu.reserved_bytes / 2**30:.2f} GiB per GPU > {v.gpu.usable_bytes / 2**30:.2f} GiB usable"


#: Setup knobs the command line sets (each maps to a hubvram.memory.Setup field of the same name).
SETUP_KNOBS = ("batch_size", "seq_len", "precision", "optimizer", "grad_checkpointing", "lora_rank", "lora_targets",
               "lora_dropout", "lora_dtype", "double_quant", "prepare_kbit", "attention", "padding")


def _setup_options(f):
    """The training setup (defaults: hubvram.memory.Setup, listed in the README)."""
    from .memory.setup import ATTENTIONS, LORA_DTYPES, METHODS, OPTIMIZERS, PRECISIONS

    for opt in reversed([
        click.option("--method", "methods", multiple=True, type=click.Choice(METHODS),
                     help="Method row(s) (repeatable; default: full, lora, qlora)."),
        click.option("--batch-size", type=click.IntRange(1), default=None, help="Micro-batch per GPU (default 1)."),
        click.option("--seq-len", type=click.IntRange(1), default=None, help="Sequence length (default 2048)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                     help="Default: bf16 for full/LoRA, amp-bf16 for QLoRA."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Default adamw (torch fused)."),
        click.option("--grad-checkpointing/--no-grad-checkpointing", default=None, help="Default on."),
        click.option("--lora-rank", type=click.IntRange(1), default=None, help="Default 16."),
        click.option("--lora-targets", default=None, metavar="NAMES",
                     help="all-linear (default) or comma-separated module names, e.g. q_proj,v_proj."),
        click.option("--lora-dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help="Default 0.05."),
        click.option("--lora-dtype", type=click.Choice(LORA_DTYPES), default=None,
                     help="Adapter dtype (default fp32, PEFT's default)."),
        click.option("--double-quant/--no-double-quant", default=None, help="QLoRA nested quantization (default on)."),
        click.option("--prepare-kbit/--no-prepare-kbit", default=None,
                     help="QLoRA prepare_model_for_kbit_training (default on)."),
        click.option("--attention", type=click.Choice(ATTENTIONS), default=None, help="Default sdpa."),
        click.option("--padding/--packed", default=None, help="Padded batches or packed (default packed)."),
    ]):
        f = opt(f)
    return f


def _take_setup(kw: dict[str, Any]) -> dict[str, Any]:
    """Pop the setup knobs out of a command's keyword arguments."""
    return {k: kw.pop(k) for k in SETUP_KNOBS if k in kw}


def _setups(methods: Sequence[str], **knobs: Any) -> dict[str, Any]:
    from .memory.setup import METHODS, Setup

    kw = {k: v for k, v in knobs.items() if v is not None}
    return {m: Setup(method=m, **kw) for m in (methods or METHODS)}


@main.command("gpus")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def gpus_cmd(fmt: str, debug: bool) -> None:
    """The GPU catalog: ids for --gpu, memory as the driver reports it, what training can use, bf16."""
    from . import render, render_fit
    from .gpus import load_catalog

    def run() -> int:
        cat = load_catalog()
        if fmt == "json":
            click.echo(render.to_json({"gpus": render_fit.gpu_records(cat)}))
        elif fmt == "csv":
            recs = [{**r, "aliases": " ".join(r["aliases"])} for r in render_fit.gpu_records(cat)]
            click.echo(render.to_csv(recs), nl=False)
        else:
            click.echo(render_fit.render_gpus(cat, fmt))
        return errors.EXIT_OK

    _exit(_guard(run, debug))


@main.command()
@click.argument("models", nargs=-1)
@click.option("--from-file", type=click.File("r"), default=None,
              help="Also read model ids from FILE, one per line (# comments; - for stdin).")
@click.option("--sort", "sort_by", default=None, metavar="COLUMN",
              help="Sort by model, method, params, peak or a GPU id (verdict: fits on 1 first).")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True, help="Models fetched at once.")
@_setup_options
@plan_options
@source_options
def compare(models, from_file, sort_by, jobs, methods, gpu_ids, gpu_memory, strategy, n_gpus, nodes, offload,
            host_ram, revision, offline, cache_dir, token, fmt, debug, **knobs) -> None:
    """Many models side by side: a row per model and method, with a verdict per GPU.

    \b
      hubvram compare meta-llama/Meta-Llama-3-8B Qwen/Qwen2.5-7B --gpu rtx-4090 --gpu a100-80gb
      hubvram compare --from-file models.txt --sort peak --format csv
    Exit code 4 when some models failed (their rows say why), the failing model's code when all did.
    """
    from . import api, render
    from . import compare as C

    def run() -> int:
        if revision:
            raise errors.InputError("compare takes no --revision: write MODEL@REV")
        ids = list(models) + (api.iter_ids_from_file(from_file) if from_file is not None else [])
        if not ids:
            raise click.UsageError("give at least one MODEL or --from-file FILE")
        req = _fit_request(gpu_ids, gpu_memory, strategy, n_gpus, nodes, offload, host_ram)
        setups = _setups(methods, **_take_setup(knobs))
        with _load_progress(len(ids)) as tick:
            archs = api.load_models(ids, max_workers=jobs, offline=offline, cache_dir=cache_dir, token=token,
                                    on_done=tick)
        rows = C.compare_rows(ids, archs, setups, req.gpus, ladder=req.ladder, max_gpus=req.cap, nodes=req.nodes,
                              host_ram=req.host_ram, strict=debug)
        rows = C.sort_rows(rows, sort_by, req.gpus)
        if fmt == "json":
            click.echo(render.to_json({"models": C.compare_records(rows), "gpus": [g.id for g in req.gpus]}))
        elif fmt == "csv":
            click.echo(render.to_csv(C.compare_csv_rows(rows, req.gpus)), nl=False)
        else:
            click.echo(C.render_compare(rows, req.gpus, fmt))
        failed = [r for r in rows if not r.ok]
        if not failed:
            return errors.EXIT_OK
        for r in failed:
            click.echo(f"hubvram: error: {r.error}", err=True)
        return failed[0].error.exit_code if len(failed) == len(ids) else errors.EXIT_PARTIAL

    _exit(_guard(run, debug))


class _load_progress:
    """A progress bar on stderr while models load: only for more than one model and a terminal."""

    def __init__(self, total: int) -> None:
        import threading

        self.total, self.bar, self.lock = total, None, threading.Lock()

    def __enter__(self):
        if self.total > 1 and sys.stderr.isatty():
            self.bar = click.progressbar(length=self.total, label="loading", file=sys.stderr)
            self.bar.__enter__()

        def tick() -> None:
            if self.bar is not None:
                with self.lock:
                    self.bar.update(1)
        return tick

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


@main.command()
@click.argument("model")
@click.option("--gpu", "gpu_id", required=True, metavar="ID", help="The GPU (id, or a size such as 24GiB).")
@click.option("--gpus", "n_gpus", type=click.IntRange(1, 4096), default=None,
              help="GPU budget (default: 1, or the fewest GPUs at which anything fits).")
@click.option("--top", type=click.IntRange(1, 50), default=5, show_default=True, help="How many setups.")
@click.option("--host-ram", default="1TiB", show_default=True, metavar="SIZE",
              help="Host RAM per node an offload may use.")
@click.option("--seq-len", type=click.IntRange(1), default=None, help="Sequence length (default 2048).")
@click.option("--lora-rank", type=click.IntRange(1), default=None, help="LoRA rank (default 16).")
@click.option("--attention", type=click.Choice(("sdpa", "flash", "eager")), default=None, help="Default sdpa.")
@source_options
def advise(model, gpu_id, n_gpus, top, host_ram, seq_len, lora_rank, attention, revision, offline, cache_dir, token,
           fmt, debug) -> None:
    """The least-compromise setups that fit MODEL on a GPU, ranked, each as a command line.

    Tries full / LoRA / QLoRA x AdamW / 8-bit AdamW x checkpointing off / on, each at its largest
    micro-batch, on one GPU or the fewest that fit (or --gpus N); fp16 recipes on T4 / V100.

    \b
      hubvram advise meta-llama/Meta-Llama-3-8B --gpu rtx-4090
      hubvram advise meta-llama/Llama-3.1-70B --gpu h100 --gpus 8
    """
    from . import api, render, render_fit
    from . import fit as F

    def run() -> int:
        gpu = _one_gpu(gpu_id)
        base = _setups(("lora",), seq_len=seq_len, lora_rank=lora_rank, attention=attention)["lora"]
        arch = api.load_model(model, revision=revision, offline=offline, cache_dir=cache_dir, token=token)
        from .gpus import parse_bytes

        adv = F.advise(arch, gpu, n_gpus, base=base, top=top, host_ram=parse_bytes(host_ram))
        if fmt == "json":
            click.echo(render.to_json({"model": arch.model_id, "gpu": gpu.id,
                                       "advice": render_fit.advice_records(adv)}))
        elif fmt == "csv":
            click.echo(render.to_csv([{**d, "compromises": "; ".join(d["compromises"])}
                                      for d in render_fit.advice_records(adv)]), nl=False)
        else:
            click.echo(render_fit.render_advice(adv, arch.model_id, gpu, fmt))
        return errors.EXIT_OK

    _exit(_guard(run, debug))


def show_fit(arch, fmt: str, *, methods=(), gpu_ids=(), gpu_memory=(), strategy=None, n_gpus=None, nodes=1,
             offload=None, host_ram="1TiB", max_batch=False, max_seq_len=False, require_fit=None,
             **knobs: Any) -> tuple[dict[str, Any], int]:
    """`show`'s estimate and fit part: ``({"text", "json", "csv"}, exit code)``. ``text`` is the memory
    breakdown then the fit matrix; ``json`` holds ``estimates`` (one per method: the estimate and its ``fit``
    list) and, when asked, ``parallel`` / ``inverse`` / ``require_fit``."""
    from . import render
    from .memory.setup import Setup

    setups = _setups(methods, **_take_setup(knobs))
    selected = methods[0] if methods else Setup().method
    req = _fit_request(gpu_ids, gpu_memory, strategy, n_gpus, nodes, offload, host_ram)
    sec, code = fit_section(arch, setups, req, fmt, selected=selected, max_batch=max_batch,
                            max_seq_len=max_seq_len, require_fit=require_fit)
    estimates = [{**r.estimate.to_dict(), "fit": sec["fit"][r.label]} for r in sec["rows"]]
    js: dict[str, Any] = {"estimates": estimates}
    for k in ("parallel", "inverse", "require_fit"):
        if sec[k] is not None:
            js[k] = sec[k]
    csv_cols = {f"fit_{r.label}_{v.gpu.id}": v.cell for r in sec["rows"] for v in r.verdicts}
    breakdown = render.estimate_table([r.estimate for r in sec["rows"]], fmt)
    return {"text": breakdown + "\n\n" + sec["text"], "json": js, "csv": csv_cols,
            "estimates": [r.estimate for r in sec["rows"]]}, code


def _extend(cmd: click.Command, *decorators) -> None:
    """Append the options of ``decorators`` to an existing command, in --help order."""
    def holder() -> None: ...
    for d in reversed(decorators):
        holder = d(holder)
    cmd.params.extend(reversed(holder.__click_params__))  # type: ignore[attr-defined]


# `show` takes the setup and fit options too
_extend(show, _setup_options, fit_options)


if __name__ == "__main__":  # pragma: no cover
    main()
