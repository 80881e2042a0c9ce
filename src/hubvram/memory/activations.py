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
class LayerActs:
    """Per-token bytes of one decoder layer (``b + s·S``) and what else it costs."""

    saved_b: float             # everything the layer saves, including its input when a norm saves it
    saved_s: float
    input_b: float             # of which: the layer input itself (a checkpoint already holds it)
    cache_bytes: int           # autocast copies of weights, per layer (absolute bytes, not per token)
    fwd_peak_b: float          # transient working set on top of the saved tensors at the layer's forward peak
    fwd_peak_s: float
    bwd_peak_b: float          # transient working set of the layer's backward (gradients in flight)
    bwd_peak_s: float
    ckpt_b: float              # what gradient checkpointing keeps per layer: the layer input


class Tracer:
    """Walks one decoder layer's forward (transformers 5.x modeling code) and records saved storages."""

    def __init__(self, prof: ModelProfile, ctx: Ctx, kind: LayerKind, x_requires_grad: bool = True) -> None:
        self.p = prof
        self.c = ctx
        self.kind = kind
        self.led = Ledger()
        self.cache = 0.0
        self.x_rg = x_requires_grad
        self.fwd_peak = (0.0, 0.0)
        self.n = 0

    # ---- helpers -----------------------------------------------------------------------------------
    def new(self, name: str, width: float, dt: int, s: float = 0.0) -> T:
        self.n += 1
        return T(f"{name}#{self.n}", width * dt, dt, s * dt)

    def cast(self, x: T, dt: int, name: str) -> T:
        """``x.to(dt)``: a new storage unless the dtype already matches."""
        return x if x.dt == dt else self.new(name, x.b / x.dt, dt, x.s / x.dt)

    def transient(self, b: float, s: float = 0.0) -> None:
        if b + s * 2048 > self.fwd_peak[0] + self.fwd_peak[1] * 2048:
            self.fwd_peak = (b, s)

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
                self.led.save(xin, T(name + ".mean_rstd", 8, FP32))
            return self.new(name + ".out", width, xin.dt)
        # LlamaRMSNorm: x.to(fp32); pow/mean; x * rsqrt(var + eps); weight * normed.to(input_dtype)
        xf = self.cast(x, FP32, name + ".x32")
        if requires_grad:
            self.led.save(xf, T(name + ".rstd", 4 * groups, FP32))
        normed = self.new(name + ".n32", width, FP32)
        y = normed if x.dt == FP32 else self.new(name + ".y", width, x.dt)
        if self.p.family.startswith("gemma"):
            y = normed  # GemmaRMSNorm: (x32 * rsqrt) * (1 + w.float()), then .type_as(x)
        if trainable:
            self.led.save(y)
        self.transient(xf.b + normed.b + y.b)
        return self.new(name + ".out", width, max(c.norm_dt, x.dt))

    def linear(self, x: T, lin: Lin, *, count: int = 1) -> T:
        """One nn.Linear (or bnb Linear4bit), with its LoRA adapter when targeted."""
        c = self.c
        out_w = lin.out_f
        if lin.name in c.quantized:
            # bnb Linear4bit.forward: x.to(compute_dtype) -> MatMul4Bit (saves only the packed weight)
            # -> .to(input dtype)
            xin = self.cast(x, HALF, lin.name + ".x16")
            base = self.new(lin.name + ".out", out_w, HALF)
            res = self.cast(base, x.dt, lin.name + ".out_x")
        elif c.autocast:
            xin = self.cast(x, HALF, lin.name + ".xac")
            base = self.new(lin.name + ".out", out_w, HALF)
            trainable = c.full
            if trainable:
                self.led.save(xin)
                if c.lin_dt != HALF:
                    self.cache += lin.in_f * lin.out_f * HALF * count  # cached bf16 copy of the weight
            elif c.lin_dt != HALF:
                self.cache += lin.in_f * lin.out_f * HALF * count  # fresh cast, saved by mm for grad_input
            res = base
        else:
            xin = x
            base = self.new(lin.name + ".out", out_w, x.dt)
            if c.full:
                self.led.save(x)
            res = base
        if lin.name not in c.targets:
            return res
        # peft lora.Linear.forward: x = x.to(lora_A.dtype); result + lora_B(lora_A(dropout(x))) * scaling
        r = c.rank
        xl = self.cast(x, c.ad, lin.name + ".xl")
        a_in = xl
        if c.lora_p > 0:
            a_in = self.new(lin.name + ".drop", lin.in_f, c.ad)
            self.led.save(self.new(lin.name + ".mask", lin.in_f, BYTE))  # native_dropout's bool mask
        if c.autocast:
            a_in = self.cast(a_in, HALF, lin.name + ".a_ac")
            self.cache += r * (lin.in_f + lin.out_f) * HALF * count
            a_dt = HALF
        else:
            a_dt = c.ad
        self.led.save(a_in, self.new(lin.name + ".lora_a_out", r, a_dt))
        b_out = self.new(lin.name + ".lora_b_out", out_w, a_dt)
        s_dt = max(base.dt, a_dt)
        # result (base) + scaled lora_B output -> sum in the promoted dtype -> .to(result dtype)
        self.transient(res.b + 2 * b_out.b + (out_w * s_dt if s_dt != base.dt else 0))
        return self.new(lin.name + ".lora_out", out_w, res.dt)

    def rotary(self, q: T, width: int, name: str) -> T:
        """apply_rotary_pos_emb: q*cos + rotate_half(q)*sin (cos/sin in the embedding dtype)."""
        if not self.p.rotary:
            return q
        dt = max(q.dt, self.c.xd)
        return self.new(name + ".rot", width, dt)

    def attention_core(self, q: T, k: T, v: T, q_w: int, kv_w: int, heads: int) -> T:
        c = self.c
        kernel = c.kernel
        dt = q.dt
        if c.autocast:
            q, k, v = (self.cast(t, HALF, n) for t, n in ((q, "q16"), (k, "k16"), (v, "v16")))
            dt = HALF
        if kernel == "sdpa":
            if dt == HALF and not c.padding:
                kernel = "flash"
            elif kv_w != q_w and not c.padding:
                kernel = "math"        # fp32 with native GQA: neither flash nor mem-efficient takes it
            else:
                kernel = "efficient"   # padded batch (materialized mask) or fp32 without GQA
        if kernel == "flash":
            # _scaled_dot_product_flash_attention / flash-attn 2: saves q, k, v, out and fp32 logsumexp;
            # the output is (B, S, H, d) in memory, so transpose(1, 2).contiguous() is free
            out = self.new("attn.out", q_w, dt)
            self.led.save(q, k, v, out, T("attn.lse", 4 * heads, FP32))
            return out
        if kernel == "efficient":
            # transformers repeats k/v when a mask is given (no enable_gqa), ATen turns the bool mask
            # into an additive mask in the query dtype, saved by the kernel
            kr = k if kv_w == q_w else self.new("attn.k_rep", q_w, dt)
            vr = v if kv_w == q_w else self.new("attn.v_rep", q_w, dt)
            out = self.new("attn.out", q_w, dt)
            mask = T("attn.mask", 0.0, dt, float(dt)) if c.padding else None
            self.led.save(q, kr, vr, out, T("attn.lse", 4 * heads, FP32), mask)
            return out
        if kernel == "math":
            # _scaled_dot_product_attention_math: q·√scale, repeat_interleave(k)·√scale, v repeated,
            # softmax (saved, S scores per head), output transposed + contiguous for o_proj
            qs = self.new("attn.q_s", q_w, dt)
            ks = self.new("attn.k_s", q_w, dt)
            vr = v if kv_w == q_w else self.new("attn.v_rep", q_w, dt)
            sm = T("attn.softmax", 0.0, dt, float(heads * dt))
            o = self.new("attn.out_c", q_w, dt)
            self.led.save(qs, ks, vr, sm, o)
            self.transient(0.0, 3.0 * heads * dt)
            return o
        # eager_attention_forward: repeat_kv, q@k^T·scale, softmax(dtype=fp32).to(q.dtype), dropout, @v
        kr = k if kv_w == q_w else self.new("attn.k_rep", q_w, dt)
        vr = v if kv_w == q_w else self.new("attn.v_rep", q_w, dt)
        sm32 = T("attn.softmax32", 0.0, FP32, float(heads * FP32))
        probs = T("attn.probs", 0.0, dt, float(heads * dt))
        saved = [q, kr, vr, sm32, probs]
        if c.attn_p > 0:
            saved.append(T("attn.drop_mask", 0.0, BYTE, float(heads)))
            saved.append(T("attn.probs_drop", 0.0, dt, float(heads * dt)))
        if c.padding:
            self.transient(0.0, heads * dt)
        out = self.new("attn.out_c", q_w, dt)
        self.led.save(*saved, out)
        self.transient(0.0, heads * (2 * dt + FP32))
        return out

    def dropout(self, x: T, p: float, name: str) -> T:
        if p <= 0:
            return x
        self.led.save(self.new(name + ".mask", x.b / x.dt, BYTE))
        return self.new(name + ".out", x.b / x.dt, x.dt)

    def act(self, g: T, width: float, name: str) -> T:
        """hidden_act(g): saves its input (silu, gelu) or the intermediates of a Python composite."""
        n = self.p.act_saved
        if n >= 1:
            self.led.save(g)
        for j in range(1, n):
            self.led.save(self.new(f"{name}.act{j}", width, g.dt))
        return self.new(name + ".act_out", width, g.dt)

    def mul(self, a: T, b: T, name: str, save_a: bool = True, save_b: bool = True) -> T:
        if save_a:
            self.led.save(b)   # d/da needs b
        if save_b:
            self.led.save(a)   # d/db needs a
        return self.new(name, a.b / a.dt, max(a.dt, b.dt))

    def add(self, a: T, b: T, name: str) -> T:
        return self.new(name, a.b / a.dt, max(a.dt, b.dt))

    # ---- blocks --------------------------------------------------------------------------------------
    def attention(self, x_n: T) -> T:
        d = self.p.dims
        lins = self.kind.linears
        q_w, kv_w = d.q_size, d.kv_size
        if self.p.mla and d.mla is not None:
            m = d.mla
            q_w = d.num_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
            kv_w = q_w
        ins = [ln for ln in lins if ln.reads == "attn_in"]
        outs = {}
        for ln in ins:
            outs[ln.name] = self.linear(x_n, ln)
        for ln in lins:
            if ln.reads == "latent":  # MLA: kv_b / q_b read a normalised low-rank latent
                lat = self.new(ln.name + ".latent", ln.in_f, x_n.dt)
                self.led.save(T(ln.name + ".latent_n32", ln.in_f * 4, FP32))
                outs[ln.name] = self.linear(lat, ln)
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
        if self.p.qk_norm:
            q = self.norm(q, q_w, "q_norm", groups=d.num_heads)
            k = self.norm(k, kv_w, "k_norm", groups=d.num_kv_heads)
        q = self.rotary(q, q_w, "q")
        k = self.rotary(k, kv_w, "k")
        out = self.attention_core(q, k, v, q_w, kv_w, d.num_heads)
        o_lin = next((ln for ln in lins if ln.reads == "attn_out"), None)
        if o_lin is None:
            return out
        return self.linear(out, o_lin)

    def mlp(self, x_n: T, lins: Iterable[Lin], inter: int, name: str) -> T:
        lins = list(lins)
        ins = [ln for ln in lins if ln.reads.endswith("_in")]
        outs = [ln for ln in lins if ln.reads.endswith("_out")]
        gate = next((ln for ln in ins if ln.name in ("gate_proj", "w1")), None)
        up = next((ln for ln in ins if ln.name in ("up_proj", "w3")), None)
        if self.p.mlp == "gated":
            if gate is not None and up is not None:
                g = self.linear(x_n, gate)
                u = self.linear(x_n, up)
            else:  # fused gate_up_proj: gate and up are views of one output, saving either keeps both
                fused = self.linear(x_n, ins[0]) if ins else self.new(name + ".gate_up", 2 * inter, x_n.dt)
                g = u = fused
            a = self.act(g, inter, name)
            prod = self.mul(a, u, name + ".prod")
        else:
            fc1 = ins[0] if ins else None
            g = self.linear(x_n, fc1) if fc1 else self.new(name + ".fc1", inter, x_n.dt)
            prod = self.act(g, inter, name)
        self.transient(prod.b * 2)
        if not outs:
            return self.new(name + ".out", self.p.dims.hidden_size, prod.dt)
        return self.linear(prod, outs[0])

    def moe(self, x_n: T) -> T:
        """A routed-expert block: router + top-k expert MLPs over the gathered tokens + shared experts."""
        kind = self.kind
        h = self.p.dims.hidden_size
        k = kind.top_k
        E = kind.experts
        router = [ln for ln in kind.linears if ln.reads == "router"]
        for ln in router:
            if self.c.full:
                self.led.save(x_n)
        # router logits .float() -> softmax (saved) -> topk
        self.led.save(T("router.softmax", 4 * E, FP32), T("router.topk", 12 * k, FP32))
        # transformers 5 grouped_mm (or transformers 4's per-expert loop): every token visits top_k experts
        sub = Tracer(self.p, self.c, self.kind, True)
        sub.n = self.n
        xg = sub.new("moe.gathered", h, x_n.dt)
        if self.c.full or any(ln.name in self.c.targets for ln in kind.linears if ln.reads == "expert_in"):
            sub.led.save(xg)
        exp = [ln for ln in kind.linears if ln.reads in ("expert_in", "expert_out")]
        eo = sub.mlp(xg, [Lin(ln.name, ln.in_f, ln.out_f, 1, ln.reads.replace("expert", "mlp"), ln.bias)
                          for ln in exp], kind.intermediate, "expert")
        if self.c.full:
            sub.led.save(eo)   # routing-weight multiply saves the expert output when the router trains
        for key, (b, s) in sub.led.saved.items():
            self.led.saved[key] = (b * k, s * k)
        self.cache += sub.cache
        self.n = sub.n + 1
        self.transient(sub.fwd_peak[0] * k, sub.fwd_peak[1] * k)
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
        rg = self.x_rg
        n1 = self.norm(x, h, "n1", requires_grad=rg)
        attn = self.attention(n1)
        attn = self.dropout(attn, self.c.resid_p, "attn_resid")
        is_moe = self.kind.name == "moe"
        dense_lins = [ln for ln in self.kind.linears if ln.reads in ("mlp_in", "mlp_out")]
        if p.parallel:
            # phi / falcon-7b: MLP reads the same norm output; neox / falcon-40b: a second norm of x
            n2 = n1 if p.norms_per_layer == 1 else self.norm(x, h, "n2", requires_grad=rg)
            m = self.moe(n2) if is_moe else self.mlp(n2, dense_lins, self.kind.intermediate, "mlp")
            m = self.dropout(m, self.c.resid_p, "mlp_resid")
            return self.add(self.add(attn, m, "sum1"), x, "layer.out")
        if p.sandwich:
            attn = self.norm(attn, h, "post_attn")
        x2 = self.add(x, attn, "resid1")
        n2 = self.norm(x2, h, "n2")
        m = self.moe(n2) if is_moe else self.mlp(n2, dense_lins, self.kind.intermediate, "mlp")
        if p.sandwich:
            m = self.norm(m, h, "post_mlp")
        m = self.dropout(m, self.c.resid_p, "mlp_resid")
        return self.add(x2, m, "layer.out")


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
    bwd_b, bwd_s = backward_working_set(prof, ctx, kind)
    res = LayerActs(saved_b=b, saved_s=s, input_b=ib, cache_bytes=int(tr.cache), fwd_peak_b=tr.fwd_peak[0],
                    fwd_peak_s=tr.fwd_peak[1], bwd_peak_b=bwd_b, bwd_peak_s=bwd_s,
                    ckpt_b=prof.dims.hidden_size * ctx.xd)
    prof.cache[key] = res
    return res


def backward_working_set(prof: ModelProfile, ctx: Ctx, kind: LayerKind) -> tuple[float, float]:
    """Gradients in flight while one layer runs backward, on top of what it saved (bytes per token).

    The largest moment is the MLP's backward: the gradient of the layer output (h), the gradient of the
    intermediate product, and the two gradients ``mul`` produces for act(gate) and up, each I wide in
    the activation dtype; with fp32 LoRA adapters the adapter path adds the fp32 gradient of its input
    (4 bytes per element of the Linear's input). The RMSNorm backward materialises three fp32 h-wide
    temporaries (pow / mul / sum of its decomposition). Derived from the autograd formulas of mul,
    silu, linear and the norm; compared with the oracle's per-phase peaks in tests/test_memory.py.
    """
    d = prof.dims
    h = d.hidden_size
    inter = kind.intermediate * (kind.top_k or 1)
    gd = max(ctx.xd, HALF if not ctx.autocast else HALF)
    mlp = h * ctx.xd + 3 * inter * gd
    if ctx.targets and ctx.ad == FP32 and not ctx.autocast:
        mlp += 2 * inter * FP32
    norm = 3 * h * FP32 + h * ctx.xd
    return float(max(mlp, norm)), 0.0


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
