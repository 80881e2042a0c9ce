"""Fit verdicts, minimum GPU counts, the inverse solvers and advice.

Two layers: the search logic against a toy memory model that can be checked by hand (tests/standin.py),
and hand-checked verdicts with the real memory model on the bundled snapshot.
"""

from __future__ import annotations

import dataclasses

import pytest

from hubvram import load_model
from hubvram.fit import (
    LADDER, _plan, adapt_setup, advise, command_line, fit, fit_matrix, fit_plan, fits, gpu_counts,
    largest_fitting, max_batch, max_seq_len,
)
from hubvram.gpus import custom_gpu, get_gpu
from hubvram.parallel import Plan, model_layout, per_gpu
from standin import ToySetup, toy

GIB = 1 << 30


@pytest.fixture(scope="module")
def llama8b():
    return load_model("meta-llama/Meta-Llama-3-8B", offline=True)


@pytest.fixture(scope="module")
def llama405b():
    return load_model("meta-llama/Llama-3.1-405B", offline=True)


# --- search primitives ------------------------------------------------------------------------------
def test_gpu_counts():
    assert gpu_counts(64) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 32, 40, 48, 56, 64]
    assert gpu_counts(4) == [1, 2, 3, 4]
    assert gpu_counts(12) == [1, 2, 3, 4, 5, 6, 7, 8, 12]
    assert gpu_counts(64, nodes=2) == [2, 4, 6, 8, 16, 24, 32, 40, 48, 56, 64]


@pytest.mark.parametrize("threshold", [0, 1, 2, 7, 100, 999, 1000, 1001])
@pytest.mark.parametrize("guess", [None, 1, 50, 999, 5000])
def test_largest_fitting_against_brute_force(threshold, guess):
    calls = []

    def ok(x):
        calls.append(x)
        return x <= threshold

    brute = max([x for x in range(1, 1001) if x <= threshold], default=0)
    assert largest_fitting(ok, 1, 1000, guess) == brute
    assert len(calls) <= 14  # log2(1000) + the guess check, never a scan


def test_exact_guess_takes_two_calls():
    calls = []
    largest_fitting(lambda x: calls.append(x) or x <= 37, 1, 10**6, 37)
    assert calls == [1, 37, 38]


# --- verdicts with the toy model (hand-checkable) ---------------------------------------------------------
def test_min_gpus_is_minimal_for_every_strategy(llama8b):
    setup = ToySetup(method="full")
    est, layout = toy(llama8b, setup), model_layout(llama8b, setup)
    for gpu in (get_gpu("rtx-4090"), get_gpu("a100-40gb"), get_gpu("t4")):
        for strategy, offload in LADDER:
            counts = gpu_counts(64)
            brute = next((n for n in counts if fits(per_gpu(est, _plan(strategy, n, 1, offload), layout), gpu)), None)
            v = fit_plan(est, layout, gpu, ladder=((strategy, offload),))
            assert v.min_gpus == brute, (gpu.id, strategy, offload)


def test_verdict_at_min_gpus_fits_and_below_does_not(llama8b):
    setup = ToySetup(method="full")
    v = fit(llama8b, setup, get_gpu("rtx-4090"), estimator=toy)
    assert not v.fits_on_one and v.min_gpus and v.min_gpus > 1
    assert v.per_gpu.reserved_bytes <= v.gpu.usable_bytes
    est, layout = toy(llama8b, setup), model_layout(llama8b, setup)
    prev = gpu_counts(64)[gpu_counts(64).index(v.min_gpus) - 1]
    below = per_gpu(est, _plan(v.strategy, prev, 1, v.offload), layout)
    assert below.reserved_bytes > v.gpu.usable_bytes
    assert v.cell == f"{v.min_gpus} × {v.strategy}" + (f" + offload {v.offload}" if v.offload else "")


def test_offload_only_when_nothing_resident_fits(llama8b):
    setup = ToySetup(method="full")
    v = fit(llama8b, setup, get_gpu("a100-80gb"), estimator=toy, max_gpus=1)
    # 8B × 12 B/param = 96 GB > 80 GB on one GPU; with one GPU only optimizer offload can help
    assert v.min_gpus == 1 and v.offload == "optimizer" and not v.fits_on_one
    assert v.per_gpu.host_bytes_per_node > 0
    v2 = fit(llama8b, setup, get_gpu("a100-80gb"), estimator=toy)
    assert v2.offload is None and v2.min_gpus == 2


