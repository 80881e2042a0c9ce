"""The phases of a training step and what is alive in each. Pure.

The peak is the maximum over the moments of a step, not the sum of everything that ever exists
(simulation.md: "the fwd/bwd peak is at the start of backward ... with GC and full fine-tuning it moves
to the end of backward"). The estimate describes step 2 onwards, when optimizer states exist; gradients are
None during the forward (``zero_grad(set_to_none=True)``).

Backward walks the layers from the last to the first. What is alive before layer k's backward is linear
in k (the saved activations of layers <= k, the gradients of layers > k), so its maximum is at one of the
two ends: the top layer (everything still saved, few gradients) or the bottom layer (one layer left, almost
every gradient accumulated). With gradient checkpointing each layer is recomputed right before its
backward: its activations exist for one layer at a time, next to the checkpointed layer inputs.
"""

from __future__ import annotations

from .activations import Ctx, LayerActs, context, head_acts, layer_acts, peak_of
from .component import (ALL, BWD_BOTTOM, BWD_END, BWD_HEAD, BWD_START, BWD_TOP, FORWARD, FWD_LAYER,
                        Component)
from .logits import backward_loss, forward_loss, head_dtype, head_gradient
from .optimizers import gradient_bytes, gradients, optimizer_states, step_transient
from .overhead import cublas_workspace, flash_backward_scratch
from .profile import ModelProfile
from .setup import Setup
from .units import rnd
from .weights import ParamPlan, components as weight_components, plan

ACT_SOURCE = ("op-by-op saved tensors of transformers 5.x modeling code (activations.py Tracer); measured by "
              "the oracle, simulation.md 'Activations per decoder layer per token'")


