"""Header parsing: round trips through files written by the safetensors library, and validation."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save, save_file

from hubvram import load_model
from hubvram.errors import HeaderError
from hubvram.safetensors import MAX_HEADER_BYTES, header_length, parse_header

from helpers import header_bytes, write_header_only


def _split(blob: bytes) -> tuple[bytes, int]:
    n = struct.unpack("<Q", blob[:8])[0]
    return blob[8:8 + n], len(blob)


def test_round_trip_library_file():
    arrays = {"model.embed_tokens.weight": np.zeros((10, 4), np.float16),
              "model.norm.weight": np.ones((4,), np.float32),
              "lm_head.weight": np.zeros((10, 4), np.float16),
              "idx": np.arange(3, dtype=np.int64)}
    raw, size = _split(save(arrays, metadata={"format": "pt"}))
    h = parse_header(raw, file="model.safetensors", model="org/m", file_size=size)
    assert h.metadata == {"format": "pt"}
    assert {t.name: (t.dtype, t.shape) for t in h.tensors} == {
        "model.embed_tokens.weight": ("F16", (10, 4)), "model.norm.weight": ("F32", (4,)),
        "lm_head.weight": ("F16", (10, 4)), "idx": ("I64", (3,))}
    assert h.data_bytes == 80 + 16 + 80 + 24
    assert 8 + len(raw) + h.data_bytes == size


def test_header_writer_matches_library_bytes():
    arrays = {"b": np.zeros((3, 5), np.float32), "a": np.zeros((7,), np.float16), "z": np.zeros((5,), np.uint8)}
    blob = save(arrays, metadata={"format": "pt"})
    mine, data_len = header_bytes([("b", "F32", (3, 5)), ("a", "F16", (7,)), ("z", "U8", (5,))], {"format": "pt"})
    assert blob[: len(mine)] == mine and len(blob) == len(mine) + data_len


def test_local_single_file_library_written(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 32, "tie_word_embeddings": True,
           "torch_dtype": "float16"}
    p = "model.layers.0."
    arrays = {"model.embed_tokens.weight": np.zeros((32, 8), np.float16), "model.norm.weight": np.zeros(8, np.float16),
              p + "self_attn.q_proj.weight": np.zeros((8, 8), np.float16),
              p + "self_attn.k_proj.weight": np.zeros((4, 8), np.float16),
              p + "self_attn.v_proj.weight": np.zeros((4, 8), np.float16),
              p + "self_attn.o_proj.weight": np.zeros((8, 8), np.float16),
              p + "mlp.gate_proj.weight": np.zeros((16, 8), np.float16),
              p + "mlp.up_proj.weight": np.zeros((16, 8), np.float16),
              p + "mlp.down_proj.weight": np.zeros((8, 16), np.float16),
              p + "input_layernorm.weight": np.zeros(8, np.float16),
              p + "post_attention_layernorm.weight": np.zeros(8, np.float16)}
    save_file(arrays, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    arch = load_model(str(tmp_path))
    assert arch.counts.total == 32 * 8 + 8 + 64 + 32 + 32 + 64 + 3 * 128 + 16 == 856
    assert arch.counts.by_dtype == {"F16": 856}
    assert arch.metadata.tensors_from == "safetensors"
    assert arch.dims.tied_embeddings and arch.warnings == ()


@pytest.mark.parametrize("prefix,size,message", [
    (b"\x00" * 8, 100, "declared header length is 0"),
    (struct.pack("<Q", MAX_HEADER_BYTES + 1), None, f"declared header length {MAX_HEADER_BYTES + 1} exceeds the "
                                                     f"{MAX_HEADER_BYTES}-byte cap"),
    (struct.pack("<Q", 500), 100, "declared header length 500 is larger than the file (100 bytes)"),
    (b"\x01\x02", None, "file too short for a safetensors header (2 bytes)"),
])
def test_header_length_rejections(prefix, size, message):
    with pytest.raises(HeaderError) as e:
        header_length(prefix, file="model.safetensors", model="org/m", file_size=size)
    assert str(e.value) == f"org/m: model.safetensors: {message}"


def _hdr(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("raw,message", [
    (b"\xff\xfe", "header is not valid UTF-8 (byte 0)"),
    (b"{not json", "header is not JSON (Expecting property name enclosed in double quotes)"),
    (b"[1, 2]", "header is a JSON list, not an object"),
    (_hdr({"w": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}}), "tensor 'w': unknown dtype 'F17'"),
    (_hdr({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}),
     "tensor 'w': shape must be a list of non-negative integers, got [-1]"),
    (_hdr({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}),
     "tensor 'w': shape must be a list of non-negative integers, got [1.5]"),
    (_hdr({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}),
     "tensor 'w': data_offsets [0, 4] hold 4 bytes, but F32 x [2] needs 8"),
    (_hdr({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}),
     "tensor 'b': data_offsets [4, 12] overlap the previous tensor"),
    (_hdr({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}),
     "tensor 'a': gap before data_offsets [4, 12] (previous tensor ends at 0)"),
    (_hdr({"a": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 4]}}),
     "tensor 'a': shape [1099511627776, 1099511627776] overflows"),
    (_hdr({"__metadata__": {"k": 1}}), "__metadata__ must map strings to strings"),
])
def test_parse_header_rejections(raw, message):
    with pytest.raises(HeaderError) as e:
        parse_header(raw, file="model-00001-of-00002.safetensors", model="org/m")
    assert str(e.value) == f"org/m: model-00001-of-00002.safetensors: {message}"


def test_header_larger_than_file_rejected_locally(tmp_path):
    path = tmp_path / "model.safetensors"
    head, _ = header_bytes([("w", "F32", (4,))])
    path.write_bytes(head)  # data section missing
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4,
                                                       "intermediate_size": 8, "num_hidden_layers": 1,
                                                       "num_attention_heads": 1, "vocab_size": 8}))
    with pytest.raises(HeaderError, match=r"model.safetensors: tensors need \d+ bytes but the file has \d+"):
        load_model(str(tmp_path))


# ---- packed quantized checkpoints count real parameters -----------------------------------------------
def _local(tmp_path, cfg, tensors):
    write_header_only(tmp_path / "model.safetensors", tensors)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return load_model(str(tmp_path))


BASE = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 1,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True,
        "torch_dtype": "float16"}


def test_gptq_qweight_counts_unpacked_params(tmp_path):
    cfg = dict(BASE, quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128})
    q = "model.layers.0.self_attn.q_proj."
    arch = _local(tmp_path, cfg, [
        ("model.embed_tokens.weight", "F16", (128256, 4096)),
        (q + "qweight", "I32", (4096 // 8, 4096)), (q + "qzeros", "I32", (32, 4096 // 8)),
        (q + "scales", "F16", (32, 4096)), (q + "g_idx", "I32", (4096,))])
    assert arch.counts.by_dtype == {"F16": 128256 * 4096, "gptq": 4096 * 4096}
    assert arch.counts.quant_side_bytes == 32 * 512 * 4 + 32 * 4096 * 2 + 4096 * 4
    assert [(m.name, m.in_features, m.out_features) for m in arch.linears] == [("q_proj", 4096, 4096)]


def test_bnb_4bit_counts_two_values_per_byte(tmp_path):
    cfg = dict(BASE, quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True})
    q = "model.layers.0.self_attn.q_proj.weight"
    arch = _local(tmp_path, cfg, [
        ("model.embed_tokens.weight", "F16", (128256, 4096)),
        (q, "U8", (4096 * 4096 // 2, 1)), (q + ".absmax", "F32", (4096 * 4096 // 64,)),
        (q + ".quant_map", "F32", (16,)), (q + ".quant_state.bitsandbytes__nf4", "U8", (100,))])
    assert arch.counts.by_dtype == {"F16": 128256 * 4096, "bnb4": 4096 * 4096}
    assert arch.counts.quant_side_bytes == 4096 * 4096 // 64 * 4 + 64 + 100


def test_fp8_scale_inv_is_a_side_tensor(tmp_path):
    cfg = dict(BASE, quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]})
    q = "model.layers.0.self_attn.q_proj."
    arch = _local(tmp_path, cfg, [("model.embed_tokens.weight", "BF16", (128256, 4096)),
                                  (q + "weight", "F8_E4M3", (4096, 4096)), (q + "weight_scale_inv", "F32", (32, 32))])
    assert arch.counts.total == 128256 * 4096 + 4096 * 4096
    assert arch.counts.stored_elements == arch.counts.total + 1024
    assert arch.counts.quant_side_bytes == 4096


def test_mxfp4_blocks_count_two_values_per_byte(tmp_path):
    cfg = dict(BASE, quantization_config={"quant_method": "mxfp4"})
    e = "model.layers.0.mlp.experts."
    arch = _local(tmp_path, cfg, [("model.embed_tokens.weight", "BF16", (128256, 4096)),
                                  (e + "down_proj_blocks", "U8", (32, 2880, 90, 16)),
                                  (e + "down_proj_scales", "U8", (32, 2880, 90))])
    assert arch.counts.by_group["experts"] == 32 * 2880 * 90 * 16 * 2
    assert arch.counts.quant_side_bytes == 32 * 2880 * 90


def test_nesting_is_refused_before_json_recurses():
    from hubvram.jsonlimits import MAX_DEPTH, too_deep

    assert not too_deep("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert too_deep("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert not too_deep('{"a": [1, 2], "b": {"c": [3]}}' * 100)  # many brackets, shallow
    with pytest.raises(HeaderError) as e:
        parse_header(b'{"a":' * 70 + b"1" + b"}" * 70, file="model.safetensors", model="org/m")
    assert str(e.value) == "org/m: model.safetensors: header is not JSON (too deeply nested)"