def test_does_not_fit_reports_the_leanest_attempt():
    arch = load_model("meta-llama/Llama-3.1-405B", offline=True)
    v = fit(arch, ToySetup(method="full", batch_size=64, seq_len=8192, grad_checkpointing=False),
            get_gpu("t4"), estimator=toy)
    assert v.min_gpus is None and v.plan is None and v.cell == "does not fit"
    d = v.to_dict()
    assert d["min_gpus"] is None and d["strategy"] is None and d["per_gpu_bytes"] > d["usable_bytes"]


def test_fit_matrix_rows_and_fp16_for_cards_without_bf16(llama8b):
    seen = []

    def est(arch, s):
        seen.append(s.precision)
        return toy(arch, s)

    gpus = [get_gpu("t4"), get_gpu("rtx-4090")]
    rows = fit_matrix(llama8b, {"full": ToySetup(method="full"), "qlora": ToySetup(method="qlora")}, gpus,
                      estimator=est)
    assert [r.label for r in rows] == ["full", "qlora"] and all(len(r.verdicts) == 2 for r in rows)
    assert "fp16" in seen and "bf16" in seen
    assert adapt_setup(ToySetup(precision="amp-bf16"), get_gpu("v100-32gb")).precision == "amp-fp16"
    assert adapt_setup(ToySetup(), get_gpu("h100")).precision == "bf16"


# --- inverse solvers against brute force (toy model: affine in batch, quadratic in seq for eager) ------------
@pytest.mark.parametrize("gpu_id", ["t4", "rtx-4090", "a100-80gb"])
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_max_batch_against_brute_force(llama8b, gpu_id, method):
    gpu = get_gpu(gpu_id)
    setup = ToySetup(method=method, seq_len=1024)
    layout = model_layout(llama8b, setup)

    def fits_b(b):
        return per_gpu(toy(llama8b, dataclasses.replace(setup, batch_size=b)), Plan(), layout).reserved_bytes \
            <= gpu.usable_bytes

    brute = 0
    while fits_b(brute + 1) and brute < 4096:
        brute += 1
    assert max_batch(llama8b, setup, gpu, estimator=toy, limit=4096) == brute


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("gpu_id", ["rtx-4090", "a100-80gb"])
def test_max_seq_len_against_brute_force(llama8b, attention, gpu_id):
    gpu = get_gpu(gpu_id)
    setup = ToySetup(method="qlora", attention=attention, grad_checkpointing=False)
    layout = model_layout(llama8b, setup)
    calls = []

    def counting(arch, s):
        calls.append(s.seq_len)
        return toy(arch, s)

    got = max_seq_len(llama8b, setup, gpu, estimator=counting, limit=1 << 17)
    fits_s = lambda s: per_gpu(toy(llama8b, dataclasses.replace(setup, seq_len=s)), Plan(), layout).reserved_bytes \
        <= gpu.usable_bytes  # noqa: E731
    assert fits_s(got) and (got == 1 << 17 or not fits_s(got + 1))
    # brute force on a coarse grid agrees
    brute = max(s for s in range(0, (1 << 17) + 1, 256) if s == 0 or fits_s(s))
    assert brute <= got < brute + 256
    assert len(calls) <= 25  # solved, not looped


def test_max_batch_zero_when_nothing_fits(llama405b):
    assert max_batch(llama405b, ToySetup(method="full"), get_gpu("t4"), estimator=toy) == 0


def test_max_batch_under_a_strategy(llama8b):
    gpu = get_gpu("rtx-4090")
    setup = ToySetup(method="full")
    one = max_batch(llama8b, setup, gpu, estimator=toy)
    eight = max_batch(llama8b, setup, gpu, plan=Plan("zero3", 8), estimator=toy)
    assert one == 0 and eight >= 1


# --- advice ----------------------------------------------------------------------------------------
def test_advise_ranks_least_compromise_first(llama8b):
    adv = advise(llama8b, get_gpu("a100-80gb"), base=ToySetup(), estimator=toy)
    assert adv and [a.rank for a in adv] == list(range(1, len(adv) + 1))
    assert all(a.plan.gpus == 1 for a in adv)  # something fits on one, so the budget is one GPU
    methods = [a.setup.method for a in adv]
    assert methods == sorted(methods, key=["full", "lora", "qlora"].index)
    for a in adv:
        assert a.per_gpu.reserved_bytes <= get_gpu("a100-80gb").usable_bytes
        assert a.command.startswith("hubvram meta-llama/Meta-Llama-3-8B --method ")
        assert "--gpu a100-80gb" in a.command and f"--batch-size {a.setup.batch_size}" in a.command


