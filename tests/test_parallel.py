"""Per-GPU memory under DDP / ZeRO / FSDP / offload, pinned to hand-computed bytes."""

from __future__ import annotations

import dataclasses

import pytest

from hubvram import load_model, snapshot
from hubvram.architecture import describe
from hubvram.errors import EXIT_INPUT
from hubvram.inventory import tensors_from_config
from hubvram.parallel import (
    NF4_DQ_BYTES, ModelLayout, Plan, PlanError, category, ddp_bucket_bytes, deepspeed_zero2_model_states,
    deepspeed_zero3_model_states, fsdp_unsharded_bytes, host_ram_bytes, model_layout, per_gpu, sharded,
    zero3_gather_bytes, zero_paper_model_states,
)
from standin import Comp, ToySetup, deepspeed_est, make_est, zero_paper_est

P = 1_000_000
STATES = {"frozen_weights", "trainable_weights", "master_weights", "gradients", "optimizer_states"}


def states(pg) -> int:
    return sum(p.bytes for p in pg.parts if p.category in STATES)


def host(pg) -> int:
    return sum(p.host_bytes for p in pg.parts)


LAYOUT = ModelLayout(total_params=P, largest_module="embed", largest_module_params=50_000,
                     largest_module_bytes=100_000, largest_layer="layers.0", largest_layer_params=30_000,
                     largest_layer_bytes=60_000, root_params=100_000, root_bytes=200_000, trains_base=True)


@pytest.fixture(scope="module")
def llama8b():
    return load_model("meta-llama/Meta-Llama-3-8B", offline=True)


# --- the formulas by themselves ----------------------------------------------------------------------
def test_zero_paper_formulas_by_hand():
    # ZeRO §5 / Fig. 1 with Ψ = 7.5B, N = 64, K = 12: 120 GB, 31.4 GB, 16.6 GB, 1.88 GB
    psi, n = 7_500_000_000, 64
    assert zero_paper_model_states(psi, n, 0) == 120_000_000_000
    assert zero_paper_model_states(psi, n, 1) == 30_000_000_000 + 1_406_250_000
    assert zero_paper_model_states(psi, n, 2) == 15_000_000_000 + 1_640_625_000
    assert zero_paper_model_states(psi, n, 3) == 1_875_000_000
    with pytest.raises(ValueError):
        zero_paper_model_states(psi, n, 4)


def test_deepspeed_estimators_by_hand():
    # ZeRO-2: GPU 2P + 18P/N, CPU 4P·gpn·1.5; offload: GPU 2P, CPU P·max(4N, 16)·1.5
    assert deepspeed_zero2_model_states(10**9, 8, 1) == (4_250_000_000, 48_000_000_000)
    assert deepspeed_zero2_model_states(10**9, 8, 1, offload_optimizer=True) == (2_000_000_000, 48_000_000_000)
    assert deepspeed_zero2_model_states(10**9, 2, 1, offload_optimizer=True) == (2_000_000_000, 24_000_000_000)
    # ZeRO-3 (ℓ = 1e8, 2 nodes × 8): 4ℓ + 18P/N | 4ℓ + 2P/N | 4ℓ; CPU 4ℓ·gpn·f | 16P/n·f | 18P/n·f
    assert deepspeed_zero3_model_states(10**9, 10**8, 8, 2) == (1_525_000_000, 4_800_000_000)
    assert deepspeed_zero3_model_states(10**9, 10**8, 8, 2, offload_optimizer=True) == (525_000_000, 12_000_000_000)
    assert deepspeed_zero3_model_states(10**9, 10**8, 8, 2, offload_optimizer=True, offload_params=True) == (
        400_000_000, 13_500_000_000)
    assert deepspeed_zero3_model_states(10**9, 10**8, 8, 2, zero_init=False) == (1_525_000_000, 48_000_000_000)