def build(prof: ModelProfile, setup: Setup) -> tuple[list[Component], list[str], ParamPlan, int]:
    """Every component of one estimate, the warnings, the parameter plan and the largest transient block."""
    warnings: list[str] = list(prof.warnings)
    pp = plan(prof, setup)
    warnings += pp.warnings
    d = prof.dims
    T = setup.tokens
    S = setup.seq_len
    L = prof.num_layers
    h = d.hidden_size
    V = d.vocab_size
    gc = setup.grad_checkpointing
    targets = frozenset(m.name for m in pp.lora_modules if m.group != "lm_head")
    head_targeted = any(m.group == "lm_head" for m in pp.lora_modules)
    ctx = context(prof, setup, pp.quantized, targets | (frozenset({"lm_head"}) if head_targeted else frozenset()))
    static = _static_components(prof, setup, pp)
    comps: list[Component] = list(static[0])
    comps.append(cublas_workspace())

    # ---- inputs ----------------------------------------------------------------------------------------
    ids = rnd(8 * T)
    comps.append(Component("inputs", ids, ALL, "tokens × 8 B (input_ids = labels, int64)", f"{T:,} × 8 = {ids:,} B",
                           "the training loop's batch (HF Trainer passes labels = input_ids)"))
    pos = 3 * rnd(8 * T) + (2 * rnd(T * prof.rotary_dim * ctx.xd) if prof.rotary else 0)
    if setup.padding:
        pos += rnd(setup.batch_size * S * S)
    comps.append(Component(
        "positions_labels", pos, (FWD_LAYER, FORWARD, BWD_START, BWD_HEAD, BWD_TOP, BWD_BOTTOM),
        "tokens × (3 × 8 B: position_ids, padded and shifted labels)" + (" + 2 × rot_dim × dtype (cos, sin)"
                                                                         if prof.rotary else "")
        + (" + batch × S² B (bool attention mask)" if setup.padding else ""),
        f"{T:,} tokens → {pos:,} B",
        "transformers 5.x: position_ids, rotary cos/sin shared by all layers (saved by apply_rotary_pos_emb), "
        "ForCausalLMLoss pad + shift of labels (saved by nll_loss)"))

    # ---- optimizer -------------------------------------------------------------------------------------
    comps += static[1]

    # ---- activations -------------------------------------------------------------------------------------
    kinds = prof.layer_kinds
    acts: list[tuple[int, LayerActs]] = [(k.count, layer_acts(prof, ctx, k)) for k in kinds]
    first_rg = not (setup.is_peft and not gc)  # LoRA without GC: layer 0's input does not require grad
    first = layer_acts(prof, ctx, kinds[0], x_requires_grad=first_rg)

    def layer_bytes(a: LayerActs, exclude_input: bool = False) -> int:
        return rnd(int(T * ((a.saved_b - (a.input_b if exclude_input else 0)) + a.saved_s * S)))

    big = max((a for _, a in acts), key=lambda a: a.saved_b + a.saved_s * S)
    per_layer = layer_bytes(big)
    head_trainable = setup.method == "full"
    head_b = rnd(int(T * head_acts(prof, ctx, head_trainable, head_targeted)))
    cache_layers = sum(n * a.cache_bytes for n, a in acts)
    cache_layer = big.cache_bytes
    head_w_dt = ctx.lin_dt if setup.method != "qlora" else pp.base_dt
    head_cache = h * V * 2 if (setup.autocast and head_w_dt != 2) else 0
    ld = head_dtype(setup.autocast, head_w_dt)
    dx = rnd(T * h * ctx.xd)  # gradient flowing into a layer's output

    # gradients by part (needed for the layer moments)
    g_total, g_head, g_embed, g_layers = static[2]
    if setup.method == "full" and prof.tied:
        g_head += g_embed      # the head reads the embedding matrix: its gradient arrives first
        g_embed = 0
    g_layer = g_layers // max(L, 1)
    g_mlp = _mlp_grad_bytes(prof, pp, setup) if setup.method == "full" else 0

    fwd_peak = peak_of(big.fwd, T, S)          # saved-so-far + live temporaries, the input excluded
    pre = rnd(int(T * big.pre_b))
    bwd_extra = peak_of(big.bwd[:-1], T, S) if len(big.bwd) > 1 else 0
    if setup.method == "full":
        # the MLP's weight gradients appear while its inputs are still saved (trace of the oracle:
        # + G_mlp - 3 I-wide tensors freed + the input gradient)
        bwd_extra = max(g_mlp + int(T * (h * ctx.xd)) - int(T * 3 * _inter_width(prof) * 2) , 0)
    norm_end = rnd(int(T * (big.bwd[-1].b + 4 * h + 4)))   # layer 0's input norm: saved x32 + backward temps

    formula = _layer_formula(prof, setup)
    if not gc:
        all_saved = sum(n * layer_bytes(a) for n, a in acts) - (layer_bytes(acts[0][1]) - layer_bytes(first))
        comps.append(Component(
            "activations", all_saved, (FORWARD, BWD_START, BWD_HEAD, BWD_TOP),
            f"layers × tokens × ({formula})", _sub_layers(acts, T, S, all_saved), ACT_SOURCE))
        fl = all_saved - per_layer + rnd(int(T * big.x_live_b)) + rnd(fwd_peak)
        comps.append(Component(
            "activations.forward_layer", fl, (FWD_LAYER,),
            "(layers − 1) × saved + the last layer's input + its forward peak (saved so far + temporaries)",
            f"{fl:,} B", ACT_SOURCE))
        top = max(pre, bwd_extra)
        bottom = max(per_layer + max(pre, bwd_extra), g_layer + norm_end)
        bottom_f = "max(layer 0 saved + gradients in flight, its weight gradients + input-norm backward)"
    else:
        ck = sum(n * rnd(int(T * a.ckpt_b)) for n, a in acts)
        comps.append(Component(
            "activations.checkpoints", ck, (FWD_LAYER, FORWARD, BWD_START, BWD_HEAD, BWD_TOP),
            f"layers × tokens × h × {ctx.xd} B (each decoder layer's input)",
            f"{L} × {T:,} × {h} × {ctx.xd} = {ck:,} B",
            "torch.utils.checkpoint (use_reentrant=False) keeps only the layer inputs; simulation.md "
            "'any method + GC: 2h' (4h with prepare_kbit's fp32 residual stream)"))
        comps.append(Component(
            "activations.checkpoint_bottom", rnd(int(T * big.ckpt_b)), (BWD_BOTTOM,),
            f"tokens × h × {ctx.xd} B (layer 0's input)", f"{T:,} × {h} × {ctx.xd} B", "torch.utils.checkpoint"))
        rec = layer_bytes(big, exclude_input=True)
        recompute = max(pre + fwd_peak, rec + bwd_extra)
        top = recompute
        bottom = max(recompute, g_layer + norm_end)
        bottom_f = "max(recompute, layer 0's weight gradients + input-norm backward)"
        comps.append(Component(
            "activations.recompute", rec, (),
            f"tokens × ({formula} − the layer input the checkpoint holds)",
            f"{T:,} tokens → {rec:,} B (one layer recomputed before its backward; inside backward.top)",
            ACT_SOURCE))
    if setup.is_peft and gc:
        eg = 2 * rnd(T * h * ctx.xd)
        comps.append(Component(
            "inputs_embeds_grad", eg, ALL,
            f"2 × tokens × h × {ctx.xd} B", f"2 × {T:,} × {h} × {ctx.xd} = {eg:,} B",
            "transformers enable_input_require_grads (PEFT + gradient checkpointing) makes the embedding output "
            "a leaf that requires grad: it and its .grad (h per token each) outlive the step (measured by the "
            "oracle at the start of step 2's backward)"))
    comps.append(Component(
        "activations.head", head_b, (FORWARD, BWD_START, BWD_HEAD),
        "tokens × (final norm saves + head input if trained)", f"{T:,} tokens → {head_b:,} B", ACT_SOURCE))
    comps.append(Component("grad_hidden", dx, (BWD_HEAD, BWD_TOP, BWD_BOTTOM),
                           f"tokens × h × {ctx.xd} B (gradient of the hidden states)", f"{dx:,} B",
                           "autograd: the gradient flowing into each layer's output"))
    what = ("recomputation of the layer (saved so far + temporaries) or its backward (saved + gradients in "
            "flight)" if gc else "gradients in flight inside the layer's backward")
    comps.append(Component(
        "backward.top_layer", top, (BWD_TOP,), f"max over the last layer's moments: {what}",
        f"pre-node gradients {pre:,} B; forward peak {rnd(fwd_peak):,} B; backward extra {bwd_extra:,} B → {top:,} B",
        "activations.py Tracer moments (live storages traced on the oracle at the backward peak)"))
    comps.append(Component(
        "backward.bottom_layer", bottom, (BWD_BOTTOM,), bottom_f, f"{bottom:,} B",
        "activations.py Tracer moments; the input RMSNorm's backward decomposition (3 fp32 h-wide temporaries)"))
    if cache_layers:
        ph = (FWD_LAYER, FORWARD) if gc else (FWD_LAYER, FORWARD, BWD_START, BWD_HEAD, BWD_TOP)
        comps.append(Component(
            "autocast_cache", cache_layers, ph, "Σ_layers half copies of the weights autocast casts",
            f"{cache_layers:,} B", "torch.autocast caches the half copy of every trainable leaf weight until the "
            "autocast region exits; mm saves it for backward (simulation.md: +2 B/param under amp)"))
        comps.append(Component(
            "autocast_cache.layer", cache_layer, (BWD_TOP, BWD_BOTTOM) if gc else (BWD_BOTTOM,),
            "half copies of one layer's weights", f"{cache_layer:,} B", "torch.autocast (per layer)"))
    if head_cache:
        comps.append(Component(
            "autocast_cache.head", rnd(head_cache), (FWD_LAYER, FORWARD, BWD_START, BWD_HEAD),
            "V × h × 2 B (half copy of the fp32 head weight)", f"{V:,} × {h} × 2 = {rnd(head_cache):,} B",
            "torch.autocast casts the fp32 lm_head weight for F.linear; the copy is saved for the "
            "gradient of the head's input"))

    # ---- logits / loss ---------------------------------------------------------------------------------
    comps.append(forward_loss(V, T, ld))
    comps.append(backward_loss(V, T))
    comps.append(head_gradient(V, T, ld))

    # ---- gradients by phase ----------------------------------------------------------------------------
    if g_head:
        comps.append(Component(
            "gradients.head", g_head, (BWD_HEAD, BWD_TOP), "gradients of the head (and final norm)",
            f"{g_head:,} B", "autograd: the head's weight gradient is produced first in backward"))
    partial = g_total - g_embed - g_layer
    if partial > 0:
        comps.append(Component(
            "gradients.partial", partial, (BWD_BOTTOM,), "all gradients but the embedding's and layer 0's",
            f"{g_total:,} − {g_embed:,} − {g_layer:,} = {partial:,} B", "autograd order: layers top to bottom"))
    if setup.method == "full":
        emb = _embedding_backward(prof, setup, pp, T, h, ctx)
        if emb:
            comps.append(emb)

    # ---- kernel scratch the oracle does not see -------------------------------------------------------------
    if _flash(setup, ctx, prof):
        comps.append(flash_backward_scratch(T, d.q_size, d.num_kv_heads != d.num_heads))
    # the largest single temporary block (for the fragmentation margin): an fp32 logits-sized tensor, or
    # one layer's fp32 attention scores when the kernel materialises them
    largest = rnd(T * 4 * V)
    if big.saved_s:
        largest = max(largest, rnd(setup.batch_size * d.num_heads * S * S * 4))
    if prof.generic:
        warnings.append("generic decoder: activations are the Llama-style formula with this model's widths")
    if setup.precision == "fp16" and setup.method == "full":
        warnings.append("pure fp16 weights for full fine-tuning: HF Trainer refuses to unscale fp16 gradients; "
                        "use amp-fp16 (fp32 weights + autocast) in practice")
    if setup.method == "qlora" and setup.prepare_kbit and not setup.autocast:
        warnings.append("QLoRA with prepare_kbit and no autocast: the residual stream is fp32, so sdpa runs "
                        "attention in fp32 (math kernel, S² scores); HF Trainer bf16=True is --precision amp-bf16")
    return comps, warnings, pp, largest