def test_advise_uses_fp16_on_t4_and_budget(llama8b):
    adv = advise(llama8b, get_gpu("t4"), base=ToySetup(), estimator=toy)
    assert adv and all(a.setup.precision == "fp16" for a in adv)
    assert all("--precision fp16" in a.command for a in adv)
    adv4 = advise(llama8b, get_gpu("t4"), 4, base=ToySetup(), estimator=toy)
    assert all(a.plan.gpus <= 4 for a in adv4)


def test_command_line_custom_gpu_and_strategy():
    cmd = command_line("org/m", ToySetup(method="lora"), custom_gpu("24GiB"), Plan("zero3", 4, offload="optimizer"))
    assert "--gpu-memory 25769803776B" in cmd and "--strategy zero3 --gpus 4 --offload optimizer" in cmd


# --- hand-checked verdicts with the real memory model (bundled snapshot, offline) -------------------------
from hubvram.memory import Setup, estimate  # noqa: E402


def test_llama3_8b_full_does_not_fit_one_24gb_card_but_qlora_does(llama8b):
    gpu = get_gpu("rtx-4090")
    full = fit(llama8b, Setup(method="full"), gpu)
    # by hand: bf16 weights 2P + grads 2P + AdamW states 4P (bf16) = 8 × 8.03e9 B = 59.8 GiB > 23.5 GiB usable
    assert 8 * 8_030_261_248 > gpu.usable_bytes
    assert not full.fits_on_one and full.min_gpus and full.min_gpus > 1
    qlora = fit(llama8b, Setup(method="qlora"), gpu)
    # by hand: NF4 base 3.25 GiB + fp32 embed/head 3.9 GiB + adapters/Adam 0.6 GiB + activations/logits ≈ 12 GiB
    assert qlora.fits_on_one and qlora.min_gpus == 1 and qlora.cell == "fits on 1"
    assert 10 * GIB < qlora.per_gpu.reserved_bytes < gpu.usable_bytes


