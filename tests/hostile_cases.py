"""Hostile inputs for tests/test_hostile_input.py: model references, config.json files, safetensors files, indexes.

Each case is ``name -> (bytes, expected message)``; the message is what follows ``<model>: <file>: `` in the CLI's
one-line error. Built from the real Qwen2.5-0.5B config (tied embeddings, one model.safetensors).
"""

from __future__ import annotations

import json
import struct

from helpers import SNAPSHOTS

BASE = json.loads((SNAPSHOTS / "Qwen" / "Qwen2.5-0.5B" / "config.json").read_text())
W = "model.layers.0.mlp.up_proj.weight"


def config(**changes) -> bytes:
    """BASE with keys replaced (``...`` deletes a key)."""
    cfg = dict(BASE)
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return json.dumps(cfg).encode()


def config_with_literal(key: str, literal: bytes) -> bytes:
    """BASE with ``key`` set to a raw JSON literal (NaN, Infinity, a 5000-digit number...)."""
    text = config(**{key: 12345678987654321})
    return text.replace(b"12345678987654321", literal)


MOE = dict(model_type="qwen2_moe", num_experts=4, moe_intermediate_size=64, num_experts_per_tok=2)
DSV3 = dict(model_type="deepseek_v3", n_routed_experts=4, moe_intermediate_size=64, num_experts_per_tok=2)