def _static_components(prof: ModelProfile, setup: Setup, pp: ParamPlan):
    """Components that do not depend on batch or sequence length, cached per model and knobs."""
    key = ("static", id(pp), setup.optimizer, setup.precision, setup.method)
    hit = prof.cache.get(key)
    if hit is not None and hit[0] is pp:
        return hit[1]
    weights = tuple(weight_components(prof, setup, pp))
    opt = list(optimizer_states(pp, setup))
    opt.append(gradients(pp))
    st = step_transient(pp, setup)
    if st:
        opt.append(st)
    grads = (gradient_bytes(pp.trainable), gradient_bytes(pp.trainable, "head"),
             gradient_bytes(pp.trainable, "embedding"), gradient_bytes(pp.trainable, "layers"))
    res = (weights, tuple(opt), grads)
    prof.cache[key] = (pp, res)
    return res


def _inter_width(prof: ModelProfile) -> int:
    """The widest MLP intermediate a token goes through (top_k experts count k times)."""
    return max(k.intermediate * (k.top_k or 1) for k in prof.layer_kinds)


def _mlp_grad_bytes(prof: ModelProfile, pp: ParamPlan, setup: Setup) -> int:
    """Weight gradients of one layer's MLP (full fine-tuning): produced first in the layer's backward."""
    kind = max(prof.layer_kinds, key=lambda k: k.count)
    dt = pp.base_dt
    return sum(rnd(ln.in_f * ln.out_f * dt) * ln.per_layer for ln in kind.linears
               if ln.reads in ("mlp_in", "mlp_out", "expert_in", "expert_out", "shared_in", "shared_out"))


