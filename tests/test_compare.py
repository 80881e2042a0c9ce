"""compare: rows per model × method, a failing model in the list, sorting, every format, exit codes."""

from __future__ import annotations

import csv
import io
import json

import pytest

from hubvram import load_model
from hubvram.compare import compare_csv_rows, compare_records, compare_rows, render_compare, sort_rows
from hubvram.errors import EXIT_HUB, EXIT_PARTIAL, InputError, RepoNotFoundError
from hubvram.gpus import get_gpu
from standin import ToySetup, toy

GPUS = (get_gpu("rtx-4090"), get_gpu("a100-80gb"))
SETUPS = {"full": ToySetup(method="full"), "qlora": ToySetup(method="qlora")}


@pytest.fixture(scope="module")
def archs():
    return [load_model("meta-llama/Meta-Llama-3-8B", offline=True), RepoNotFoundError("no such repo", model="org/nope"),
            load_model("meta-llama/Llama-3.2-1B", offline=True)]


IDS = ["meta-llama/Meta-Llama-3-8B", "org/nope", "meta-llama/Llama-3.2-1B"]


def test_rows_and_the_failing_model_keeps_its_error(archs):
    rows = compare_rows(IDS, archs, SETUPS, GPUS, estimator=toy)
    assert [(r.model, r.method) for r in rows] == [
        ("meta-llama/Meta-Llama-3-8B", "full"), ("meta-llama/Meta-Llama-3-8B", "qlora"), ("org/nope", None),
        ("meta-llama/Llama-3.2-1B", "full"), ("meta-llama/Llama-3.2-1B", "qlora")]
    bad = rows[2]
    assert not bad.ok and "no such repo" in str(bad.error)
    assert all(len(r.verdicts) == 2 for r in rows if r.ok)
    text = render_compare(rows, GPUS)
    assert "org/nope" in text and "no such repo" in text and "error" in text.splitlines()[2]
    recs = compare_records(rows)
    assert recs[2]["error"]["exit_code"] == EXIT_HUB and "fit" in recs[0]
    assert recs[0]["fit"][0]["gpu"] == "rtx-4090" and {"min_gpus", "per_gpu_bytes", "strategy", "fits_on_one",
                                                       "gpu_memory_bytes"} <= set(recs[0]["fit"][0])


def test_an_estimate_error_is_a_row_too(archs):
    def broken(arch, s):
        if arch.model_id.endswith("1B"):
            raise InputError("unsupported", model=arch.model_id)
        return toy(arch, s)

    rows = compare_rows(IDS[:1] + IDS[2:], [archs[0], archs[2]], SETUPS, GPUS, estimator=broken)
    assert [r.ok for r in rows] == [True, True, False]


def test_sorting(archs):
    rows = compare_rows(IDS, archs, SETUPS, GPUS, estimator=toy)
    by_params = sort_rows(rows, "params", GPUS)
    assert [r.params for r in by_params if r.ok] == sorted(r.params for r in rows if r.ok)
    assert not by_params[-1].ok  # errors last
    by_peak = sort_rows(rows, "PEAK", GPUS)
    peaks = [r.peak_allocated_bytes for r in by_peak if r.ok]
    assert peaks == sorted(peaks)
    by_gpu = sort_rows(rows, "rtx-4090", GPUS)
    cells = [r.verdicts[0].cell for r in by_gpu if r.ok]
    assert cells[0] == "fits on 1" and cells[-1] in ("does not fit",) or "×" in cells[-1]
    assert [r.model for r in sort_rows(rows, "model", GPUS) if r.ok][0] == "meta-llama/Llama-3.2-1B"
    with pytest.raises(InputError):
        sort_rows(rows, "colour", GPUS)


def test_csv_rows(archs):
    rows = compare_rows(IDS, archs, SETUPS, GPUS, estimator=toy)
    out = compare_csv_rows(rows, GPUS)
    assert out[2]["error"] and out[2]["rtx-4090"] == ""
    assert set(out[0]) >= {"model", "method", "params", "peak_allocated_bytes", "rtx-4090", "rtx-4090_min_gpus",
                           "a100-80gb_per_gpu_bytes", "error"}


# --- the command line ------------------------------------------------------------------------------


CLI_IDS = ["meta-llama/Meta-Llama-3-8B", "org/does-not-exist", "meta-llama/Llama-3.2-1B"]


def test_cli_compare_with_a_failing_model_exits_4(run):
    r = run("compare", *CLI_IDS, "--offline", "--gpu", "rtx-4090", "--gpu", "a100-80gb")
    assert r.exit_code == EXIT_PARTIAL
    out = r.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith(("meta-llama", "org/"))]
    assert len(lines) == 3 + 1 + 3  # two models × three methods + the failing model's row
    bad = next(ln for ln in lines if ln.startswith("org/does-not-exist"))
    assert "offline, and not in the HTTP cache" in bad
    assert "fits on 1" in out and "rtx-4090 (23)" in out
    assert "org/does-not-exist" in r.stderr