def test_small_formulas():
    assert zero3_gather_bytes(1000) == 2000
    assert fsdp_unsharded_bytes(10, 3, 5, 1) == 10 + 6 + 5 + 1
    assert ddp_bucket_bytes(123) == 123
    assert sharded(10, 3) == 4 and sharded(9, 3) == 3
    assert host_ram_bytes(100, 8) == 1200


# --- component-wise sharding reproduces the paper --------------------------------------------------
@pytest.mark.parametrize("strategy,stage", [("ddp", 0), ("zero1", 1), ("zero2", 2), ("zero3", 3)])
def test_stages_match_zero_paper_exactly(strategy, stage):
    est = zero_paper_est(P)
    pg = per_gpu(est, Plan(strategy, 4), None if stage < 3 else LAYOUT)
    expected = int(zero_paper_model_states(P, 4, stage))
    assert states(pg) == expected
    # ZeRO-1: 4P + 12P/4 = 7,000,000; ZeRO-2: 2P + 14P/4 = 5,500,000; ZeRO-3: 16P/4 = 4,000,000
    assert expected == {0: 16_000_000, 1: 7_000_000, 2: 5_500_000, 3: 4_000_000}[stage]


def test_peak_adds_activations_gather_and_ddp_buckets():
    est = zero_paper_est(P, act=1_000)
    single = per_gpu(est, Plan())
    assert single.peak_allocated_bytes == est.peak_allocated_bytes == 16 * P + 1_000
    ddp = per_gpu(est, Plan("ddp", 4))
    assert ddp.peak_allocated_bytes == 16 * P + 1_000 + 2 * P  # + one gradient-sized bucket set
    assert per_gpu(est, Plan("ddp", 1)).peak_allocated_bytes == single.peak_allocated_bytes
    z3 = per_gpu(est, Plan("zero3", 4), LAYOUT)
    assert z3.peak_phase == "backward"
    assert z3.peak_allocated_bytes == 4 * P + 1_000 + 2 * 100_000  # activations are not divided
    fsdp = per_gpu(est, Plan("fsdp", 4), LAYOUT)
    # root 200,000 + 2 × layer 60,000 + grads (root 100,000 + layer 30,000 params × 2 B)
    assert fsdp.peak_allocated_bytes == 4 * P + 1_000 + 200_000 + 120_000 + 260_000


def test_sharding_rounds_each_component_up():
    pg = per_gpu(zero_paper_est(P), Plan("zero2", 3))
    assert states(pg) == 2 * P + 666_667 + 1_333_334 + 2_666_667


def test_deepspeed_conventions_reproduce_the_estimator_gpu_terms():
    est = deepspeed_est(P)
    n = 8
    gpu2, _ = deepspeed_zero2_model_states(P, n)
    assert states(per_gpu(est, Plan("zero2", n))) == gpu2  # 2P + 18P/N
    gpu2o, _ = deepspeed_zero2_model_states(P, n, offload_optimizer=True)
    assert states(per_gpu(est, Plan("zero2", n, offload="optimizer"))) == gpu2o  # 2P
    layout = ModelLayout(P, "m", 50_000, 100_000, "l", 1, 2, 0, 0, trains_base=True)
    z3 = per_gpu(est, Plan("zero3", n, offload="optimizer"), layout)
    assert z3.peak_allocated_bytes == deepspeed_zero3_model_states(P, 50_000, n, offload_optimizer=True)[0]
    z3p = per_gpu(est, Plan("zero3", n, offload="params"), layout)
    assert z3p.peak_allocated_bytes == deepspeed_zero3_model_states(P, 50_000, n, offload_optimizer=True,
                                                                    offload_params=True)[0]  # 4ℓ
    # no offload: we shard all 20 B/param; DeepSpeed's estimator charges 18 (it leaves out one 16-bit copy)
    z3n = per_gpu(est, Plan("zero3", n), layout)
    assert z3n.peak_allocated_bytes - deepspeed_zero3_model_states(P, 50_000, n)[0] == 2 * P // n