def _flash(setup: Setup, ctx: Ctx, prof: ModelProfile) -> bool:
    """Does attention run a flash kernel (whose backward allocates dq_accum)? sdpa picks flash for half
    activations without a materialised mask (activations.py Tracer.attention_core)."""
    if setup.attention == "flash":
        return True
    if setup.attention != "sdpa" or setup.padding or prof.mla:
        return False
    if not prof.sdpa_gqa and prof.dims.num_kv_heads != prof.dims.num_heads:
        return False
    return ctx.autocast or ctx.xd == 2


def _embedding_backward(prof: ModelProfile, setup: Setup, pp: ParamPlan, T: int, h: int, ctx: Ctx) -> Component:
    emb = [t for t in pp.trainable if t.part == "embedding"]
    if not emb:
        return None  # type: ignore[return-value]
    big = max(emb, key=lambda t: t.numel)
    if prof.tied:
        b = 2 * rnd(big.numel * big.dt)
        f = "2 × V × h × dtype (embedding gradient + the out-of-place sum with the head's gradient)"
        src = ("autograd InputBuffer sums the head's and the embedding's gradient of the tied matrix out of "
               "place (as the oracle measures: +4·V·h B for Llama-3.2-1B); CUDA may add in place (2·V·h)")
    else:
        b = rnd(T * h * ctx.xd)
        f = "tokens × h × dtype (gradient of the embedding output)"
        src = "embedding_dense_backward: the gradient arriving at the embedding output"
    return Component("embedding_backward", b, (BWD_END,), f, f"{b:,} B", src)


def _layer_formula(prof: ModelProfile, setup: Setup) -> str:
    """A readable per-layer formula for the common cases (Llama-family decoders)."""
    flash = setup.attention in ("sdpa", "flash") and not setup.padding
    attn = "4kv + 4nH" if flash else ("6·nH·S" if setup.attention == "eager" else "…")
    if prof.family not in ("llama", "mistral", "qwen2", "qwen3", "mixtral", "yi"):
        return "bytes per token per layer from the op trace"
    if setup.method == "full" and setup.precision in ("bf16", "fp16"):
        return ("20h + " + attn + " + 8i + 8") if flash else ("24h + 8i + " + attn + " + 8")
    if setup.method == "lora" and setup.precision in ("bf16", "fp16") and flash:
        if setup.lora_dtype == "fp32":
            base = "36h + 4kv + 10i + 4nH + 28r + 8 (all-linear)"
        else:
            base = "16h + 4kv + 8i + 4nH + 14r + 8 (all-linear)"
        return base + (" + Σ d_in (dropout masks)" if setup.lora_dropout else "")
    return "bytes per token per layer from the op trace"


def _sub_layers(acts, T: int, S: int, total: int) -> str:
    parts = []
    for n, a in acts:
        per_tok = a.saved_b + a.saved_s * S
        parts.append(f"{n} × {T:,} × {per_tok:,.0f}")
    return " + ".join(parts) + f" = {total:,} B"