CONFIGS: dict[str, tuple[bytes, str]] = {
    "not-json": (b"{nope", "not JSON (Expecting property name enclosed in double quotes)"),
    "empty-file": (b"", "not JSON (Expecting value)"),
    "array": (b"[1, 2]", "a JSON list, not an object"),
    "string": (b'"llama"', "a JSON str, not an object"),
    "utf-16": (json.dumps(BASE).encode("utf-16"), "not valid UTF-8"),
    "invalid-utf8": (b'{"model_type": "\xff\xfe"}', "not valid UTF-8"),
    "deeply-nested": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not JSON (too deeply nested)"),
    "deeply-nested-array": (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON (too deeply nested)"),
    "5000-digit-number": (config_with_literal("hidden_size", b"9" * 5000), "not JSON (a number literal is too long)"),
    "missing-layers": (config(num_hidden_layers=...), "missing num_hidden_layers / n_layer"),
    "missing-hidden": (config(hidden_size=...), "missing hidden_size / n_embd"),
    "missing-vocab": (config(vocab_size=...), "missing vocab_size / padded_vocab_size"),
    "null-vocab": (config(vocab_size=None), "missing vocab_size / padded_vocab_size"),
    "zero-layers": (config(num_hidden_layers=0), "num_hidden_layers must be positive, got 0"),
    "negative-hidden": (config(hidden_size=-896), "hidden_size must be positive, got -896"),
    "negative-vocab": (config(vocab_size=-1), "vocab_size must be positive, got -1"),
    "string-heads": (config(num_attention_heads="14"), "num_attention_heads must be an integer, got '14'"),
    "float-hidden": (config(hidden_size=896.5), "hidden_size must be an integer, got 896.5"),
    "bool-layers": (config(num_hidden_layers=True), "num_hidden_layers must be an integer, got true"),
    "list-layers": (config(num_hidden_layers=[24]), "num_hidden_layers must be an integer, got [24]"),
    "object-layers": (config(num_hidden_layers={"n": 24}), 'num_hidden_layers must be an integer, got {"n": 24}'),
    "10^12-layers": (config(num_hidden_layers=10**12),
                     "num_hidden_layers=1000000000000 is beyond any real model (limit 4096)"),
    "2^64-vocab": (config(vocab_size=2**64), "vocab_size=18446744073709551616 is beyond any real model (limit 16777216)"),
    "1e300-hidden": (config(hidden_size=1e300),
                     "hidden_size=100000000000000005250476025520442024870… is beyond any real model (limit 1048576)"),
    "NaN-hidden": (config_with_literal("hidden_size", b"NaN"), "hidden_size must be an integer, got NaN"),
    "Infinity-layers": (config_with_literal("num_hidden_layers", b"Infinity"),
                        "num_hidden_layers must be an integer, got Infinity"),
    "-Infinity-heads": (config_with_literal("num_attention_heads", b"-Infinity"),
                        "num_attention_heads must be an integer, got -Infinity"),
    "1e400-hidden": (config_with_literal("hidden_size", b"1e400"), "hidden_size must be an integer, got Infinity"),
    "tie-string": (config(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false, got 'yes'"),
    "heads-beyond-hidden": (config(num_attention_heads=1024, num_key_value_heads=2),
                            "num_attention_heads=1024 is larger than hidden_size=896 (head_dim would be 0)"),
    "head-dim-zero": (config(head_dim=0), "head_dim must be positive, got 0"),
    "huge-moe": (config(**{**MOE, "num_experts": 65536, "num_hidden_layers": 4096}),
                 "65536 experts in each of 4096 MoE layers is beyond any real model (limit 131072 expert blocks)"),
    "shared-experts-string": (config(**DSV3, n_shared_experts="x"), "n_shared_experts must be an integer, got 'x'"),
    "shared-experts-negative": (config(**DSV3, n_shared_experts=-3), "n_shared_experts must be positive, got -3"),
    "mlp-only-int": (config(**MOE, mlp_only_layers=3), "mlp_only_layers must be a list of layer numbers, got 3"),
    "mlp-only-nested": (config(**MOE, mlp_only_layers=[[1]]),
                        "mlp_only_layers must be a list of layer numbers, got [[1]]"),
    "sparse-step-string": (config(**MOE, decoder_sparse_step="x"), "decoder_sparse_step must be an integer, got 'x'"),
    "first-dense-list": (config(**DSV3, first_k_dense_replace=[1]),
                         "first_k_dense_replace must be an integer, got [1]"),
    "fp8-block-zero": (config(quantization_config={"quant_method": "fp8", "weight_block_size": [0, 128]}),
                       "quantization_config.weight_block_size must be two positive integers, got [0, 128]"),
    "fp8-block-string": (config(quantization_config={"quant_method": "fp8", "weight_block_size": "ab"}),
                         "quantization_config.weight_block_size must be two positive integers, got 'ab'"),
    "gptq-bits-string": (config(quantization_config={"quant_method": "gptq", "bits": "x"}),
                         "quantization_config.bits must be an integer from 1 to 32, got 'x'"),
    "gptq-bits-huge": (config(quantization_config={"quant_method": "gptq", "bits": 10**9}),
                       "quantization_config.bits must be an integer from 1 to 32, got 1000000000"),
    "mtp-string": (config(num_nextn_predict_layers="1"),
                   "num_nextn_predict_layers must be a small integer, got '1'"),
    "kv-lora-string": (config(kv_lora_rank="x"), "kv_lora_rank must be an integer, got 'x'"),
}

#: configs that are odd but harmless: they must be answered (exit 0) with the right count
HARMLESS_CONFIGS: dict[str, bytes] = {
    "architectures-int": config(architectures=5),
    "architectures-object": config(architectures={"a": 1}),
    "torch-dtype-object": config(torch_dtype={"x": 1}),
    "sliding-window-string": config(sliding_window="x"),
    "auto-map": config(auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"}),
    "unknown-keys": config(**{"\u202e": 1, "x" * 10_000: [None] * 1000}),
}


# --- safetensors files ---------------------------------------------------------------------------------------------
def st(header: bytes, data_len: int = 0, declared: int | None = None) -> bytes:
    """A safetensors file: u64 length (``declared`` to lie), header, data_len zero bytes."""
    return struct.pack("<Q", len(header) if declared is None else declared) + header + b"\0" * data_len


def hj(obj) -> bytes:
    return json.dumps(obj).encode()


def one(dtype="F32", shape=(1,), offsets=(0, 4), name=W) -> dict:
    return {name: {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}


T = f"tensor {W!r}: "
HEADERS: dict[str, tuple[bytes, str]] = {
    "length-over-cap": (st(b"{}", declared=200_000_000), "declared header length 200000000 exceeds the "
                                                         "100000000-byte cap"),
    "length-2^64-1": (st(b"{}", declared=2**64 - 1), "declared header length 18446744073709551615 exceeds the "
                                                     "100000000-byte cap"),
    "length-over-file": (st(b"{}", declared=5000), "declared header length 5000 is larger than the file (10 bytes)"),
    "length-zero": (st(b"", declared=0), "declared header length is 0"),
    "shorter-than-prefix": (b"\x01\x02\x03", "file too short for a safetensors header (3 bytes)"),
    "empty-file": (b"", "file too short for a safetensors header (0 bytes)"),
    "invalid-utf8": (st(b'{"a\xff": 1}'), "header is not valid UTF-8 (byte 3)"),
    "not-json": (st(b"{nope"), "header is not JSON (Expecting property name enclosed in double quotes)"),
    "array": (st(b"[1, 2]"), "header is a JSON list, not an object"),
    "deeply-nested": (st(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), "header is not JSON (too deeply nested)"),
    "5000-digit-number": (st(b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', 4),
                          "header is not JSON (a number literal is too long)"),
    "entry-not-object": (st(hj({W: 5})), T + "entry is not an object"),
    "unknown-dtype": (st(hj(one("F128", (1,), (0, 16))), 16), T + "unknown dtype 'F128'"),
    "dtype-not-string": (st(hj(one(7, (1,), (0, 4))), 4), T + "unknown dtype 7"),
    "negative-shape": (st(hj(one(shape=(-1,))), 4), T + "shape must be a list of non-negative integers, got [-1]"),
    "float-shape": (st(hj(one(shape=(1.0,))), 4), T + "shape must be a list of non-negative integers, got [1.0]"),
    "bool-shape": (st(hj(one(shape=(True,))), 4), T + "shape must be a list of non-negative integers, got [true]"),
    "string-shape": (st(hj({W: {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}), 4),
                     T + 'shape must be a list of non-negative integers, got "1"'),
    "NaN-shape": (st(b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', 4),
                  "tensor 'w': shape must be a list of non-negative integers, got [NaN]"),
    "overflowing-shape": (st(hj(one(shape=(2**40, 2**40))), 4), T + "shape [1099511627776, 1099511627776] overflows"),
    "million-huge-dims": (st(hj(one(shape=[2**62] * 100_000)), 4),
                          T + "shape [4611686018427387904, 4611686018427387904, 4611686018427387… overflows"),
    "negative-offset": (st(hj(one(offsets=(-4, 0))), 4),
                        T + "data_offsets must be two non-negative integers, got [-4, 0]"),
    "string-offsets": (st(hj(one(offsets=("0", "4"))), 4),
                       T + 'data_offsets must be two non-negative integers, got ["0", "4"]'),
    "three-offsets": (st(hj(one(offsets=(0, 4, 8))), 8),
                      T + "data_offsets must be two non-negative integers, got [0, 4, 8]"),
    "float-offset": (st(hj(one(offsets=(0, 4.0))), 4),
                     T + "data_offsets must be two non-negative integers, got [0, 4.0]"),
    "offsets-reversed": (st(hj(one(offsets=(4, 0))), 4), T + "data_offsets [4, 0] hold -4 bytes, but F32 x [1] needs 4"),
    "offsets-vs-dtype-x-numel": (st(hj(one(shape=(2,), offsets=(0, 4))), 8),
                                 T + "data_offsets [0, 4] hold 4 bytes, but F32 x [2] needs 8"),
    "overflowing-offset": (st(hj(one(offsets=(2**64, 2**64 + 4))), 4), T + "gap before data_offsets "
                           "[18446744073709551616, 18446744073709551620] (previous tensor ends at 0)"),
    "half-byte": (st(hj(one("F4", (3,), (0, 2))), 2), T + "3 elements of F4 is not a whole number of bytes"),
    "overlap": (st(hj({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}), 12),
                "tensor 'b': data_offsets [4, 12] overlap the previous tensor"),
    "gap": (st(hj({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}), 12),
            "tensor 'b': gap before data_offsets [8, 12] (previous tensor ends at 4)"),
    "same-name-twice": (st(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                           b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', 8),
                        "tensor 'a' appears twice in the header"),
    "tensors-beyond-file": (st(hj(one(shape=(100,), offsets=(0, 400))), 4),
                            "tensors need 505 bytes but the file has 109"),
    "metadata-not-strings": (st(hj({"__metadata__": {"format": 1}})), "__metadata__ must map strings to strings"),
}


def index(weight_map: dict, **extra) -> bytes:
    return json.dumps({"metadata": {"total_size": 4}, "weight_map": weight_map, **extra}).encode()


#: (index bytes, shard files {name: header dict}, expected message about the index)
SHARD_A = "model-00001-of-00002.safetensors"
SHARD_B = "model-00002-of-00002.safetensors"
INDEXES: dict[str, tuple[bytes, dict[str, dict], str]] = {
    "not-json": (b"{nope", {}, "index is not valid JSON"),
    "5000-digit-number": (b'{"weight_map": {"w": "a.safetensors"}, "n": ' + b"9" * 5000 + b"}", {},
                          "index is not valid JSON"),
    "no-weight-map": (b'{"metadata": {}}', {}, "index has no weight_map object"),
    "empty-weight-map": (index({}), {}, "index has no weight_map object"),
    "weight-map-array": (b'{"weight_map": ["a"]}', {}, "index has no weight_map object"),
    "shard-not-a-string": (index({"w": 5}), {}, "index maps 'w' to an unsafe shard name 5"),
    "dot-dot-passwd": (index({"w": "../../etc/passwd"}), {}, "index maps 'w' to an unsafe shard name '../../etc/passwd'"),
    "dot-dot-safetensors": (index({"w": "../x.safetensors"}), {},
                            "index maps 'w' to an unsafe shard name '../x.safetensors'"),
    "absolute": (index({"w": "/etc/passwd"}), {}, "index maps 'w' to an unsafe shard name '/etc/passwd'"),
    "absolute-safetensors": (index({"w": "/tmp/x.safetensors"}), {},
                             "index maps 'w' to an unsafe shard name '/tmp/x.safetensors'"),
    "sneaky-dot-dot": (index({"w": "a/../../b.safetensors"}), {},
                       "index maps 'w' to an unsafe shard name 'a/../../b.safetensors'"),
    "backslash": (index({"w": "..\\..\\x.safetensors"}), {},
                  "index maps 'w' to an unsafe shard name '..\\\\..\\\\x.safetensors'"),
    "empty-name": (index({"w": ""}), {}, "index maps 'w' to an unsafe shard name ''"),
    "python-file": (index({"w": "modeling_evil.py"}), {}, "index maps 'w' to an unsafe shard name 'modeling_evil.py'"),
    "long-name": (index({"w": "x/" * 5000 + "../y.safetensors"}), {},
                  "index maps 'w' to an unsafe shard name '" + ("x/" * 40)[:79] + "…'"),
    "missing-shard": (index({"w": SHARD_A, "v": SHARD_B}), {SHARD_A: {"w": ("F32", (1,))}}, None),
    "shard-lacks-tensor": (index({"w": SHARD_A, "v": SHARD_A}), {SHARD_A: {"w": ("F32", (1,))}},
                           f"index says 'v' is in {SHARD_A}, but that shard does not contain it"),
    "tensor-in-the-other-shard": (index({"w": SHARD_A, "v": SHARD_A}),
                                  {SHARD_A: {"w": ("F32", (1,))}, SHARD_B: {"v": ("F32", (1,))}},
                                  f"index says 'v' is in {SHARD_A}, but that shard does not contain it"),
}

MODEL_REFS: dict[str, tuple[str, str]] = {
    "empty": ("", "hubvram: error: '': empty model reference"),
    "blank": ("   ", "hubvram: error: '   ': empty model reference"),
    "dot-dot": ("../x", "hubvram: error: ../x: no such folder"),
    "three-parts": ("a/b/c", "hubvram: error: a/b/c: not a Hub model id (expected org/name or org/name@revision) "
                             "and not an existing folder"),
    "double-slash": ("org//name", "hubvram: error: org//name: not a Hub model id (expected org/name or "
                                  "org/name@revision) and not an existing folder"),
    "nul": ("org/na\x00me", "hubvram: error: org/na\\x00me: not a Hub model id (expected org/name or "
                            "org/name@revision) and not an existing folder"),
    "escape": ("org/na\x1b[31mme", "hubvram: error: org/na\\x1b[31mme: not a Hub model id (expected org/name or "
                                   "org/name@revision) and not an existing folder"),
    "newline": ("org/na\nme", "hubvram: error: org/na\\nme: not a Hub model id (expected org/name or "
                              "org/name@revision) and not an existing folder"),
    "bidi": ("\u202eorg/name", "hubvram: error: \\u202eorg/name: not a Hub model id (expected org/name or "
                               "org/name@revision) and not an existing folder"),
    "10kB": ("a" * 10_000, "hubvram: error: " + "a" * 119 + "…: not a Hub model id (expected org/name or "
                                                            "org/name@revision) and not an existing folder"),
    "10kB-name": ("org/" + "a" * 10_000, "hubvram: error: org/" + "a" * 115 + "…: not a Hub model id (expected "
                                                                              "org/name or org/name@revision) "
                                                                              "and not an existing folder"),
    "10kB-path": ("/" + "a" * 10_000, "hubvram: error: /" + "a" * 118 + "…: no such folder"),
    "10kB-revision": ("org/name@" + "r" * 10_000, "hubvram: error: org/name@" + "r" * 110 + "…: invalid revision '"
                      + "r" * 119 + "…'"),
    "empty-revision": ("org/name@", "hubvram: error: org/name@: empty revision after '@'"),
    "only-revision": ("@rev", "hubvram: error: @rev: not a Hub model id (expected org/name or org/name@revision) "
                              "and not an existing folder"),
    "two-revisions": ("org/name@a@b", "hubvram: error: org/name@a@b: invalid revision 'a@b'"),
    "revision-dot-dot": ("org/name@../../x", "hubvram: error: org/name@../../x: invalid revision '../../x'"),
    "unknown-user-home": ("~no_such_user_hv/x", "hubvram: error: ~no_such_user_hv/x: no such folder"),
    "file-not-folder": ("/etc/hostname", "hubvram: error: /etc/hostname: no such folder"),
}

# half a surrogate pair: json.loads accepts "\ud800", nothing can print it, the reference implementation refuses it
CONFIGS["lone-surrogate"] = (config_with_literal("architectures", b'["\\ud800Qwen"]'),
                             "not JSON (a \\u escape is half of a surrogate pair)")
HEADERS["lone-surrogate"] = (st(b'{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 4),
                             "header is not JSON (a \\u escape is half of a surrogate pair)")
INDEXES["lone-surrogate"] = (b'{"weight_map": {"w": "\\udc00.safetensors"}}', {}, "index is not valid JSON")
