"""Activations: the tensors each op of a decoder layer saves for backward, per token. Pure.

Source: measured by the fake-tensor oracle (shared/reference/simulation.md, "Activations per decoder layer
per token", from a ``saved_tensors_hooks`` trace of transformers 5.24 / peft 0.21.2 / torch 2.13), and
re-derived here op by op instead of as fitted constants. A small tracer walks the forward of one decoder
layer the way transformers' modeling code runs it (``LlamaDecoderLayer``, ``PhiDecoderLayer``, ...) and
records, for every op, which of its inputs/outputs autograd keeps (the rules of torch's
``derivatives.yaml``: an op saves an input only if the gradient of some *other* input that requires grad
needs it, e.g. a frozen Linear saves nothing, a trainable one saves its input). Tensors are identified by
storage, so a tensor saved by several ops (the norm output read by q, k and v) counts once and a view keeps
its whole base alive (v as a slice of a fused ``qkv_proj`` output keeps all of it).

For Llama-3-8B this reproduces the oracle's table exactly (bytes per token per layer; h hidden, kv =
n_kv·d, i intermediate, nH heads, r LoRA rank; +8 = two fp32 rsqrt values):

===============================  ====================================  ===========
case                             formula                               8B
===============================  ====================================  ===========
full, sdpa (flash)               20h + 4kv + 8i + 4nH + 8              200 840
full, eager                      24h + 8i + 6·nH·S + 8                 606 216 (S=2048)
LoRA fp32 adapters               36h + 4kv + 10i + 4nH + 28r + 8       295 496
LoRA bf16 adapters               16h + 4kv + 8i + 4nH + 14r + 8        184 680
LoRA + dropout                   + Σ d_in (1-byte masks) = +(6h + i)   334 408
padded batch                     + 2·(q - kv)·2 (repeat_kv) + 2·S      +16 384
===============================  ====================================  ===========

Autocast follows CUDA's op lists (torch ``autocast_mode.cpp``): linear/matmul/sdpa in the half dtype
(inputs cast per call, trainable weights cast once and cached for the whole forward), layer_norm, pow,
softmax and the loss in fp32. The oracle emulates autocast with CPU autocast, which agrees for the Llama
family (its norms, softmax and loss upcast explicitly) and differs for LayerNorm/GELU-composite families.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .profile import LayerKind, Lin, ModelProfile
from .setup import Setup

FP32, HALF, BYTE = 4, 2, 1
#: bitsandbytes' CUDA gemm_4bit uses its fused kernel up to 1536 rows and dequantizes the weight beyond
#: (bitsandbytes 0.50 backends/cuda/ops.py; emulated by the oracle's _install_bnb_forward_transient).
DEQUANT_MIN_TOKENS = 1536


@dataclass(frozen=True)
class T:
    """A tensor as the allocator sees it: one storage of ``b + s·S`` bytes per token."""

    key: str
    b: float          # bytes per token
    dt: int           # element size of the tensor's dtype
    s: float = 0.0    # bytes per token per sequence position (attention scores, masks)


@dataclass
class Ledger:
    """Saved-for-backward storages of one forward region, keyed by storage."""

    saved: dict[str, tuple[float, float]] = field(default_factory=dict)
    input_key: str = ""

    def save(self, *ts: T | None) -> None:
        for t in ts:
            if t is not None:
                self.saved[t.key] = (t.b, t.s)

    def total(self, *, exclude_input: bool = False) -> tuple[float, float]:
        b = s = 0.0
        for k, (kb, ks) in self.saved.items():
            if exclude_input and k == self.input_key:
                continue
            b += kb
            s += ks
        return b, s


@dataclass(frozen=True)
class Ctx:
    """What the dtypes and trainability of a setup mean for the forward ops."""

    full: bool                 # base weights trainable
    autocast: bool
    xd: int                    # residual stream / embedding output element size
    lin_dt: int                # element size of (non-quantized) base Linear weights
    norm_dt: int               # element size of norm weights
    quantized: frozenset[str]  # Linear names replaced by bnb Linear4bit (qlora)
    targets: frozenset[str]    # Linear names with a LoRA adapter
    ad: int                    # LoRA adapter element size
    rank: int
    lora_p: float
    kernel: str                # flash | efficient | math | eager  (resolved below, per dtype)
    padding: bool
    attn_p: float
    resid_p: float


@dataclass(frozen=True)
class Moment:
    """Memory alive inside one layer at one instant: ``b + s·S`` bytes per token plus ``abs`` bytes
    (``abs_min_tokens``: the absolute part applies only from that many tokens on)."""

    b: float
    s: float = 0.0
    abs: int = 0
    abs_min_tokens: int = 0

    def at(self, tokens: int, S: int) -> float:
        a = self.abs if tokens > self.abs_min_tokens else 0
        return tokens * (self.b + self.s * S) + a


@dataclass(frozen=True)
class LayerActs:
    """Per-token bytes of one decoder layer (``b + s·S``) and the moments of its forward and backward."""

    saved_b: float             # everything the layer saves, including its input when a norm saves it
    saved_s: float
    input_b: float             # of which: the layer input itself (a checkpoint already holds it)
    x_live_b: float            # the layer input while the layer runs, when no op saves it (non-GC forward)
    cache_bytes: int           # autocast copies of weights, per layer (absolute bytes, not per token)
    fwd: tuple[Moment, ...]    # forward moments: saved-so-far + live temporaries (x excluded)
    pre_b: float               # gradients created before the first node that needs a saved tensor
    bwd: tuple[Moment, ...]    # backward moments beyond the layer's saved tensors (weight grads excluded)
    ckpt_b: float              # what gradient checkpointing keeps per layer: the layer input


class Tracer:
    """Walks one decoder layer's forward (transformers 5.x modeling code) and records saved storages,
    the tensors alive but not saved (``live``) and the moments when the sum of both peaks."""

    def __init__(self, prof: ModelProfile, ctx: Ctx, kind: LayerKind, x_requires_grad: bool = True) -> None:
        self.p = prof
        self.c = ctx
        self.kind = kind
        self.led = Ledger()
        self.live: dict[str, tuple[float, float]] = {}
        self.cache = 0.0
        self.x_rg = x_requires_grad
        self.moments: list[Moment] = []
        self.bwd: list[Moment] = []
        self.pre_b = 0.0
        self.n = 0

    # ---- helpers -----------------------------------------------------------------------------------
    def new(self, name: str, width: float, dt: int, s: float = 0.0) -> T:
        self.n += 1
        return T(f"{name}#{self.n}", width * dt, dt, s * dt)

    def cast(self, x: T, dt: int, name: str) -> T:
        """``x.to(dt)``: a new storage unless the dtype already matches."""
        return x if x.dt == dt else self.new(name, x.b / x.dt, dt, x.s / x.dt)

    def hold(self, *ts: T | None) -> None:
        for t in ts:
            if t is not None and t.key not in self.led.saved:
                self.live[t.key] = (t.b, t.s)

    def drop(self, *ts: T | None) -> None:
        for t in ts:
            if t is not None:
                self.live.pop(t.key, None)

    def save(self, *ts: T | None) -> None:
        self.led.save(*ts)
        self.drop(*ts)

    def point(self, b: float = 0.0, s: float = 0.0, abs_: int = 0, min_tokens: int = 0) -> None:
        """Record a forward moment: everything saved so far + live temporaries + ``b + s·S`` more."""
        sb, ss = self.led.total(exclude_input=True)
        lb = sum(v[0] for v in self.live.values())
        ls = sum(v[1] for v in self.live.values())
        self.moments.append(Moment(sb + lb + b, ss + ls + s, abs_, min_tokens))

    # ---- ops ---------------------------------------------------------------------------------------
    def norm(self, x: T, width: int, name: str, trainable: bool | None = None, requires_grad: bool = True,
             groups: int = 1) -> T:
        c = self.c
        trainable = c.full if trainable is None else trainable
        if self.p.norm == "layernorm":
            xin = x
            if c.autocast and x.dt != FP32:  # CUDA autocast runs layer_norm in fp32
                xin = self.cast(x, FP32, name + ".x32")
            if requires_grad or trainable:
                self.save(xin, T(name + ".mean_rstd", 8, FP32))
            return self.new(name + ".out", width, xin.dt)
        # LlamaRMSNorm: x.to(fp32); pow/mean; x * rsqrt(var + eps); weight * normed.to(input_dtype)
        xf = self.cast(x, FP32, name + ".x32")
        if requires_grad:
            self.save(xf, T(name + ".rstd", 4 * groups, FP32))
        normed = self.new(name + ".n32", width, FP32)
        y = normed if x.dt == FP32 else self.new(name + ".y", width, x.dt)
        if self.p.family.startswith("gemma"):
            y = normed  # GemmaRMSNorm: (x32 * rsqrt) * (1 + w.float()), then .type_as(x)
        if trainable:
            self.save(y)
        return self.new(name + ".out", width, max(c.norm_dt, x.dt))

    def linear(self, x: T, lin: Lin, *, count: int = 1) -> T:
        """One nn.Linear (or bnb Linear4bit), with its LoRA adapter when targeted."""
        c = self.c
        out_w = lin.out_f
        deq = 0
        if lin.name in c.quantized:
            # bnb Linear4bit.forward: x.to(compute_dtype) -> MatMul4Bit (saves only the packed weight)
            # -> .to(input dtype). For more than 1536 tokens the CUDA gemm_4bit dequantizes the whole
            # weight into a compute-dtype (out, in) buffer first (bitsandbytes backends/cuda/ops.py).
            xin = self.cast(x, HALF, lin.name + ".x16")
            base = self.new(lin.name + ".out", out_w, HALF)
            res = self.cast(base, x.dt, lin.name + ".out_x")
            deq = lin.in_f * lin.out_f * HALF
            self.point(xin.b if xin is not x else 0.0, abs_=deq, min_tokens=DEQUANT_MIN_TOKENS)
            self.point((xin.b if xin is not x else 0.0) + base.b + (res.b if res is not base else 0.0))
        elif c.autocast:
            xin = self.cast(x, HALF, lin.name + ".xac")
            base = self.new(lin.name + ".out", out_w, HALF)
            trainable = c.full
            if trainable:
                self.save(xin)
                if c.lin_dt != HALF:
                    self.cache += lin.in_f * lin.out_f * HALF * count  # cached bf16 copy of the weight
            elif c.lin_dt != HALF:
                self.cache += lin.in_f * lin.out_f * HALF * count  # fresh cast, saved by mm for grad_input
            res = base
            self.point((xin.b if xin is not x and xin.key not in self.led.saved else 0.0) + base.b)
        else:
            base = self.new(lin.name + ".out", out_w, x.dt)
            if c.full:
                self.save(x)
            res = base
            self.point(base.b)
        if lin.name not in c.targets:
            return res
        # peft lora.Linear.forward: x = x.to(lora_A.dtype); result + lora_B(lora_A(dropout(x))) * scaling
        r = c.rank
        xl = self.cast(x, c.ad, lin.name + ".xl")
        a_in = xl
        if c.lora_p > 0:
            a_in = self.new(lin.name + ".drop", lin.in_f, c.ad)
            self.save(self.new(lin.name + ".mask", lin.in_f, BYTE))  # native_dropout's bool mask
        if c.autocast:
            a_in = self.cast(a_in, HALF, lin.name + ".a_ac")
            self.cache += r * (lin.in_f + lin.out_f) * HALF * count
            a_dt = HALF
        else:
            a_dt = c.ad
        self.save(a_in, self.new(lin.name + ".lora_a_out", r, a_dt))
        # the adapter-dtype copy of the input is alive while dropout / autocast make the saved one
        tmp = sum(t.b for t in {xl.key: xl, a_in.key: a_in}.values()
                  if t.key != x.key and t.key not in self.led.saved)
        self.point(res.b + tmp)
        b_out = self.new(lin.name + ".lora_b_out", out_w, a_dt)
        # base result + lora_B output + its scaled copy, then the sum (promoted dtype) replaces the first two
        self.point(res.b + 2 * b_out.b)
        s_dt = max(res.dt, a_dt)
        self.point(res.b + b_out.b + out_w * s_dt)
        return self.new(lin.name + ".lora_out", out_w, res.dt)

    def attention_core(self, q: T, k: T, v: T, q_w: int, kv_w: int, heads: int, out_w: int | None = None,
                       flash_ok: bool = True) -> T:
        c = self.c
        kernel = c.kernel
        out_w = out_w or q_w
        dt = q.dt
        if c.autocast:
            q2, k2, v2 = (self.cast(t, HALF, n) for t, n in ((q, "q16"), (k, "k16"), (v, "v16")))
            self.drop(*(a for a, b in ((q, q2), (k, k2), (v, v2)) if a is not b))
            q, k, v = q2, k2, v2
            dt = HALF
        broadcast = kv_w != q_w and not self.p.sdpa_gqa
        if broadcast and kernel == "sdpa":
            # the modeling code calls F.scaled_dot_product_attention itself with fewer k/v heads and no
            # enable_gqa (falcon-7b multi-query): only the math kernel broadcasts them
            kernel = "math"
        if kernel == "sdpa" or (kernel == "flash" and not flash_ok):
            if dt == HALF and not c.padding and flash_ok:
                kernel = "flash"
            elif kv_w != q_w and not c.padding:
                kernel = "math"        # fp32 with native GQA: neither flash nor mem-efficient takes it
            else:
                kernel = "efficient"   # padded batch (materialized mask) or fp32 without GQA
        self.kernel = kernel
        if kernel == "flash":
            # _scaled_dot_product_flash_attention / flash-attn 2: saves q, k, v, out and fp32 logsumexp.
            # The output takes q's memory layout (empty_like): q from a rotary mul of the projection's
            # (B, S, H, d) view stays (B, S, H, d), so transformers' transpose(1, 2).contiguous() is free;
            # q from torch.cat (partial rotary: phi, NeoX) is (B, H, S, d) and the output is copied.
            out = self.new("attn.out", q_w, dt)
            self.save(q, k, v, out, T("attn.lse", 4 * heads, FP32))
            if self.p.rotary and self.p.rotary_dim < self.p.dims.head_dim:
                out = self.new("attn.out_c", q_w, dt)
            return out
        if kernel == "efficient":
            # transformers repeats k/v when a mask is given (no enable_gqa), ATen turns the bool mask
            # into an additive mask in the query dtype, saved by the kernel
            kr = k if kv_w == q_w else self.new("attn.k_rep", q_w, dt)
            vr = v if kv_w == q_w else self.new("attn.v_rep", q_w, dt)
            out = self.new("attn.out", out_w, dt)
            mask = T("attn.mask", 0.0, dt, float(dt)) if c.padding else None
            self.save(q, kr, vr, out, T("attn.lse", 4 * heads, FP32), mask)
            self.drop(k, v)
            return out
        if kernel == "math":
            # _scaled_dot_product_attention_math: q·√scale, repeat_interleave(k)·√scale, v repeated,
            # softmax (saved, S scores per head), output transposed + contiguous for o_proj
            # (in the activation dtype, as on CUDA; on CPU — the oracle — ATen upcasts half inputs to fp32)
            qs = self.new("attn.q_s", q_w, dt)
            ks = self.new("attn.k_s", kv_w if broadcast else q_w, dt)
            vr = v if (kv_w == q_w or broadcast) else self.new("attn.v_rep", q_w, dt)
            sm = T("attn.softmax", 0.0, dt, float(heads * dt))
            self.drop(q, k, v)
            self.save(qs, ks, vr)
            self.point(0.0, 2.0 * heads * dt)    # scores and softmax output
            self.save(sm)
            self.bwd.append(Moment(0.0, 2.0 * heads * dt))  # softmax_backward: grad of probs + of scores
            return self.new("attn.out_c", q_w, dt)
        # eager_attention_forward: repeat_kv, q@k^T·scale, softmax(dtype=fp32).to(q.dtype), dropout, @v
        kr = k if kv_w == q_w else self.new("attn.k_rep", q_w, dt)
        vr = v if kv_w == q_w else self.new("attn.v_rep", q_w, dt)
        self.drop(k, v)
        self.save(q, kr, vr)
        # scaled scores (dt) + their fp32 conversion inside softmax(dtype=fp32) + the fp32 softmax output
        self.point(0.0, heads * (dt + 2 * FP32) + (heads * dt if c.padding else 0))
        self.save(T("attn.softmax32", 0.0, FP32, float(heads * FP32)), T("attn.probs", 0.0, dt, float(heads * dt)))
        if c.attn_p > 0:
            self.save(T("attn.drop_mask", 0.0, BYTE, float(heads)), T("attn.probs_drop", 0.0, dt, float(heads * dt)))
        # backward: grad of probs (dt), its fp32 conversion (4) and the softmax input gradient (4)
        self.bwd.append(Moment(0.0, heads * (dt + 2 * FP32)))
        return self.new("attn.out_c", q_w, dt)   # matmul output, transpose(1, 2).contiguous()

    def rotary(self, q: T, width: int, name: str) -> T:
        """apply_rotary_pos_emb: q*cos + rotate_half(q)*sin (cos/sin in the embedding dtype)."""
        if not self.p.rotary:
            return q
        dt = max(q.dt, self.c.xd)
        out = self.new(name + ".rot", width, dt)
        self.point(out.b + q.b if q.key not in self.led.saved else out.b)
        return out

    def dropout(self, x: T, p: float, name: str) -> T:
        if p <= 0:
            return x
        self.save(self.new(name + ".mask", x.b / x.dt, BYTE))
        return self.new(name + ".out", x.b / x.dt, x.dt)

    def act(self, g: T, width: float, name: str) -> T:
        """hidden_act(g): saves its input (silu, gelu) or the intermediates of a Python composite."""
        n = self.p.act_saved
        if n >= 1:
            self.save(g)
        for j in range(1, n):
            self.save(self.new(f"{name}.act{j}", width, g.dt))
        return self.new(name + ".act_out", width, g.dt)

    def mul(self, a: T, b: T, name: str, save_a: bool = True, save_b: bool = True) -> T:
        if save_a:
            self.save(b)   # d/da needs b
        if save_b:
            self.save(a)   # d/db needs a
        return self.new(name, a.b / a.dt, max(a.dt, b.dt))

    def add(self, a: T, b: T, name: str) -> T:
        return self.new(name, a.b / a.dt, max(a.dt, b.dt))

    # ---- blocks --------------------------------------------------------------------------------------
    def mla_attention(self, x_n: T) -> T:
        """DeepSeek-V2/V3 multi-head latent attention (transformers deepseek_v2 modeling, sdpa path).

        q = q_proj(x) (or q_b_proj(q_a_layernorm(q_a_proj(x)))), kv_a = kv_a_proj_with_mqa(x) split into
        the latent (kv_a_layernorm -> kv_b_proj -> k_nope | v views) and k_pe (rotary); q = cat(q_nope,
        rope(q_pe)); k = new_empty filled with k_nope and k_pe. qk and v head dims differ, so sdpa runs the
        mem-efficient kernel, which saves q, k, v (a view that keeps the whole kv_b output) and its output.
        """
        d = self.p.dims
        m = d.mla
        assert m is not None
        lins = {ln.name: ln for ln in self.kind.linears}
        nh = d.num_heads
        qk_w = nh * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        self.hold(x_n)
        if "q_a_proj" in lins:
            qa = self.linear(x_n, lins["q_a_proj"])
            self.hold(qa)
            qn = self.norm(qa, m.q_lora_rank or lins["q_a_proj"].out_f, "q_a_norm")
            self.drop(qa)
            self.hold(qn)
            q = self.linear(qn, lins["q_b_proj"]) if "q_b_proj" in lins else self.new("q", qk_w, qn.dt)
            self.drop(qn)
        else:
            q = self.linear(x_n, lins["q_proj"]) if "q_proj" in lins else self.new("q", qk_w, x_n.dt)
        self.hold(q)
        kva = self.linear(x_n, lins["kv_a_proj_with_mqa"]) if "kv_a_proj_with_mqa" in lins else \
            self.new("kv_a", m.kv_lora_rank + m.qk_rope_head_dim, x_n.dt)
        self.drop(x_n)
        self.hold(kva)
        lat = self.norm(kva, m.kv_lora_rank, "kv_a_norm")   # reads the latent view of kv_a
        self.hold(lat)
        kvb = self.linear(lat, lins["kv_b_proj"]) if "kv_b_proj" in lins else \
            self.new("kv_b", nh * (m.qk_nope_head_dim + m.v_head_dim), lat.dt)
        self.drop(lat)
        self.hold(kvb)
        dt = max(q.dt, self.c.xd)
        q2 = self.new("q.cat", qk_w, dt)          # cat(q_nope, rope(q_pe))
        k2 = self.new("k.filled", qk_w, dt)       # new_empty + k_nope + broadcast rope(k_pe)
        self.drop(q, kva)
        self.hold(q2, k2)
        out = self.attention_core(q2, k2, kvb, qk_w, qk_w, nh, out_w=nh * m.v_head_dim, flash_ok=False)
        self.drop(q2, k2, kvb)
        self.hold(out)
        o = self.linear(out, lins["o_proj"]) if "o_proj" in lins else self.new("o", d.hidden_size, out.dt)
        self.drop(out)
        self.hold(o)
        return o

    def attention(self, x_n: T) -> T:
        d = self.p.dims
        if self.p.mla and d.mla is not None:
            return self.mla_attention(x_n)
        lins = self.kind.linears
        q_w, kv_w = d.q_size, d.kv_size
        ins = [ln for ln in lins if ln.reads == "attn_in"]
        outs: dict[str, T] = {}
        self.hold(x_n)
        for ln in ins:
            outs[ln.name] = self.linear(x_n, ln)
            self.hold(outs[ln.name])
        self.drop(x_n)
        q = outs.get("q_proj") or outs.get("q_b_proj") or outs.get("query") or outs.get("wq")
        k = outs.get("k_proj") or outs.get("key") or outs.get("wk")
        v = outs.get("v_proj") or outs.get("value") or outs.get("wv")
        if q is None or k is None or v is None:
            fused = next((outs[n] for n in outs if n not in ("q_a_proj", "kv_a_proj_with_mqa")), None)
            if fused is None:
                fused = self.new("qkv", q_w + 2 * kv_w, x_n.dt)
            q = q or fused
            k = k or outs.get("kv_b_proj") or fused
            v = v or outs.get("kv_b_proj") or fused
        for t in outs.values():
            if t is not q and t is not k and t is not v:
                self.drop(t)
        if self.p.qk_norm:
            q2 = self.norm(q, q_w, "q_norm", groups=d.num_heads)
            k2 = self.norm(k, kv_w, "k_norm", groups=d.num_kv_heads)
            self.drop(q, k)
            q, k = q2, k2
            self.hold(q, k)
        q2 = self.rotary(q, q_w, "q")
        k2 = self.rotary(k, kv_w, "k")
        if q2 is not q:
            self.drop(q if q is not v else None)
            self.hold(q2)
        if k2 is not k:
            self.drop(k if k is not v else None)
            self.hold(k2)
        out = self.attention_core(q2, k2, v, q_w, kv_w, d.num_heads)
        self.drop(q2, k2, v)
        self.hold(out)
        o_lin = next((ln for ln in lins if ln.reads == "attn_out"), None)
        if o_lin is None:
            return out
        o = self.linear(out, o_lin)
        self.drop(out)
        self.hold(o)
        return o

    def mlp(self, x_n: T, lins: Iterable[Lin], inter: int, name: str) -> T:
        lins = list(lins)
        ins = [ln for ln in lins if ln.reads.endswith("_in")]
        outs = [ln for ln in lins if ln.reads.endswith("_out")]
        gate = next((ln for ln in ins if ln.name in ("gate_proj", "w1")), None)
        up = next((ln for ln in ins if ln.name in ("up_proj", "w3")), None)
        self.hold(x_n)
        if self.p.mlp == "gated":
            if gate is not None and up is not None:
                g = self.linear(x_n, gate)
                self.hold(g)
                a = self.act(g, inter, name)
                self.hold(a)
                u = self.linear(x_n, up)
                self.hold(u)
            else:  # fused gate_up_proj: gate and up are views of one output, saving either keeps both
                fused = self.linear(x_n, ins[0]) if ins else self.new(name + ".gate_up", 2 * inter, x_n.dt)
                g = u = fused
                self.hold(g)
                a = self.act(g, inter, name)
                self.hold(a)
            self.drop(x_n)
            prod = self.mul(a, u, name + ".prod")
            self.drop(g, a, u)
        else:
            fc1 = ins[0] if ins else None
            g = self.linear(x_n, fc1) if fc1 else self.new(name + ".fc1", inter, x_n.dt)
            self.drop(x_n)
            self.hold(g)
            prod = self.act(g, inter, name)
            self.drop(g)
        self.hold(prod)
        self.point()
        if not outs:
            out = self.new(name + ".out", self.p.dims.hidden_size, prod.dt)
        else:
            out = self.linear(prod, outs[0])
            self.mlp_out = (outs[0], prod, out)
        self.drop(prod)
        self.hold(out)
        return out

    def moe(self, x_n: T) -> T:
        """A routed-expert block: router + top-k expert MLPs over the gathered tokens + shared experts."""
        kind = self.kind
        h = self.p.dims.hidden_size
        k = kind.top_k
        E = kind.experts
        router = [ln for ln in kind.linears if ln.reads == "router" and ln.out_f == E]
        if router and self.c.full:
            if self.p.family in ("deepseek_v2", "deepseek_v3"):
                # MoEGate: F.linear(hidden_states.type(float32), weight.type(float32)) saves the fp32 copy
                self.save(self.new("router.x32", h, FP32))
            else:
                self.save(x_n)
        # router logits .float() -> softmax (saved) -> topk
        self.save(T("router.softmax", 4 * E, FP32), T("router.topk", 12 * k, FP32))
        # transformers 5 grouped_mm (or transformers 4's per-expert loop): every token visits top_k experts
        sub = Tracer(self.p, self.c, self.kind, True)
        sub.n = self.n
        xg = sub.new("moe.gathered", h, x_n.dt)
        if self.c.full or any(ln.name in self.c.targets for ln in kind.linears if ln.reads == "expert_in"):
            sub.save(xg)
        exp = [ln for ln in kind.linears if ln.reads in ("expert_in", "expert_out")]
        eo = sub.mlp(xg, [Lin(ln.name, ln.in_f, ln.out_f, 1, ln.reads.replace("expert", "mlp"), ln.bias)
                          for ln in exp], kind.intermediate, "expert")
        # the routing-weight multiply saves the expert output: the weights come from the router's softmax of
        # the (grad-requiring) hidden states, frozen router or not
        sub.save(eo)
        sb, ss = self.led.total(exclude_input=True)
        lb = sum(v[0] for v in self.live.values())
        for m in sub.moments:
            self.moments.append(Moment(sb + lb + m.b * k, ss + m.s * k, m.abs, m.abs_min_tokens))
        for key, (b, s) in sub.led.saved.items():
            self.led.saved[key] = (b * k, s * k)
        self.cache += sub.cache
        self.n = sub.n + 1
        self.bwd.extend(Moment(m.b * k, m.s * k, m.abs, m.abs_min_tokens) for m in sub.bwd)
        shared = [ln for ln in kind.linears if ln.reads in ("shared_in", "shared_out")]
        if shared:
            so = self.mlp(x_n, [Lin(ln.name, ln.in_f, ln.out_f, 1, ln.reads.replace("shared", "mlp"), ln.bias)
                                for ln in shared], kind.shared_intermediate, "shared")
            return self.add(so, self.new("moe.out", h, x_n.dt), "moe.sum")
        return self.new("moe.out", h, x_n.dt)

    def layer(self) -> T:
        """One decoder layer. Returns its output; the ledger holds what it saved."""
        p = self.p
        h = p.dims.hidden_size
        x = T("layer.input", h * self.c.xd, self.c.xd)
        self.led.input_key = x.key
        self.mlp_out = None
        rg = self.x_rg
        n1 = self.norm(x, h, "n1", requires_grad=rg)
        attn = self.attention(n1)
        attn2 = self.dropout(attn, self.c.resid_p, "attn_resid")
        if attn2 is not attn:
            self.drop(attn)
            self.hold(attn2)
        attn = attn2
        is_moe = self.kind.name == "moe"
        dense_lins = [ln for ln in self.kind.linears if ln.reads in ("mlp_in", "mlp_out")]
        if p.parallel:
            # phi / falcon-7b: MLP reads the same norm output; neox / falcon-40b: a second norm of x
            n2 = n1 if p.norms_per_layer == 1 else self.norm(x, h, "n2", requires_grad=rg)
            m = self.moe(n2) if is_moe else self.mlp(n2, dense_lins, self.kind.intermediate, "mlp")
            m = self.dropout(m, self.c.resid_p, "mlp_resid")
            out = self.add(self.add(attn, m, "sum1"), x, "layer.out")
        else:
            if p.sandwich:
                attn = self.norm(attn, h, "post_attn")
            x2 = self.add(x, attn, "resid1")
            self.drop(attn)
            self.hold(x2)
            n2 = self.norm(x2, h, "n2")
            m = self.moe(n2) if is_moe else self.mlp(n2, dense_lins, self.kind.intermediate, "mlp")
            if p.sandwich:
                m = self.norm(m, h, "post_mlp")
            m = self.dropout(m, self.c.resid_p, "mlp_resid")
            out = self.add(x2, m, "layer.out")
        self.backward_moments()
        return out

    def backward_moments(self) -> None:
        """Moments of this layer's backward, as bytes beyond the layer's saved tensors.

        Traced on the oracle (live storages at the backward peak of a 2-layer Llama-3.2-1B with a small
        vocabulary): before the first backward node that needs a saved tensor, the layer-output gradient
        has already been turned into the LoRA path's gradients of the last Linear (``pre``: its fp32 copy
        and the base-dtype copy); in the MLP backward the gradients of the product, of act(gate) and of up
        are alive together (3 × I in the activation dtype), with the fp32 gradient of a LoRA input and
        bitsandbytes' dequantized weight (backward MatMul4Bit) on top; a frozen Linear needs no more.
        """
        c = self.c
        kind = self.kind
        inter = kind.intermediate * (kind.top_k or 1)
        dt = HALF if (c.autocast or c.xd == HALF or c.lin_dt == HALF) else FP32
        if self.mlp_out is not None:
            lin, prod, out = self.mlp_out
            if lin.name in c.targets:
                a_dt = HALF if c.autocast else c.ad
                res_dt = out.dt
                self.pre_b = lin.out_f * a_dt + (lin.out_f * res_dt if a_dt != res_dt else 0)
        deq = max((ln.in_f * ln.out_f * HALF for ln in kind.linears if ln.name in c.quantized), default=0)
        if self.mlp_out is not None and self.mlp_out[0].name in c.targets:
            # LoRA on the last Linear: lora_A's backward returns the gradient of its (adapter-dtype) input
            # while that input is still saved, then casts it to the activation dtype; the pre-node
            # gradients have been consumed by then
            lin = self.mlp_out[0]
            mlp = lin.in_f * (HALF if c.autocast else c.ad) + lin.in_f * dt
        else:
            mlp = 3 * inter * dt   # gradients of the product, of act(gate) and of up
        self.bwd.append(Moment(mlp))
        if deq:
            # MatMul4Bit.backward: grad_A = grad_out @ dequantize_4bit(W) — the dequantized (out, in)
            # weight and the input gradient of the Linear (I wide for down_proj) are alive together, next
            # to the LoRA path's input gradient (cast to the activation dtype) waiting to be summed; the
            # adapter's saved input copy has been freed by then
            b = inter * dt
            if self.mlp_out is not None and self.mlp_out[0].name in c.targets:
                b += inter * dt - inter * (HALF if c.autocast else c.ad)
            self.bwd.append(Moment(max(b, 0), 0.0, deq, 0))
        # the input norm's backward (the end of the layer's backward): RMSNorm's decomposition keeps three
        # fp32 h-wide temporaries next to its saved fp32 input; LayerNorm's backward is one fused kernel
        h = self.p.dims.hidden_size
        norm = (3 * h * FP32 + 2 * h * dt) if self.p.norm == "rmsnorm" else 2 * h * dt
        self.norm_bwd_b = float(norm)


# --------------------------------------------------------------------------------------------------
def context(prof: ModelProfile, setup: Setup, quantized: frozenset[str], targets: frozenset[str]) -> Ctx:
    """Element sizes and trainability implied by a setup (see setup.py for the precision semantics)."""
    full = setup.method == "full"
    pure32 = setup.precision == "fp32"
    if full:
        lin_dt = FP32 if (pure32 or setup.autocast) else HALF
        norm_dt = lin_dt
        xd = lin_dt
    else:
        lin_dt = FP32 if pure32 else HALF
        norm_dt = lin_dt
        if setup.method == "qlora" and setup.prepare_kbit:
            norm_dt = FP32
        xd = norm_dt  # the embedding is cast together with the norms by prepare_model_for_kbit_training
    return Ctx(full=full, autocast=setup.autocast, xd=xd, lin_dt=lin_dt, norm_dt=norm_dt, quantized=quantized,
               targets=targets if setup.is_peft else frozenset(),
               ad=FP32 if setup.lora_dtype == "fp32" else HALF, rank=setup.lora_rank,
               lora_p=setup.lora_dropout if setup.is_peft else 0.0, kernel=setup.attention, padding=setup.padding,
               attn_p=prof.attn_dropout, resid_p=prof.resid_dropout)


def layer_acts(prof: ModelProfile, ctx: Ctx, kind: LayerKind, x_requires_grad: bool = True) -> LayerActs:
    key = ("layer", ctx, kind.name, x_requires_grad)
    hit = prof.cache.get(key)
    if hit is not None:
        return hit
    tr = Tracer(prof, ctx, kind, x_requires_grad)
    tr.layer()
    b, s = tr.led.total()
    ib = tr.led.saved.get(tr.led.input_key, (0.0, 0.0))[0]
    x_live = 0.0 if ib else prof.dims.hidden_size * ctx.xd
    res = LayerActs(saved_b=b, saved_s=s, input_b=ib, x_live_b=x_live, cache_bytes=int(tr.cache),
                    fwd=_prune(tr.moments), pre_b=tr.pre_b, bwd=_prune(tr.bwd) + (Moment(tr.norm_bwd_b),),
                    ckpt_b=prof.dims.hidden_size * ctx.xd)
    prof.cache[key] = res
    return res


def _prune(ms: list[Moment]) -> tuple[Moment, ...]:
    """Drop moments dominated by another for every batch and sequence length."""
    out: list[Moment] = []
    for m in sorted(ms, key=lambda m: (-m.b, -m.s, -m.abs)):
        if any(o.b >= m.b and o.s >= m.s and o.abs >= m.abs and o.abs_min_tokens <= m.abs_min_tokens for o in out):
            continue
        out.append(m)
    return tuple(out)


def peak_of(moments: tuple[Moment, ...], tokens: int, S: int) -> int:
    return int(max((m.at(tokens, S) for m in moments), default=0))


def head_acts(prof: ModelProfile, ctx: Ctx, head_trainable: bool, head_targeted: bool) -> float:
    """Per-token bytes saved outside the decoder layers: the final norm, the head's input, embedding dropout.

    The final norm saves what any norm saves (an fp32 copy of its input for RMSNorm, the input + mean/rstd
    for LayerNorm); a trainable head saves its input (the norm output); a LoRA adapter on the head saves
    its own copy. GPT-2-style embedding dropout keeps a 1-byte mask.
    """
    key = ("head", ctx, head_trainable, head_targeted)
    hit = prof.cache.get(key)
    if hit is not None:
        return hit
    d = prof.dims
    h = d.hidden_size
    tr = Tracer(prof, ctx, prof.layer_kinds[0])
    x = T("final.input", h * ctx.xd, ctx.xd)
    n = tr.norm(x, h, "final")
    if head_trainable:
        tr.led.save(tr.cast(n, HALF, "head.xac") if ctx.autocast else n)
    if head_targeted:
        tr.linear(n, Lin("lm_head", h, d.vocab_size, 1, "head"))
    if prof.embd_dropout > 0:
        tr.led.save(T("embd.mask", h, BYTE))
    b, _ = tr.led.total()
    prof.cache[key] = b
    return b