def test_llama_405b_full_needs_many_80gb_cards_under_zero3_and_none_under_ddp(llama405b):
    gpu = get_gpu("h100-80gb")
    setup = Setup(method="full")
    zero3 = fit(llama405b, setup, gpu, ladder=(("zero3", None),), max_gpus=256)
    # DeepSpeed keeps 2 + 2 (16-bit weights, grads) + 4 + 4 + 8 (fp32 grads, master, Adam) = 20 B/param:
    # 8.1 TB of model states alone need at least ceil(20 × 405.85e9 / 79.15 GiB) = 96 GPUs
    lower = -(-20 * llama405b.counts.total // gpu.usable_bytes)
    assert lower == 96
    assert zero3.min_gpus is not None and lower <= zero3.min_gpus <= 256 and zero3.strategy == "zero3"
    assert fit(llama405b, setup, gpu, ladder=(("zero3", None),)).min_gpus is None  # beyond the default cap of 64
    ddp = fit(llama405b, setup, gpu, ladder=(("ddp", None),), max_gpus=256)
    assert ddp.min_gpus is None and ddp.cell == "does not fit"
    # DDP replicates everything: its per-GPU memory does not shrink with N
    est, layout = estimate(llama405b, setup), model_layout(llama405b, setup)
    assert per_gpu(est, Plan("ddp", 64), layout).reserved_bytes >= est.reserved_bytes


@pytest.mark.parametrize("model,method,gpu_id", [
    ("meta-llama/Llama-3.1-405B", "full", "h100-80gb"), ("meta-llama/Llama-3.1-405B", "qlora", "a100-80gb"),
    ("meta-llama/Llama-3.1-70B", "full", "a100-40gb"), ("meta-llama/Llama-3.1-70B", "lora", "rtx-4090"),
    ("meta-llama/Meta-Llama-3-8B", "full", "t4"),
])
def test_at_min_gpus_it_fits_and_one_count_below_it_does_not(model, method, gpu_id):
    arch, gpu = load_model(model, offline=True), get_gpu(gpu_id)
    setup = adapt_setup(Setup(method=method), gpu)
    v = fit(arch, setup, gpu, max_gpus=256)
    assert v.min_gpus is not None and not v.fits_on_one
    assert v.per_gpu.reserved_bytes <= gpu.usable_bytes
    assert v.to_dict()["per_gpu_bytes"] == v.per_gpu.reserved_bytes
    counts = gpu_counts(256)
    est, layout = estimate(arch, setup), model_layout(arch, setup)
    if v.min_gpus > 1:
        below = per_gpu(est, _plan(v.strategy, counts[counts.index(v.min_gpus) - 1], 1, v.offload), layout)
        assert below.reserved_bytes > gpu.usable_bytes
    # no rung of the same offload tier fits with fewer GPUs (brute force over the counts)
    for strategy, offload in LADDER:
        if offload == v.offload:
            assert not any(per_gpu(est, _plan(strategy, n, 1, offload), layout).reserved_bytes <= gpu.usable_bytes
                           for n in counts if n < v.min_gpus), (strategy, offload)


def test_single_plan_reproduces_the_estimate_exactly(llama8b):
    for method in ("full", "lora", "qlora"):
        for opt in ("adamw", "adamw-foreach", "paged-adamw-8bit"):
            est = estimate(llama8b, Setup(method=method, optimizer=opt))
            pg = per_gpu(est, Plan(), model_layout(llama8b, est.setup))
            assert (pg.peak_allocated_bytes, pg.reserved_bytes, pg.device_bytes, pg.peak_phase) == (
                est.peak_allocated_bytes, est.reserved_bytes, est.device_bytes, est.peak_phase)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("gpu_id", ["rtx-4090", "a100-80gb"])
def test_real_max_batch_against_brute_force(llama8b, method, gpu_id):
    gpu = get_gpu(gpu_id)
    setup = Setup(method=method)
    layout = model_layout(llama8b, setup)

    def ok(b):
        return per_gpu(estimate(llama8b, setup.replace(batch_size=b)), Plan(), layout).reserved_bytes <= gpu.usable_bytes

    brute = 0
    while brute < 512 and ok(brute + 1):
        brute += 1
    assert max_batch(llama8b, setup, gpu, limit=512) == brute


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["full", "qlora"])
def test_real_max_seq_len_against_brute_force(llama8b, attention, method):
    gpu = get_gpu("a100-80gb")
    setup = Setup(method=method, attention=attention)
    layout = model_layout(llama8b, setup)

    def ok(s):
        return per_gpu(estimate(llama8b, setup.replace(seq_len=s)), Plan(), layout).reserved_bytes <= gpu.usable_bytes

    limit = 1 << 17
    got = max_seq_len(llama8b, setup, gpu, limit=limit)
    coarse = max((s for s in range(256, limit + 1, 256) if ok(s)), default=0)
    brute = next(s for s in range(coarse + 255, coarse - 1, -1) if s == 0 or ok(s)) if coarse else 0
    assert got == brute
    # capped at the context length by default
    assert max_seq_len(llama8b, setup, gpu) == min(got, 8192)


def test_real_advise_t4_gets_fp16_recipes(llama8b):
    adv = advise(llama8b, get_gpu("t4"))
    assert adv and all(a.setup.precision == "fp16" for a in adv)
    assert all(a.per_gpu.reserved_bytes <= get_gpu("t4").usable_bytes for a in adv)
    assert adv[0].command.startswith("hubvram meta-llama/Meta-Llama-3-8B --method ")


# --- the command line: gpus, advise ---------------------------------------------------------------------
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402





def test_cli_gpus_every_format(run):
    from hubvram.gpus import load_catalog

    t = run("gpus")
    assert t.exit_code == 0 and "h100-80gb *" in t.stdout and "no (fp16)" in t.stdout
    md = run("gpus", "--format", "markdown").stdout
    assert md.startswith("| id") and "| t4 *" in md
    js = json.loads(run("gpus", "--format", "json").stdout)["gpus"]
    assert len(js) == len(load_catalog()) and js[1]["id"] == "t4" and js[1]["bf16"] is False
    rows = list(csv.DictReader(io.StringIO(run("gpus", "--format", "csv").stdout)))
    assert rows[0]["id"] == "rtx-3060" and int(rows[0]["usable_bytes"]) < int(rows[0]["memory_bytes"])


