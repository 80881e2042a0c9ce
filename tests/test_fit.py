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