def test_cli_compare_all_failing_exits_with_their_code(run):
    r = run("compare", "org/does-not-exist", "org/nope-too", "--offline")
    assert r.exit_code == EXIT_HUB


def test_cli_compare_every_format(run):
    js = run("compare", *CLI_IDS, "--offline", "--gpu", "t4", "--method", "qlora", "--format", "json")
    assert js.exit_code == EXIT_PARTIAL
    doc = json.loads(js.stdout)
    assert doc["gpus"] == ["t4"]
    ok = [m for m in doc["models"] if "error" not in m]
    assert [m["method"] for m in ok] == ["qlora", "qlora"]
    f = ok[0]["fit"][0]
    assert f["gpu"] == "t4" and f["gpu_memory_bytes"] == 16_106_127_360 and f["fits_on_one"] is True
    assert f["min_gpus"] == 1 and f["strategy"] == "single" and f["per_gpu_bytes"] < f["usable_bytes"]
    assert ok[0]["setup"]["precision"] == "amp-bf16"  # the row's setup; the T4 verdict used its fp16 twin
    assert doc["models"][1]["error"]["exit_code"] == EXIT_HUB
    cs = run("compare", *CLI_IDS, "--offline", "--gpu", "t4", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(cs.stdout)))
    assert len(rows) == 7 and rows[3]["error"] and rows[0]["t4"]
    md = run("compare", *CLI_IDS, "--offline", "--format", "markdown")
    assert md.stdout.startswith("### Compare") and "| meta-llama/Meta-Llama-3-8B | full" in md.stdout
    assert "|" in md.stdout.splitlines()[2]


def test_cli_compare_from_file_and_sort(run, tmp_path):
    f = tmp_path / "models.txt"
    f.write_text("# my models\nmeta-llama/Meta-Llama-3-8B\n\nmeta-llama/Llama-3.2-1B  # small\n")
    r = run("compare", "--from-file", str(f), "--offline", "--sort", "peak", "--method", "lora", "--format", "json")
    assert r.exit_code == 0
    peaks = [m["peak_allocated_bytes"] for m in json.loads(r.stdout)["models"]]
    assert len(peaks) == 2 and peaks == sorted(peaks)
    r = run("compare", "--from-file", "-", "--offline", "--sort", "a100-80gb", "--format", "csv",
            input="meta-llama/Llama-3.1-70B\nmeta-llama/Llama-3.2-1B\n")
    first = list(csv.DictReader(io.StringIO(r.stdout)))[0]
    assert first["model"] == "meta-llama/Llama-3.2-1B"
    bad = run("compare", "meta-llama/Llama-3.2-1B", "--offline", "--sort", "colour")
    assert bad.exit_code == 2 and "cannot sort by 'colour'" in bad.stderr


def test_cli_compare_needs_models(run):
    r = run("compare", "--offline")
    assert r.exit_code == 2


def test_cli_compare_plan_options(run):
    r = run("compare", "meta-llama/Llama-3.1-70B", "--offline", "--gpu", "a100-80gb", "--strategy", "fsdp",
            "--method", "full", "--format", "json")
    f = json.loads(r.stdout)["models"][0]["fit"][0]
    assert f["strategy"] == "fsdp" and f["min_gpus"] > 1
    r = run("compare", "meta-llama/Llama-3.1-70B", "--offline", "--strategy", "fsdp", "--offload", "optimizer")
    assert r.exit_code == 2 and "use --offload params" in r.stderr


def test_progress_bar_only_for_many_models_on_a_terminal(run, monkeypatch):
    import sys

    from hubvram import cli

    r = run("compare", *CLI_IDS, "--offline")
    assert "loading" not in r.stderr  # CliRunner's stderr is not a terminal

    class TTY(io.StringIO):
        def isatty(self):
            return True

    fake = TTY()
    monkeypatch.setattr(sys, "stderr", fake)
    with cli._load_progress(3) as tick:
        for _ in range(3):
            tick()
    assert "loading" in fake.getvalue()
    fake2 = TTY()
    monkeypatch.setattr(sys, "stderr", fake2)
    with cli._load_progress(1) as tick:
        tick()
    assert fake2.getvalue() == ""


def test_an_unexpected_exception_is_that_models_row_unless_strict(archs):
    def buggy(arch, s):
        if arch.model_id.endswith("1B"):
            raise AttributeError("boom")
        return toy(arch, s)

    rows = compare_rows([IDS[0], IDS[2]], [archs[0], archs[2]], SETUPS, GPUS, estimator=buggy)
    assert [r.ok for r in rows] == [True, True, False]
    assert "AttributeError: boom" in str(rows[-1].error) and rows[-1].error.exit_code == 2
    with pytest.raises(AttributeError):
        compare_rows([IDS[2]], [archs[2]], SETUPS, GPUS, estimator=buggy, strict=True)
