"""Property-based fuzzing (hypothesis) of the safetensors header parser and the config.json pipeline.

Inputs are structured: near-valid headers (a correct layout, then 0-3 targeted mutations) and real configs from
fixtures/hub-snapshots with hostile values spliced in, plus some raw bytes. Properties:

* nothing raises but the project's own :class:`~hubvram.errors.HubvramError` subclasses;
* a header that passes validation tiles its byte buffer (each tensor starts where the previous ended and holds
  exactly numel x bits / 8 bytes), and the reference implementation (the ``safetensors`` library) accepts the
  same file and reads the same tensors;
* a config that passes gives positive dimensions, non-negative integer counts that add up (by group, by dtype),
  and an inventory of non-negative integer shapes.

Examples are derandomized (the same inputs every run, CI stays fast and stable); each one is counted in the
`hostile:` summary line. The whole module runs in well under 30 s on two cores.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hostile_stats
from helpers import SNAPSHOTS
from hubvram.architecture import describe
from hubvram.config import dims_from_config, load_config_bytes
from hubvram.errors import HubvramError
from hubvram.inventory import tensors_from_config
from hubvram.metadata import DTYPE_BITS, Metadata, Provenance, TensorInfo
from hubvram.safetensors import MAX_HEADER_BYTES, header_length, parse_header

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
DTYPES = sorted(DTYPE_BITS)
PROV = Provenance(config="fuzz", tensors="fuzz", revision="fuzz")


def _run(fn, *args: Any) -> Any:
    """fn(*args); a HubvramError is an answer (None), anything else a crash (counted, then raised)."""
    try:
        return fn(*args)
    except HubvramError:
        return None
    except BaseException:
        hostile_stats.add("crashes")
        raise


# --- safetensors headers -----------------------------------------------------------------------------------------
NAMES = st.one_of(
    st.sampled_from(["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.qweight",
                     "model.layers.1.mlp.experts.gate_up_proj_blocks", "model.layers.0.mlp.experts.0.w1.weight",
                     "lm_head.weight", "model.embed_tokens.weight", "model.norm.weight", "a.bias", "x.inv_freq",
                     "model.layers.0.self_attn.o_proj.weight_scale_inv", "__metadata__", "", "\ud800"]),
    st.text(max_size=12))
GOOD_DIM = st.integers(0, 12)
BAD_VALUE = st.one_of(st.sampled_from([-1, 2**31, 2**62, 2**63, 2**64, 10**30, 1.0, 0.5, True, None, "1", [], {}]),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3))


@st.composite
def near_valid_header(draw) -> tuple[bytes, int | None]:
    """(header JSON bytes, file size or None): a correct layout in a random order, then mutations."""
    n = draw(st.integers(0, 6))
    tensors = []
    for _ in range(n):
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(GOOD_DIM, max_size=4))
        if (math.prod(shape) * DTYPE_BITS[dtype]) % 8:
            shape = shape + [2]  # F4/F6: an even element count fills whole bytes (x 2... x 8 for F6 below)
            if (math.prod(shape) * DTYPE_BITS[dtype]) % 8:
                shape = shape + [4]
        tensors.append([draw(NAMES), dtype, shape])
    order = draw(st.permutations(list(range(n))))
    pos, entries = 0, {}
    for i in order:
        name, dtype, shape = tensors[i]
        size = math.prod(shape) * DTYPE_BITS[dtype] // 8
        entries[i] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    pairs = [(tensors[i][0], entries[i]) for i in range(n)]
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), ("__metadata__", draw(st.one_of(
            st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
            st.dictionaries(st.text(max_size=4), BAD_VALUE, max_size=2), BAD_VALUE))))
    for _ in range(draw(st.integers(0, 3))):
        if not pairs:
            break
        k = draw(st.integers(0, len(pairs) - 1))
        name, entry = pairs[k]
        entry = json.loads(json.dumps(entry)) if isinstance(entry, dict) else entry
        what = draw(st.sampled_from(["dtype", "dim", "offset", "drop-key", "not-object", "duplicate", "swap",
                                     "shape-type", "offsets-type"]))
        if what == "duplicate":
            pairs.insert(draw(st.integers(0, len(pairs))), (name, entry))
            continue
        if what == "swap" and len(pairs) > 1:
            j = draw(st.integers(0, len(pairs) - 1))
            pairs[k], pairs[j] = (pairs[k][0], pairs[j][1]), (pairs[j][0], pairs[k][1])
            continue
        if not isinstance(entry, dict):
            continue
        if what == "dtype":
            entry["dtype"] = draw(st.one_of(st.sampled_from(DTYPES), BAD_VALUE))
        elif what == "dim" and isinstance(entry.get("shape"), list) and entry["shape"]:
            entry["shape"][draw(st.integers(0, len(entry["shape"]) - 1))] = draw(st.one_of(GOOD_DIM, BAD_VALUE))
        elif what == "offset" and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2 \
                and all(type(o) is int for o in entry["data_offsets"]):
            entry["data_offsets"][draw(st.integers(0, 1))] += draw(st.sampled_from([-8, -1, 1, 2, 8, 2**64]))
        elif what == "drop-key":
            entry.pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])), None)
        elif what == "not-object":
            entry = draw(BAD_VALUE)
        elif what == "shape-type":
            entry["shape"] = draw(BAD_VALUE)
        elif what == "offsets-type":
            entry["data_offsets"] = draw(st.one_of(BAD_VALUE, st.lists(st.integers(-2, 40), max_size=3)))
        pairs[k] = (name, entry)
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
    raw = text.encode()
    raw += b" " * draw(st.sampled_from([0, 0, (-len(raw)) % 8, 3]))
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "bad-utf8", "nan"]))
    if damage == "truncate" and raw:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1:]
    elif damage == "bad-utf8":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + raw[i:]
    elif damage == "nan":
        raw = raw.replace(b"[", b"[NaN,", 1)
    file_size = draw(st.one_of(st.none(), st.just(8 + len(raw) + pos),
                               st.integers(0, 8 + len(raw) + pos + 16)))
    return raw, file_size


def _check_header(raw: bytes, file_size: int | None) -> None:
    header = _run(lambda: parse_header(raw, file="f.safetensors", model="m", file_size=file_size))
    if header is None:
        return
    obj = json.loads(raw)  # it parsed: it is JSON
    pos = 0
    for t in header.tensors:  # file order: each tensor starts where the previous one ended
        assert t.dtype in DTYPE_BITS and all(type(d) is int and d >= 0 for d in t.shape)
        assert obj[t.name]["data_offsets"] == [pos, pos + t.nbytes]
        assert t.numel * DTYPE_BITS[t.dtype] == 8 * t.nbytes
        pos += t.nbytes
    assert pos == header.data_bytes and len(header.tensors) == len(obj) - ("__metadata__" in obj)
    if file_size is not None:
        assert 8 + len(raw) + pos <= file_size
    if pos <= 1 << 20:  # the reference implementation reads the same file the same way
        ref = safetensors.deserialize(struct.pack("<Q", len(raw)) + raw + bytes(pos))
        assert sorted((name, d["dtype"], tuple(d["shape"])) for name, d in ref) == \
            sorted((t.name, t.dtype, t.shape) for t in header.tensors)


@settings(FUZZ, max_examples=1500)
@given(near_valid_header())
def test_fuzz_near_valid_headers(case):
    hostile_stats.add("fuzz_cases")
    _check_header(*case)


@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(0, 400)))
def test_fuzz_header_bytes(raw, file_size):
    hostile_stats.add("fuzz_cases")
    _check_header(raw, file_size)


@settings(FUZZ, max_examples=300)
@given(st.binary(min_size=0, max_size=12), st.one_of(st.none(), st.integers(-1, 2**64)))
def test_fuzz_header_length(prefix, file_size):
    hostile_stats.add("fuzz_cases")
    n = _run(lambda: header_length(prefix, file="f.safetensors", file_size=file_size))
    if n is not None:
        assert 0 < n <= MAX_HEADER_BYTES and (file_size is None or n + 8 <= file_size)
        assert n == struct.unpack("<Q", prefix[:8])[0]


# --- config.json -> dims -> inventory -> architecture ---------------------------------------------------------
def _small_base_configs() -> list[dict]:
    out = []
    for path in sorted(SNAPSHOTS.glob("*/*/config*.json")):
        cfg = json.loads(path.read_text())
        if len(tensors_from_config(cfg)[0]) <= 3000:  # keep each example fast
            out.append(cfg)
    return out


BASES = _small_base_configs()
KEYS = sorted({k for cfg in BASES for k in cfg} | {
    "num_hidden_layers", "n_layer", "hidden_size", "n_embd", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "vocab_size", "head_dim", "max_position_embeddings", "tie_word_embeddings",
    "model_type", "architectures", "torch_dtype", "num_local_experts", "num_experts", "n_routed_experts",
    "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts", "shared_expert_intermediate_size",
    "first_k_dense_replace", "decoder_sparse_step", "moe_layer_freq", "mlp_only_layers", "kv_lora_rank",
    "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "num_nextn_predict_layers",
    "quantization_config", "text_config", "multi_query", "new_decoder_architecture", "attention_bias",
    "sliding_window", "partial_rotary_factor", "parallel_attn", "topk_method", "qk_layernorm", "mlp_bias"})
SMALL_INT = st.one_of(st.integers(0, 8), st.sampled_from([-1, 17, 64, 4097, 10**12, 2**63, 2**64]))
JSON_LEAF = st.one_of(SMALL_INT, st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                      st.text(max_size=6), st.sampled_from(["\ud800", "x\udfff"]), st.sampled_from(sorted(
                          {"llama", "qwen2", "qwen2_moe", "qwen3_moe", "mixtral", "deepseek_v3", "phi", "gpt2",
                           "falcon", "gpt_bigcode", "gpt_neox", "gemma2", "RefinedWeb", "fp8", "gptq", "awq",
                           "bitsandbytes", "noaux_tc", "bfloat16", "float8_e4m3fn"})))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS[:40] + ["bits", "quant_method",
                                                                            "weight_block_size", "w_bit"]),
                                                 inner, max_size=3)), max_leaves=6)


@st.composite
def hostile_config(draw) -> bytes:
    cfg = dict(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(KEYS))
        if draw(st.integers(0, 5)) == 0:
            cfg.pop(key, None)
        else:
            cfg[key] = draw(JSON_VALUE)
    if draw(st.integers(0, 9)) == 0:  # a multimodal wrapper around it
        cfg = {"model_type": "llava", "text_config": cfg, "architectures": ["LlavaForConditionalGeneration"]}
    data = json.dumps(cfg, allow_nan=True).encode()
    if draw(st.integers(0, 19)) == 0:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + draw(st.sampled_from([b"", b"\xff", b"}", b"9" * 5000])) + data[i + 1:]
    return data


def _check_config(data: bytes) -> None:
    def pipeline():
        cfg = load_config_bytes(data, model="m")
        dims = dims_from_config(cfg, model="m")
        tensors, notes = tensors_from_config(cfg, model="m")
        arch = describe(Metadata("m", None, "local", cfg, tensors, "config", PROV))
        return dims, tensors, arch

    out = _run(pipeline)
    if out is None:
        return
    dims, tensors, arch = out
    for field in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                  "vocab_size"):
        value = getattr(dims, field)
        assert type(value) is int and value > 0, (field, value)
    assert all(type(d) is int and d >= 0 for t in tensors for d in t.shape)
    c = arch.counts
    for value in (c.total, c.buffers, c.stored_elements, c.stored_bytes, c.quant_side_bytes):
        assert type(value) is int and value >= 0
    assert c.total == sum(t.params for t in arch.tensors)
    assert sum(v for g, v in c.by_group.items() if g != "buffers") == c.total == sum(c.by_dtype.values())
    assert c.stored_elements == sum(t.numel for t in tensors)
    assert all(m.count > 0 and m.in_features > 0 and m.out_features > 0 for m in arch.linears)


@settings(FUZZ, max_examples=1500)
@given(hostile_config())
def test_fuzz_configs(data):
    hostile_stats.add("fuzz_cases")
    _check_config(data)


@settings(FUZZ, max_examples=300)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_fuzz_config_bytes(data):
    hostile_stats.add("fuzz_cases")
    _check_config(data)


# --- headers meet the architecture: odd tensors with a real config -------------------------------------------
QUANT = st.one_of(st.none(), st.fixed_dictionaries({"quant_method": st.sampled_from(["gptq", "awq", "bitsandbytes",
                                                                                  "fp8", "mxfp4"])},
                                                   optional={"bits": SMALL_INT, "load_in_4bit": st.booleans()}))


@settings(FUZZ, max_examples=700)
@given(near_valid_header(), QUANT)
def test_fuzz_headers_through_describe(case, quant):
    hostile_stats.add("fuzz_cases")
    raw, _ = case
    header = _run(lambda: parse_header(raw, file="f.safetensors", model="m"))
    if header is None:
        return
    cfg = json.loads((SNAPSHOTS / "Qwen" / "Qwen2.5-0.5B" / "config.json").read_text())
    if quant is not None:
        cfg["quantization_config"] = quant
    meta = Metadata("m", None, "local", cfg, tuple(TensorInfo(t.name, t.dtype, t.shape) for t in header.tensors),
                    "safetensors", PROV)
    arch = _run(describe, meta)
    if arch is not None:
        assert arch.counts.total == sum(t.params for t in arch.tensors) >= 0
        assert arch.counts.stored_elements == sum(t.numel for t in header.tensors)
