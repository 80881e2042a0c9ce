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


if __name__ == "__main__":  # pragma: no cover
    main()