def test_cli_advise_every_format(run):
    t = run("advise", "meta-llama/Meta-Llama-3-8B", "--gpu", "rtx-4090", "--offline")
    assert t.exit_code == 0
    assert "least compromise first" in t.stdout and "hubvram meta-llama/Meta-Llama-3-8B --method lora" in t.stdout
    js = json.loads(run("advise", "meta-llama/Meta-Llama-3-8B", "--gpu", "rtx-4090", "--offline",
                        "--format", "json").stdout)
    adv = js["advice"]
    assert js["gpu"] == "rtx-4090" and adv[0]["rank"] == 1 and adv[0]["per_gpu_bytes"] < 24 * 10**9
    assert {"method", "optimizer", "grad_checkpointing", "batch_size", "lora_rank", "strategy", "gpus",
            "command"} <= set(adv[0])
    cs = list(csv.DictReader(io.StringIO(run("advise", "meta-llama/Meta-Llama-3-8B", "--gpu", "rtx-4090",
                                             "--offline", "--format", "csv").stdout)))
    assert cs[0]["rank"] == "1" and cs[0]["command"].startswith("hubvram ")
    md = run("advise", "meta-llama/Meta-Llama-3-8B", "--gpu", "rtx-4090", "--offline", "--format", "markdown").stdout
    assert md.startswith("### Setups") and "`hubvram meta-llama/Meta-Llama-3-8B" in md


def test_cli_advise_multi_gpu_and_custom_size(run):
    js = json.loads(run("advise", "meta-llama/Llama-3.1-70B", "--gpu", "a100-80gb", "--gpus", "8", "--offline",
                        "--format", "json").stdout)["advice"]
    assert js[0]["method"] == "full" and 1 < js[0]["gpus"] <= 8 and js[0]["strategy"] in ("zero2", "zero3", "fsdp")
    assert "--strategy" in js[0]["command"] and "--gpus" in js[0]["command"]
    r = run("advise", "meta-llama/Llama-3.2-1B", "--gpu", "12GiB", "--offline", "--format", "json")
    adv = json.loads(r.stdout)["advice"]
    assert adv and "--gpu-memory 12884901888B" in adv[0]["command"]


def test_cli_advise_unknown_gpu_is_an_input_error(run):
    r = run("advise", "meta-llama/Llama-3.2-1B", "--gpu", "rtx-9999", "--offline")
    assert r.exit_code == 2 and "unknown GPU 'rtx-9999'" in r.stderr


# --- `hubvram MODEL`: the fit matrix in the default output, options, --require-fit ----------------------
def test_show_prints_the_fit_matrix_after_the_summary(run):
    r = run("meta-llama/Meta-Llama-3-8B", "--offline")
    assert r.exit_code == 0
    out = r.stdout
    assert out.index("Parameters:") < out.index("GPU fit")
    matrix = out[out.index("GPU fit"):].splitlines()
    header = matrix[2]
    from hubvram.gpus import default_gpus

    assert all(f"{g.id} (" in header for g in default_gpus())
    rows = {ln.split()[0]: ln for ln in matrix[4:7]}
    assert set(rows) == {"full", "lora", "qlora"}
    assert "fits on 1" in rows["qlora"] and "× zero" in rows["full"]


def test_show_gpu_all_and_custom_memory(run):
    from hubvram.gpus import load_catalog

    js = json.loads(run("meta-llama/Llama-3.2-1B", "--offline", "--gpu", "all", "--gpu-memory", "6GiB",
                        "--method", "lora", "--format", "json").stdout)
    fit_list = js["models"][0]["estimates"][0]["fit"]
    assert len(fit_list) == len(load_catalog()) + 1 and fit_list[-1]["gpu"] == "custom-6gib"
    assert fit_list[-1]["gpu_memory_bytes"] == 6 * GIB
    t4 = next(f for f in fit_list if f["gpu"] == "t4")
    assert t4["precision_used"] == "fp16"


def test_show_json_fit_per_estimate(run):
    js = json.loads(run("meta-llama/Llama-3.1-405B", "--offline", "--gpu", "h100-80gb", "--gpus", "256",
                        "--format", "json").stdout)
    ests = {e["method"]: e for e in js["models"][0]["estimates"]}
    assert set(ests) == {"full", "lora", "qlora"}
    f = ests["full"]["fit"][0]
    assert {"gpu", "gpu_memory_bytes", "fits_on_one", "min_gpus", "strategy", "per_gpu_bytes"} <= set(f)
    assert f["fits_on_one"] is False and f["min_gpus"] >= 96 and f["strategy"] == "zero3"
    assert f["per_gpu_bytes"] <= f["usable_bytes"] and f["per_gpu"]["components"]
    capped = json.loads(run("meta-llama/Llama-3.1-405B", "--offline", "--gpu", "h100-80gb", "--method", "full",
                            "--format", "json").stdout)["models"][0]["estimates"][0]["fit"][0]
    assert capped["min_gpus"] is None and capped["strategy"] is None and capped["verdict"] == "does not fit"


