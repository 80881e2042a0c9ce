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


@main.command()
@click.argument("model")
@source_options
def show(model: str, revision: str | None, offline: bool | None, cache_dir: str | None, token: str | None,
         fmt: str, debug: bool) -> None:
    """The model picture: identity, exact parameter counts and dimensions."""
    from . import api, render

    def run() -> int:
        arch = api.load_model(model, revision=revision, offline=offline, cache_dir=cache_dir, token=token)
        if fmt == "json":
            click.echo(render.to_json({"models": [render.model_dict(arch)]}))
        elif fmt == "csv":
            d = render.model_dict(arch)
            click.echo(render.to_csv([{"id": d["id"], "revision": d["revision"], "source": d["source"],
                                       "parameters": d["parameters"]["total"],
                                       "hub_total": d["parameters"]["hub_total"],
                                       **{f"params_{k}": v for k, v in d["parameters"]["by_group"].items()}}]),
                       nl=False)
        else:
            click.echo(render.model_summary(arch, fmt))
        return errors.EXIT_OK

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
    from .hub import parse_max_age

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


if __name__ == "__main__":  # pragma: no cover
    main()