def test_offload_host_ram():
    est = deepspeed_est(P)
    pg = per_gpu(est, Plan("zero3", 16, nodes=2, offload="params"), LAYOUT)
    assert host(pg) == 20 * P // 16
    assert pg.host_bytes_per_node == int(20 * P // 16 * 8 * 1.5)
    assert per_gpu(est, Plan("zero2", 4)).host_bytes_per_node == 0
    # ZeRO-1 + optimizer offload: gradients stay on the GPU (they are not partitioned before stage 2)
    z1 = per_gpu(est, Plan("zero1", 4, offload="optimizer"))
    assert {p.category for p in z1.parts if p.host_bytes} == {"master_weights", "optimizer_states"}


def test_hybrid_shards_within_a_node():
    est = zero_paper_est(P)
    hybrid = per_gpu(est, Plan("fsdp-hybrid", 8, nodes=2), LAYOUT)
    full4 = per_gpu(est, Plan("fsdp", 4), LAYOUT)
    assert states(hybrid) == states(full4) == 4 * P
    assert Plan("fsdp-hybrid", 8, nodes=2).shard_group == 4
    assert "2 × 4" in Plan("fsdp-hybrid", 8, nodes=2).label


def test_lora_base_replicated_under_ddp_and_zero2_sharded_under_zero3_and_fsdp():
    est = make_est([Comp("frozen base weights", 16 * P), Comp("LoRA adapter weights", 4_000),
                    Comp("LoRA gradients", 4_000, ("backward", "step")), Comp("optimizer states", 8_000),
                    Comp("activations", 5_000, ("forward", "backward"))], setup=ToySetup(method="lora"))
    base = lambda pg: sum(p.bytes for p in pg.parts if p.category == "frozen_weights")  # noqa: E731
    assert base(per_gpu(est, Plan("ddp", 4))) == 16 * P
    assert base(per_gpu(est, Plan("zero2", 4))) == 16 * P
    assert base(per_gpu(est, Plan("zero3", 4), LAYOUT)) == 4 * P
    assert base(per_gpu(est, Plan("fsdp", 4), LAYOUT)) == 4 * P


def test_reserved_and_device_follow_the_estimate():
    est = make_est([Comp("weights", 1_000_000), Comp("activations", 1_000_000, ("forward",))],
                   reserved_ratio=1.1, context=500)
    pg = per_gpu(est, Plan("zero3", 2), None)
    assert pg.peak_allocated_bytes == 1_500_000
    assert pg.reserved_bytes == 1_650_000 and pg.device_bytes == 1_650_500
    assert pg.notes  # no layout: the gather buffer is missing and it says so


def test_categories_from_names():
    cases = {
        "frozen base weights (NF4)": "frozen_weights", "LoRA adapters (fp32)": "trainable_weights",
        "fp32 master weights": "master_weights", "gradients (bf16)": "gradients",
        "AdamW states": "optimizer_states", "AdamW foreach transient": "optimizer_transients",
        "activations (checkpointed)": "activations", "logits + loss (fp32)": "logits",
        "CUDA context": "overhead",
    }
    for name, cat in cases.items():
        assert category(Comp(name, 1), "lora") == cat, name
    assert category(Comp("weights (bf16)", 1), "full") == "trainable_weights"
    assert category(Comp("weights (bf16)", 1), "lora") == "frozen_weights"

    class Own:
        name, bytes, category = "x", 1, "activations"
    assert category(Own()) == "activations"


@pytest.mark.parametrize("kw", [
    dict(strategy="nope"), dict(strategy="single", gpus=2), dict(strategy="zero3", gpus=0),
    dict(strategy="zero3", gpus=6, nodes=4), dict(strategy="ddp", gpus=2, offload="optimizer"),
    dict(strategy="zero2", gpus=2, offload="params"), dict(strategy="fsdp", gpus=2, offload="optimizer"),
    dict(strategy="zero3", gpus=2, offload="disk"),
])
def test_invalid_plans_are_input_errors(kw):
    with pytest.raises(PlanError) as e:
        Plan(**kw)
    assert e.value.exit_code == EXIT_INPUT


# --- the model layout from real tensors ----------------------------------------------------------------
def test_layout_llama3_8b(llama8b):
    lay = model_layout(llama8b, ToySetup(method="full"))
    assert lay.total_params == 8_030_261_248
    # one decoder layer: q,o 4096² + k,v 1024×4096 + 3 × 14336×4096 + 2 norms
    assert lay.largest_layer_params == 218_112_000
    assert lay.root_params == 2 * 128_256 * 4096 + 4096
    assert lay.root_params + 32 * lay.largest_layer_params == lay.total_params
    assert lay.largest_module_params == 128_256 * 4096  # embed_tokens (= lm_head): DeepSpeed's ℓ
    assert lay.largest_module_bytes == 2 * 128_256 * 4096
    q = model_layout(llama8b, ToySetup(method="qlora"))
    linears = 218_112_000 - 8192
    assert q.largest_layer_bytes == -(-(linears * NF4_DQ_BYTES + 8192 * 2) // 1)
    assert not q.trains_base and q.layer_grad_bytes == 0


def test_layout_moe_experts_are_one_module():
    arch = load_model("Qwen/Qwen3-30B-A3B", offline=True)
    lay = model_layout(arch, ToySetup())
    # 128 experts × 3 × (768 × 2048) per layer, fused into one `experts` module in transformers 5.x
    assert lay.largest_module.endswith(".mlp.experts")
    assert lay.largest_module_params == 128 * 3 * 768 * 2048


@pytest.mark.parametrize("model_id", ["mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen3-30B-A3B"])
def test_layout_of_folded_experts_is_the_per_expert_layout(model_id):
    """Routed experts folded into one ``experts.*.`` entry per layer and module (metadata.group_experts)
    give the layout of the per-expert tensors: the same experts module, layer and root."""
    meta = snapshot.load(model_id)
    per_expert, _ = tensors_from_config(meta.config)
    folded = describe(meta)
    unfolded = describe(dataclasses.replace(meta, tensors=per_expert))
    assert any(".experts.*." in t.name for t in folded.tensors)
    assert not any(".experts.*." in t.name for t in unfolded.tensors)
    for method in ("full", "qlora"):
        lay = model_layout(folded, ToySetup(method=method))
        assert lay == model_layout(unfolded, ToySetup(method=method))
        assert lay.largest_module.endswith(".experts")


def test_every_memory_component_name_has_a_category():
    """A new term in hubvram.memory must be given a category here before it can be sharded."""
    from hubvram.memory import Setup, estimate
    from hubvram.parallel import MEMORY_CATEGORIES

    names = set()
    for model in ("meta-llama/Meta-Llama-3-8B", "Qwen/Qwen3-30B-A3B", "microsoft/phi-2", "meta-llama/Llama-3.2-1B"):
        arch = load_model(model, offline=True)
        for method in ("full", "lora", "qlora"):
            for opt in ("adamw", "adamw-foreach", "paged-adamw-8bit", "adafactor"):
                for precision, gc, att in (("bf16", True, "sdpa"), ("amp-bf16", False, "eager")):
                    est = estimate(arch, Setup(method=method, optimizer=opt, precision=precision,
                                               grad_checkpointing=gc, attention=att))
                    names |= {c.name for c in est.components}
    unknown = sorted(n for n in names if n not in MEMORY_CATEGORIES and n.split(".", 1)[0] not in MEMORY_CATEGORIES)
    assert not unknown, f"give these hubvram.memory components a category in parallel.MEMORY_CATEGORIES: {unknown}"


def test_deepspeed_offload_host_ram_matches_the_estimator():
    # pure-bf16 recipe on the GPU side (2 + 2 + 4 B/param); DeepSpeed's CPU Adam still holds 16 B/param
    est = make_est([Comp("weights (bf16)", 2 * P), Comp("gradients", 2 * P, ("backward", "step")),
                    Comp("optimizer states", 4 * P)], setup=ToySetup(method="full"), trainable=P)
    layout = ModelLayout(P, "m", 50_000, 100_000, "l", 1, 2, 0, 0, trains_base=True)
    pg = per_gpu(est, Plan("zero3", 16, nodes=2, offload="optimizer"), layout)
    assert pg.host_bytes_per_node == deepspeed_zero3_model_states(P, 50_000, 8, 2, offload_optimizer=True)[1]
    pg = per_gpu(est, Plan("zero3", 16, nodes=2, offload="params"), layout)
    assert pg.host_bytes_per_node == deepspeed_zero3_model_states(P, 50_000, 8, 2, offload_optimizer=True,
                                                                  offload_params=True)[1]
    # FSDP's CPU offload keeps the states in their own dtype: the components decide (2 + 2 + 4 = 8 B/param)
    fs = per_gpu(est, Plan("fsdp", 16, nodes=2, offload="params"), layout)
    assert fs.host_bytes_per_node == int(-(-2 * P // 16) * 2 + -(-4 * P // 16)) * 8 * 3 // 2


def test_deepspeed_runs_its_own_mixed_precision(llama8b):
    from hubvram.memory import Setup, estimate
    from hubvram.parallel import deepspeed_mixed_precision

    P = llama8b.counts.total
    persistent = ("weights", "optimizer_states", "gradients", "master_weights (DeepSpeed fp32)",
                  "gradients.fp32 (DeepSpeed partition)")
    for precision in ("bf16", "amp-bf16"):
        est = estimate(llama8b, Setup(method="full", precision=precision))
        ds = {c.name: c.bytes for c in deepspeed_mixed_precision(est)}
        # 2 (16-bit weights) + 2 (16-bit grads) + 8 (fp32 Adam) + 4 (fp32 master) + 4 (fp32 grads) = 20 B/param
        assert abs(sum(ds[n] for n in persistent) - 20 * P) < 512 * 400, precision
        assert not any(n.startswith("autocast_cache") for n in ds) and "optimizer_step" not in ds
    lora = estimate(llama8b, Setup(method="lora"))
    assert deepspeed_mixed_precision(lora) == tuple(lora.components)
    fp32 = estimate(llama8b, Setup(method="full", precision="fp32"))
    assert deepspeed_mixed_precision(fp32) == tuple(fp32.components)
    # ZeRO-3 divides all 20 B/param; FSDP keeps the recipe's own 8 B/param
    est = estimate(llama8b, Setup(method="full"))
    layout = model_layout(llama8b, est.setup)
    z3 = per_gpu(est, Plan("zero3", 8), layout)
    fs = per_gpu(est, Plan("fsdp", 8), layout)
    z3_states = sum(p.bytes for p in z3.parts if p.name in persistent)
    fs_states = sum(p.bytes for p in fs.parts if p.name in persistent)
    assert abs(z3_states - 20 * P / 8) < 512 * 400 and abs(fs_states - 8 * P / 8) < 512 * 400


def test_offload_plans_must_fit_the_host_ram():
    from hubvram.fit import fit_plan
    from hubvram.gpus import custom_gpu

    est = deepspeed_est(P)
    layout = ModelLayout(P, "m", 1000, 2000, "l", 1, 2, 0, 0, trains_base=True)
    gpu = custom_gpu("2500KB")  # 20 MB of states on one GPU: only an offload to the host fits
    roomy = fit_plan(est, layout, gpu, max_gpus=1, host_ram=None)
    # ZeRO-Offload keeps the 2 MB of 16-bit weights; 18 MB of states × 1.5 buffers go to the host
    assert roomy.cell == "1 × zero2 + offload optimizer" and roomy.per_gpu.host_bytes_per_node == 27_000_000
    tight = fit_plan(est, layout, gpu, max_gpus=1, host_ram=20_000_000)
    assert tight.min_gpus is None and tight.cell == "does not fit"
