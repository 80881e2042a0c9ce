"""Training configurations run through the fake-tensor oracle (../shared/tools/simulate_peak.py).

Pure data, no torch: bench/run_oracle.py turns each entry into an oracle command line and writes the
result to fixtures/oracle/<name>.json.  Every entry in ORACLE_CONFIGS is a complete dict: `name`,
`model` (a Hub id whose config.json lies at ../shared/hub-snapshots/<model>/config.json), `note`
(what the entry exercises) and every oracle flag below, defaults filled in.

Flag meanings (the oracle's --help has the details):
  method        full | lora | qlora
  batch, seq    micro-batch size and sequence length (tokens per row)
  grad_ckpt     activation checkpointing of every decoder layer (use_reentrant=False)
  optimizer     adamw | sgd
  adam_impl     foreach (torch's CUDA default) | fused (HF Trainer default) | single
  sgd_momentum  0.0 = no momentum buffer
  dtype         bf16 | fp16 | fp32 | amp-bf16 (= fp32 params + bf16 autocast)
  autocast      none | bf16 | fp16
  attn          sdpa | eager
  lora_r        LoRA rank (alpha = 2r)
  lora_dropout  LoRA dropout probability
  lora_targets  comma list of module names.  The oracle splits the string on commas, so peft's
                "all-linear" shorthand cannot be passed; ALL_LINEAR spells out what it selects for
                Llama/Mistral/Qwen (every decoder Linear, lm_head excluded), PHI_ALL_LINEAR for phi-2.
  lora_same_dtype  LoRA adapters in the base dtype instead of peft's default fp32
  double_quant  QLoRA bnb_4bit_use_double_quant
  prepare_kbit  QLoRA peft.prepare_model_for_kbit_training (non-4-bit params cast to fp32)
  padding_mask  pass an attention_mask (the batch really has padding: materialized mask, no flash)
"""

from __future__ import annotations

ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
PHI_ALL_LINEAR = "q_proj,k_proj,v_proj,dense,fc1,fc2"
QV = "q_proj,v_proj"

DEFAULTS: dict = {
    "method": "full",
    "batch": 1,
    "seq": 2048,
    "grad_ckpt": False,
    "optimizer": "adamw",
    "adam_impl": "foreach",
    "sgd_momentum": 0.0,
    "dtype": "bf16",
    "autocast": "none",
    "attn": "sdpa",
    "lora_r": 16,
    "lora_dropout": 0.0,
    "lora_targets": ALL_LINEAR,
    "lora_same_dtype": False,
    "double_quant": False,
    "prepare_kbit": False,
    "padding_mask": False,
}

L1B = "meta-llama/Llama-3.2-1B"  # tied embeddings, GQA 32/8, head_dim 64, vocab 128256
Q05 = "Qwen/Qwen2.5-0.5B"  # tied embeddings, q/k/v biases, GQA 14/2, vocab 151936
Q7 = "Qwen/Qwen2.5-7B"  # q/k/v biases, untied
L8 = "meta-llama/Meta-Llama-3-8B"  # the model of shared/reference/simulation.md
M7 = "mistralai/Mistral-7B-v0.1"  # sliding window 4096, vocab 32000
Q3 = "Qwen/Qwen3-8B"  # q/k RMSNorm (qk-norm)
PHI2 = "microsoft/phi-2"  # LayerNorm + GELU, partial rotary 0.4, biases, parallel attn/MLP, resid dropout 0.1
L70 = "meta-llama/Llama-3.1-70B"


def _c(name: str, model: str, note: str, **flags) -> dict:
    unknown = set(flags) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{name}: unknown flags {sorted(unknown)}")
    return {"name": name, "model": model, "note": note, **DEFAULTS, **flags}


