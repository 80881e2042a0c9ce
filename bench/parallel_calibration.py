"""Per-GPU estimates under DDP / FSDP against published multi-GPU measurements (not run by CI).

Rows come from shared/calibration/measurements-calibration.csv (row ids kept); each names the statistic it
measured, and the estimate prints the matching figure (allocated or reserved). Run:

    python bench/parallel_calibration.py
"""

from __future__ import annotations

from hubvram import load_model
from hubvram.memory import Setup, estimate
from hubvram.parallel import Plan, model_layout, per_gpu

GIB = 1 << 30
FMS = dict(optimizer="adamw-foreach", seq_len=4096, transformers_major=4)        # fms-hf-tuning, HF Trainer 4.48
FSDP_QLORA = dict(optimizer="adamw-foreach", seq_len=2048, lora_rank=64, lora_dtype="bf16")  # Answer.AI train.py

#: (row, model, setup, plan, statistic, measured GiB, source)
ROWS = [
    ("R149", "mistralai/Mistral-7B-v0.1", dict(method="full", precision="bf16", batch_size=2, **FMS),
     Plan("fsdp", 2), "allocated", 33.74, "fms-acceleration, A100 80GB"),
    ("R163", "mistralai/Mistral-7B-v0.1", dict(method="lora", precision="bf16", batch_size=4,
                                               lora_targets="q_proj,k_proj,v_proj,o_proj", **FMS),
     Plan("fsdp", 2), "allocated", 20.45, "fms-acceleration, A100 80GB"),
    ("R181", "meta-llama/Llama-2-70b-hf", dict(method="qlora", precision="amp-bf16", batch_size=2,
                                               lora_targets="q_proj,k_proj,v_proj,o_proj", **FMS),
     Plan("fsdp", 2), "allocated", 43.48, "fms-acceleration, A100 80GB"),
    ("R201", "meta-llama/Llama-2-7b-hf", dict(method="qlora", precision="bf16", batch_size=1, prepare_kbit=False,
                                              **FSDP_QLORA),
     Plan("fsdp", 2), "reserved", 5.21e9 / GIB, "Answer.AI fsdp_qlora, RTX 3090"),
    ("R203", "meta-llama/Llama-2-7b-hf", dict(method="lora", precision="bf16", batch_size=1, **FSDP_QLORA),
     Plan("fsdp", 2), "reserved", 10.22e9 / GIB, "Answer.AI fsdp_qlora, RTX 3090"),
    ("R209", "meta-llama/Llama-2-7b-hf", dict(method="lora", precision="bf16", batch_size=4, **FSDP_QLORA),
     Plan("ddp", 2), "reserved", 22.04e9 / GIB, "Answer.AI fsdp_qlora (NO_SHARD), RTX 3090"),
    ("R212", "meta-llama/Llama-2-70b-hf", dict(method="qlora", precision="bf16", batch_size=2, prepare_kbit=False,
                                               **FSDP_QLORA),
     Plan("fsdp", 2, offload="params"), "reserved", 14.92e9 / GIB, "Answer.AI fsdp_qlora + CPU offload, RTX 3090"),
    ("R121", "meta-llama/Llama-2-7b-hf", dict(method="full", precision="bf16", batch_size=4, seq_len=2048,
                                              optimizer="adamw-foreach"),
     Plan("fsdp", 4), "reserved?", 22.44e9 / GIB, "torchtune PR #955, RTX 4090 (statistic not stated)"),
]


def main() -> None:
    print(f"{'row':5s} {'model':28s} {'plan':26s} {'stat':10s} {'estimate':>9s} {'measured':>9s} {'error':>7s}")
    for row, model, kw, plan, stat, measured, source in ROWS:
        arch = load_model(model, offline=True)
        setup = Setup(**kw)
        pg = per_gpu(estimate(arch, setup), plan, model_layout(arch, setup))
        got = (pg.peak_allocated_bytes if stat == "allocated" else pg.reserved_bytes) / GIB
        print(f"{row:5s} {model:28s} {plan.label:26s} {stat:10s} {got:9.2f} {measured:9.2f} "
              f"{100 * (got - measured) / measured:+6.1f}%  {source}")


if __name__ == "__main__":
    main()
