"""The training setup an estimate assumes: every knob, resolved and validated. Pure.

The defaults are a deliberate "common modern recipe" for fine-tuning with Hugging Face transformers +
PEFT + bitsandbytes on one GPU, chosen so that a bare ``hubvram MODEL`` answers the question most people
ask ("can I LoRA this on my card?") rather than the worst case:

=====================  ===========  ====================================================================
knob                   default      why
=====================  ===========  ====================================================================
method                 ``lora``     the most common way to fine-tune a 7-70B model on one GPU today
batch_size             1            micro-batch per GPU; larger effective batches come from gradient
                                    accumulation, which does not change the peak
seq_len                2048         a typical SFT packing / truncation length (Llama-2 context, TRL's
                                    historical ``max_seq_length`` ballpark)
grad_checkpointing     True         TRL's SFTTrainer, Axolotl and PEFT's ``prepare_model_for_kbit_training``
                                    all turn it on; without it activations dominate at 2k tokens
precision              ``auto``     full / LoRA: ``bf16``, weights loaded in bf16 (``torch_dtype=bfloat16``), no
                                    fp32 master copy, the "pure bf16" recipe (8 B/param for full);
                                    QLoRA: ``amp-bf16``: ``prepare_model_for_kbit_training`` casts every
                                    non-quantized parameter to fp32, and the recipe trains with HF Trainer
                                    ``bf16=True`` (autocast), without which attention would run in fp32
optimizer              ``adamw``    torch AdamW, fused: HF Trainer's default ``adamw_torch_fused`` (torch >= 2.8)
lora_rank              16           PEFT examples / TRL docs; the QLoRA paper used 64 for 7B+, 16 is the
                                    common modern default
lora_targets           all-linear   PEFT's ``"all-linear"`` (every Linear except the output layer), the
                                    QLoRA-paper finding that all layers must be adapted
lora_dropout           0.05         the value most recipes use (PEFT's own default is 0.0)
lora_dtype             ``fp32``     PEFT's default ``autocast_adapter_dtype=True`` keeps adapters in fp32
double_quant           True         ``bnb_4bit_use_double_quant=True`` in the QLoRA recipe
prepare_kbit           True         ``peft.prepare_model_for_kbit_training`` is in every QLoRA tutorial
attention              ``sdpa``     transformers' default attention implementation
padding                False        packed / unpadded batches (TRL packing, or ``padding_free``);
                                    a padded batch changes the attention kernel (see activations.py)
transformers_major     5            the current major version: MoE experts are fused 3-D parameters
=====================  ===========  ====================================================================

``precision``: ``bf16`` / ``fp16`` = the model's weights in that half dtype, no autocast (pure half);
``fp32`` = fp32 weights, no autocast; ``amp-bf16`` / ``amp-fp16`` = autocast on. For full fine-tuning amp
means fp32 weights (the master copy) with autocast, as HF Trainer does for ``bf16=True`` on an fp32 load.
For LoRA/QLoRA amp means the frozen base stays in the half dtype and autocast is on (HF Trainer
``bf16=True`` on a bf16 load).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import InputError

METHODS = ("full", "lora", "qlora")
PRECISIONS = ("bf16", "fp16", "fp32", "amp-bf16", "amp-fp16")
OPTIMIZERS = ("adamw", "adamw-foreach", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "adafactor", "sgd",
              "sgd-momentum")
ATTENTIONS = ("sdpa", "flash", "eager")
LORA_DTYPES = ("fp32", "bf16")

OPTIMIZER_LABELS = {
    "adamw": "AdamW (fused)", "adamw-foreach": "AdamW (foreach)", "adamw-8bit": "AdamW 8-bit (bnb)",
    "paged-adamw": "paged AdamW (bnb, 32-bit)", "paged-adamw-8bit": "paged AdamW 8-bit (bnb)",
    "adafactor": "Adafactor", "sgd": "SGD", "sgd-momentum": "SGD with momentum",
}

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
MAX_TOKENS = 1 << 34  # a sanity bound on batch x sequence


@dataclass(frozen=True)
class Setup:
    """One training configuration. Construct with keywords; every field is validated.

    ``lora_*`` knobs are ignored for ``method="full"``, ``double_quant`` and ``prepare_kbit`` apply to
    ``qlora`` only; they are kept (resolved) so that every output states the full setup.
    """

    method: str = "lora"
    batch_size: int = 1
    seq_len: int = 2048
    grad_checkpointing: bool = True
    precision: str = "auto"   # resolved in __post_init__: amp-bf16 for qlora, bf16 otherwise
    optimizer: str = "adamw"
    lora_rank: int = 16
    lora_targets: str | tuple[str, ...] = "all-linear"
    lora_dropout: float = 0.05
    lora_dtype: str = "fp32"
    double_quant: bool = True
    prepare_kbit: bool = True
    attention: str = "sdpa"
    padding: bool = False
    transformers_major: int = 5
    #: True when ``precision`` was "auto" (resolved per method); :meth:`replace` then re-resolves it.
    precision_auto: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def bad(msg: str, hint: str | None = None) -> InputError:
            return InputError(msg, hint=hint)

        _choice("method", self.method, METHODS)
        if self.precision == "auto":
            object.__setattr__(self, "precision", "amp-bf16" if self.method == "qlora" else "bf16")
            object.__setattr__(self, "precision_auto", True)
        _choice("precision", self.precision, PRECISIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("lora_dtype", self.lora_dtype, LORA_DTYPES)
        for name in ("batch_size", "seq_len", "lora_rank", "transformers_major"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(f"{name} must be an integer, got {v!r}")
        if self.batch_size < 1:
            raise bad(f"batch_size must be at least 1, got {self.batch_size}")
        if self.seq_len < 1:
            raise bad(f"seq_len must be at least 1, got {self.seq_len}")
        if self.batch_size * self.seq_len > MAX_TOKENS:
            raise bad(f"batch_size x seq_len = {self.batch_size * self.seq_len} tokens is beyond any real run")
        if self.lora_rank < 1:
            raise bad(f"lora_rank must be at least 1, got {self.lora_rank}")
        if self.lora_rank > 65536:
            raise bad(f"lora_rank {self.lora_rank} is beyond any real adapter")
        if self.transformers_major not in (4, 5):
            raise bad(f"transformers_major must be 4 or 5, got {self.transformers_major}")
        for name in ("grad_checkpointing", "double_quant", "prepare_kbit", "padding"):
            if not isinstance(getattr(self, name), bool):
                raise bad(f"{name} must be true or false, got {getattr(self, name)!r}")
        p = self.lora_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
            raise bad(f"lora_dropout must be a probability in [0, 1), got {p!r}")
        object.__setattr__(self, "lora_dropout", float(p))
        object.__setattr__(self, "lora_targets", _targets(self.lora_targets))
        if self.method == "qlora" and self.precision == "fp32":
            raise bad("qlora with precision fp32: bitsandbytes 4-bit layers compute in the half dtype the "
                      "model is loaded in", hint="use --precision bf16, fp16, amp-bf16 or amp-fp16")
        if self.attention == "flash" and self.precision == "fp32":
            raise bad("flash attention needs fp16/bf16 activations; precision fp32 has none",
                      hint="use --precision amp-bf16 (fp32 weights, bf16 autocast) or --attention sdpa")

    # ---- derived facts the formulas use -------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def autocast(self) -> bool:
        return self.precision.startswith("amp-")

    @property
    def half(self) -> str:
        """The half dtype of this setup (the compute dtype unless precision is pure fp32)."""
        return "fp16" if self.precision in ("fp16", "amp-fp16") else "bf16"

    @property
    def is_peft(self) -> bool:
        return self.method in ("lora", "qlora")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["precision_auto"]
        d["lora_targets"] = self.lora_targets if isinstance(self.lora_targets, str) else list(self.lora_targets)
        return d

    def replace(self, **changes: Any) -> "Setup":
        """A copy with ``changes``; a precision left to "auto" is resolved again for the new method."""
        if self.precision_auto and "precision" not in changes:
            changes["precision"] = "auto"
        return replace(self, **changes)

    def describe(self) -> str:
        """One line for every output, e.g. ``batch 1 × seq 2048, bf16, AdamW (fused), grad checkpointing,
        LoRA r16 all-linear fp32 adapters, sdpa``."""
        parts = [f"batch {self.batch_size} × seq {self.seq_len}", self.precision, OPTIMIZER_LABELS[self.optimizer],
                 "grad checkpointing" if self.grad_checkpointing else "no grad checkpointing"]
        if self.method == "full":
            parts.append("full fine-tuning")
        else:
            targets = self.lora_targets if isinstance(self.lora_targets, str) else ",".join(self.lora_targets)
            lora = f"r{self.lora_rank} {targets} {self.lora_dtype} adapters"
            if self.lora_dropout:
                lora += f", dropout {self.lora_dropout:g}"
            if self.method == "lora":
                parts.append("LoRA " + lora)
            else:
                q = "nf4" + (" double-quant" if self.double_quant else "")
                parts.append(f"QLoRA {q} {lora}" + (", prepare-kbit" if self.prepare_kbit else ""))
        parts.append(self.attention + (" (padded batch)" if self.padding else ""))
        if self.transformers_major != 5:
            parts.append(f"transformers {self.transformers_major}.x")
        return ", ".join(parts)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _targets(value: Any) -> str | tuple[str, ...]:
    """``"all-linear"``, or module names as a tuple (a comma-separated string or any iterable is accepted)."""
    if isinstance(value, str):
        if value.strip() == "all-linear":
            return "all-linear"
        value = [v for v in value.split(",")]
    try:
        names = tuple(str(v).strip() for v in value)
    except TypeError:
        raise InputError(f"lora_targets must be 'all-linear' or module names, got {value!r}") from None
    names = tuple(n for n in names if n)
    if not names:
        raise InputError("lora_targets is empty", hint="give 'all-linear' or module names such as q_proj,v_proj")
    for n in names:
        if not _NAME_RE.match(n):
            raise InputError(f"lora_targets: {n[:60]!r} is not a module name")
    return tuple(dict.fromkeys(names))