def test_show_strategy_breakdown_and_host_ram(run):
    r = run("meta-llama/Llama-3.1-70B", "--offline", "--method", "full", "--strategy", "zero3", "--gpus", "16",
            "--nodes", "2", "--offload", "optimizer", "--gpu", "a100-80gb")
    assert r.exit_code == 0
    assert "Per GPU under 16 × zero3 (2 × 8) + offload optimizer" in r.stdout
    assert "host RAM for offload" in r.stdout and "per node (8 GPUs" in r.stdout
    js = json.loads(run("meta-llama/Llama-3.1-70B", "--offline", "--method", "full", "--strategy", "fsdp-hybrid",
                        "--gpus", "16", "--nodes", "2", "--format", "json").stdout)
    par = js["models"][0]["parallel"]
    assert par["strategy"] == "fsdp-hybrid" and par["gpus_per_node"] == 8
    weights = next(c for c in par["components"] if c["name"] == "weights")
    assert weights["divisor"] == 8  # hybrid shards within the node


def test_show_max_batch_and_seq(run):
    r = run("meta-llama/Meta-Llama-3-8B", "--offline", "--gpu", "rtx-4090", "--max-batch", "--max-seq-len",
            "--format", "json")
    inv = {d["method"]: d for d in json.loads(r.stdout)["models"][0]["inverse"]}
    assert inv["full"]["max_batch"] == 0 and inv["qlora"]["max_batch"] >= 1
    arch = load_model("meta-llama/Meta-Llama-3-8B", offline=True)
    assert inv["qlora"]["max_batch"] == max_batch(arch, Setup(method="qlora"), get_gpu("rtx-4090"))
    assert inv["lora"]["max_seq_len"] == max_seq_len(arch, Setup(method="lora"), get_gpu("rtx-4090"))
    t = run("meta-llama/Meta-Llama-3-8B", "--offline", "--gpu", "rtx-4090", "--max-batch")
    assert "Largest that fits on rtx-4090" in t.stdout
    bad = run("meta-llama/Meta-Llama-3-8B", "--offline", "--max-batch")
    assert bad.exit_code == 2 and "exactly one --gpu" in bad.stderr


def test_require_fit_exit_codes(run):
    no = run("meta-llama/Meta-Llama-3-8B", "--offline", "--method", "full", "--require-fit", "a10g")
    assert no.exit_code == 1 and "require-fit a10g (full, 1 GPU): FAILED" in no.stdout
    yes = run("meta-llama/Meta-Llama-3-8B", "--offline", "--method", "qlora", "--require-fit", "a10g")
    assert yes.exit_code == 0 and "OK (fits on 1)" in yes.stdout
    default = run("meta-llama/Meta-Llama-3-8B", "--offline", "--require-fit", "rtx-4090")  # default method: lora
    assert default.exit_code == 0 and "(lora, 1 GPU)" in default.stdout
    multi = run("meta-llama/Meta-Llama-3-8B", "--offline", "--method", "full", "--require-fit", "a10g", "--gpus", "4")
    assert multi.exit_code == 0
    size = run("meta-llama/Meta-Llama-3-8B", "--offline", "--method", "qlora", "--require-fit", "8GiB",
               "--format", "json")
    assert size.exit_code == 1 and json.loads(size.stdout)["models"][0]["require_fit"]["ok"] is False


def test_show_csv_and_markdown_carry_the_verdicts(run):
    rows = list(csv.DictReader(io.StringIO(run("meta-llama/Meta-Llama-3-8B", "--offline", "--gpu", "t4",
                                               "--format", "csv").stdout)))
    assert rows[0]["fit_qlora_t4"] == "fits on 1" and rows[0]["fit_full_t4"].endswith("zero3")
    md = run("meta-llama/Meta-Llama-3-8B", "--offline", "--format", "markdown").stdout
    assert "### GPU fit" in md and "| qlora" in md


def test_show_bad_plan_is_a_one_line_input_error(run):
    r = run("meta-llama/Meta-Llama-3-8B", "--offline", "--strategy", "ddp", "--gpus", "2", "--offload", "params")
    assert r.exit_code == 2 and r.stderr.startswith("hubvram: error: --offload needs a ZeRO or FSDP strategy")