ORACLE_CONFIGS: list[dict] = [
    # ---- Llama-3.2-1B, full fine-tuning: optimizer, GC, precision, attention kernel -----------------------
    _c("l1b-full-foreach", L1B, "full, AdamW foreach (torch default): +2 B/param transient at step()"),
    _c("l1b-full-fused", L1B, "full, AdamW fused (HF Trainer default): no step() transient",
       adam_impl="fused"),
    _c("l1b-full-single", L1B, "full, AdamW single-tensor (foreach=False)", adam_impl="single"),
    _c("l1b-full-gc-foreach", L1B, "full + GC, AdamW foreach", grad_ckpt=True),
    _c("l1b-full-gc-fused", L1B, "full + GC, AdamW fused: peak moves to end of backward",
       grad_ckpt=True, adam_impl="fused"),
    _c("l1b-full-sgd", L1B, "full, SGD without momentum: no optimizer state", optimizer="sgd"),
    _c("l1b-full-sgdm", L1B, "full, SGD momentum 0.9: one state per param", optimizer="sgd",
       sgd_momentum=0.9),
    _c("l1b-full-eager", L1B, "full, eager attention: 6 B per attention score", attn="eager"),
    _c("l1b-full-amp-fused", L1B, "full, fp32 params + bf16 autocast, AdamW fused", dtype="amp-bf16",
       adam_impl="fused"),
    _c("l1b-full-fp32-fused", L1B, "full, pure fp32 params, no autocast, AdamW fused", dtype="fp32",
       adam_impl="fused"),
    _c("l1b-full-pad", L1B, "full, padded batch: materialized mask -> mem-efficient kernel + repeat_kv",
       padding_mask=True),
    _c("l1b-full-fused-s1024", L1B, "full fused, batch sweep base (b1 s1024)", adam_impl="fused", seq=1024),
    _c("l1b-full-fused-b2-s1024", L1B, "full fused, batch sweep b2 s1024", adam_impl="fused", batch=2,
       seq=1024),
    _c("l1b-full-fused-b4-s1024", L1B, "full fused, batch sweep b4 s1024", adam_impl="fused", batch=4,
       seq=1024),
    # ---- Llama-3.2-1B, LoRA r16 (peft default fp32 adapters) ------------------------------------------------
    _c("l1b-lora-s512", L1B, "LoRA r16 all-linear, seq sweep 512", method="lora", seq=512),
    _c("l1b-lora-s1024", L1B, "LoRA r16 all-linear, seq sweep 1024 (also batch sweep base)", method="lora",
       seq=1024),
    _c("l1b-lora-s2048", L1B, "LoRA r16 all-linear, seq sweep 2048", method="lora"),
    _c("l1b-lora-s4096", L1B, "LoRA r16 all-linear, seq sweep 4096", method="lora", seq=4096),
    _c("l1b-lora-b2-s1024", L1B, "LoRA, batch sweep b2 s1024", method="lora", batch=2, seq=1024),
    _c("l1b-lora-b4-s1024", L1B, "LoRA, batch sweep b4 s1024", method="lora", batch=4, seq=1024),
    _c("l1b-lora-bf16ad", L1B, "LoRA with bf16 adapters (lora_same_dtype)", method="lora",
       lora_same_dtype=True),
    _c("l1b-lora-drop05", L1B, "LoRA with lora_dropout 0.05 (fused dropout: 1-byte masks)", method="lora",
       lora_dropout=0.05),
    _c("l1b-lora-pad", L1B, "LoRA, padded batch (materialized mask)", method="lora", padding_mask=True),
    _c("l1b-lora-qv", L1B, "LoRA on q_proj,v_proj only", method="lora", lora_targets=QV),
    _c("l1b-lora-r64", L1B, "LoRA rank 64", method="lora", lora_r=64),
    _c("l1b-lora-gc", L1B, "LoRA + GC", method="lora", grad_ckpt=True),
    _c("l1b-lora-gc-s4096", L1B, "LoRA + GC at seq 4096", method="lora", grad_ckpt=True, seq=4096),
    _c("l1b-lora-eager", L1B, "LoRA, eager attention", method="lora", attn="eager"),
    _c("l1b-lora-autocast", L1B, "LoRA, bf16 base + bf16 autocast (HF Trainer bf16=True)", method="lora",
       autocast="bf16"),
    _c("l1b-lora-qv-bf16ad-gc", L1B, "LoRA q,v + bf16 adapters + GC (lightest LoRA)", method="lora",
       lora_targets=QV, lora_same_dtype=True, grad_ckpt=True),
    # ---- Llama-3.2-1B, QLoRA nf4 r16 ---------------------------------------------------------------------
    _c("l1b-qlora", L1B, "QLoRA, no GC, seq 2048 (>1536 tokens: dequantized-weight transient)",
       method="qlora"),
    _c("l1b-qlora-s1024", L1B, "QLoRA, no GC, seq 1024 (<=1536 tokens: no dequant transient)",
       method="qlora", seq=1024),
    _c("l1b-qlora-gc", L1B, "QLoRA + GC", method="qlora", grad_ckpt=True),
    _c("l1b-qlora-gc-dq", L1B, "QLoRA + GC + double quant", method="qlora", grad_ckpt=True,
       double_quant=True),
    _c("l1b-qlora-gc-kbit-ac", L1B, "QLoRA + GC + prepare_kbit + bf16 autocast (no double quant)",
       method="qlora", grad_ckpt=True, prepare_kbit=True, autocast="bf16"),
    _c("l1b-qlora-gc-dq-kbit-ac", L1B, "QLoRA + GC + double quant + prepare_kbit + bf16 autocast",
       method="qlora", grad_ckpt=True, double_quant=True, prepare_kbit=True, autocast="bf16"),
    _c("l1b-qlora-gc-b4-s1024", L1B, "QLoRA + GC, b4 s1024", method="qlora", grad_ckpt=True, batch=4,
       seq=1024),
    # ---- Qwen2.5-0.5B: tied embeddings, biases, big vocab vs small hidden ------------------------------
    _c("q05-full-foreach", Q05, "full, AdamW foreach"),
    _c("q05-full-gc-fused", Q05, "full + GC, AdamW fused", grad_ckpt=True, adam_impl="fused"),
    _c("q05-full-sgd-b2-s4096", Q05, "full, SGD no momentum, b2 s4096 (logits-dominated)", optimizer="sgd",
       batch=2, seq=4096),
    _c("q05-lora", Q05, "LoRA r16 all-linear", method="lora"),
    _c("q05-lora-gc", Q05, "LoRA + GC", method="lora", grad_ckpt=True),
    _c("q05-qlora-gc", Q05, "QLoRA + GC", method="qlora", grad_ckpt=True),
    # ---- 7-8B models ----------------------------------------------------------------------------------------
    _c("l8-full-foreach", L8, "Llama-3-8B full foreach (simulation.md: 74.79 GiB)"),
    _c("l8-full-fused", L8, "Llama-3-8B full fused (simulation.md: 60.13 GiB)", adam_impl="fused"),
    _c("l8-lora", L8, "Llama-3-8B LoRA r16 (simulation.md: 36.40 GiB)", method="lora"),
    _c("l8-lora-gc", L8, "Llama-3-8B LoRA + GC (simulation.md: 18.93 GiB)", method="lora", grad_ckpt=True),
    _c("l8-qlora-gc", L8, "Llama-3-8B QLoRA + GC (simulation.md: 9.58 GiB)", method="qlora", grad_ckpt=True),
    _c("m7-lora-gc", M7, "Mistral-7B LoRA + GC (simulation.md: 15.28 GiB)", method="lora", grad_ckpt=True),
    _c("m7-full-gc-fused", M7, "Mistral-7B full + GC, AdamW fused", grad_ckpt=True, adam_impl="fused"),
    _c("q7-lora-gc", Q7, "Qwen2.5-7B LoRA + GC (biases)", method="lora", grad_ckpt=True),
    _c("q7-qlora-gc", Q7, "Qwen2.5-7B QLoRA + GC", method="qlora", grad_ckpt=True),
    _c("q7-full-gc-fused", Q7, "Qwen2.5-7B full + GC, AdamW fused", grad_ckpt=True, adam_impl="fused"),
    _c("q3-lora-gc", Q3, "Qwen3-8B LoRA + GC (qk-norm)", method="lora", grad_ckpt=True),
    _c("q3-full-fused", Q3, "Qwen3-8B full, AdamW fused (qk-norm activations)", adam_impl="fused"),
    _c("q3-qlora-gc-dq", Q3, "Qwen3-8B QLoRA + GC + double quant", method="qlora", grad_ckpt=True,
       double_quant=True),
    # ---- phi-2: LayerNorm + GELU, partial rotary, biases, resid dropout 0.1 ---------------------------
    _c("phi2-full-fused", PHI2, "phi-2 full, AdamW fused", adam_impl="fused"),
    _c("phi2-lora", PHI2, "phi-2 LoRA r16 on all linear layers", method="lora", lora_targets=PHI_ALL_LINEAR),
    _c("phi2-lora-gc", PHI2, "phi-2 LoRA + GC", method="lora", lora_targets=PHI_ALL_LINEAR, grad_ckpt=True),
    # ---- 70B -------------------------------------------------------------------------------------------------
    _c("l70-qlora-gc", L70, "Llama-3.1-70B QLoRA + GC (simulation.md, Llama-3-70B: 47.65 GiB)",
       method="qlora", grad_ckpt=True),
]

_names = [c["name"] for c in ORACLE_CONFIGS]
assert len(_names) == len(set(_names)), "duplicate config names"
