"""Logits and the cross-entropy loss: transformers' fp32 upcast path. Pure.

transformers' ``ForCausalLMLoss`` (loss/loss_utils.py, v4.46+ and 5.x) does ``logits = logits.float()``
and then ``F.cross_entropy`` = log_softmax + nll_loss. With V the vocabulary size and ``ld`` the element
size of the head's output (2 for bf16/fp16 or autocast, 4 for an fp32 head), per token:

* forward (the loss being computed): head output (ld·V) + fp32 copy (4V, absent when ld = 4) +
  log_softmax output (4V): 10·V bytes for a half head;
* start of backward: the saved log_softmax output (4V) + the gradient nll_loss writes (4V) + the gradient
  log_softmax_backward returns (4V) = 12·V bytes (simulation.md "Logits and loss": 2.94 GiB for
  Llama-3-8B at 2048 tokens);
* the head's backward: the gradient of the logits in the head dtype (ld·V) plus the head weight gradient.

Tied or untied makes no difference here (the head reads the embedding matrix). HF Trainer keeps only the
loss (``keep_outputs`` off), so the model's own half-precision logits die before backward.
"""

from __future__ import annotations

from .component import BWD_HEAD, BWD_START, FORWARD, Component
from .units import rnd


def head_dtype(autocast: bool, head_weight_dt: int) -> int:
    """Element size of the logits the head produces: half under autocast, else the head weight's dtype."""
    return 2 if autocast else head_weight_dt


def forward_loss(V: int, tokens: int, ld: int) -> Component:
    tensors = [ld * V, 4 * V] if ld != 4 else [4 * V]
    tensors.append(4 * V)  # log_softmax output
    b = sum(rnd(tokens * x) for x in tensors)
    k = sum(tensors) // V
    return Component(
        "logits.forward", b, (FORWARD,), f"tokens × {k}·V  (head output {ld}V"
        + (" + fp32 copy 4V" if ld != 4 else "") + " + log_softmax 4V)",
        f"{tokens:,} × {k} × {V:,} = {b:,} B",
        "transformers loss_utils.ForCausalLMLoss: logits.float() then cross_entropy "
        "(simulation.md 'Logits and loss', forward 10·V per token)")


def backward_loss(V: int, tokens: int) -> Component:
    b = 3 * rnd(tokens * 4 * V)
    return Component(
        "logits.backward", b, (BWD_START,), "tokens × 12·V  (saved log_softmax 4V + 2 fp32 gradients 8V)",
        f"{tokens:,} × 12 × {V:,} = {b:,} B",
        "nll_loss_backward + _log_softmax_backward_data (torch 2.x); measured by the oracle: "
        "simulation.md 'Start of backward: 12·V bytes/token'")


def head_gradient(V: int, tokens: int, ld: int) -> Component:
    b = rnd(tokens * ld * V)
    return Component(
        "logits.head_grad", b, (BWD_HEAD,), f"tokens × {ld}·V  (gradient of the logits in the head dtype)",
        f"{tokens:,} × {ld} × {V:,} = {b:,} B",
        "autograd: ToCopyBackward of logits.float() hands lm_head a gradient in its output dtype")
