"""The GPU catalog (src/hubvram/data/gpus.json) and its loader (hubvram.gpus)."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError
from importlib import resources

import pytest

from hubvram.gpus import (
    GPU,
    MemorySizeError,
    UnknownGPUError,
    custom_gpu,
    default_gpus,
    get_gpu,
    load_catalog,
    parse_bytes,
)

MiB = 2**20
GiB = 2**30


def _raw() -> dict:
    return json.loads(resources.files("hubvram").joinpath("data/gpus.json").read_text("utf-8"))


# ---------------------------------------------------------------------------------------------- file
def test_file_shape():
    doc = _raw()
    assert set(doc) >= {"version", "notes", "gpus"}
    assert isinstance(doc["version"], int)
    notes = " ".join(doc["notes"])
    assert "usable_bytes = memory_bytes - context_bytes" in notes
    assert "context_bytes" in notes


def test_every_entry_names_its_memory_source():
    for entry in _raw()["gpus"]:
        assert entry["memory_source"].strip(), entry["id"]


def test_catalog_size_and_required_cards():
    ids = {g.id for g in load_catalog()}
    assert len(ids) >= 24
    required = {
        "t4", "v100-16gb", "v100-32gb", "a10g", "a10", "l4", "rtx-3090", "rtx-4090", "rtx-5090",
        "rtx-a6000", "rtx-6000-ada", "l40s", "a100-40gb", "a100-80gb", "h100-pcie", "h100-80gb",
        "h100-nvl", "h200", "gh200", "b200", "mi250x", "mi300x", "mi325x", "gaudi3",
    }
    assert required <= ids


def test_ids_unique_lowercase_and_typable():
    ids = [g.id for g in load_catalog()]
    assert len(ids) == len(set(ids))
    for gpu_id in ids:
        assert gpu_id == gpu_id.lower()
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", gpu_id), gpu_id


def test_no_alias_resolves_to_two_gpus():
    seen: dict[str, str] = {}
    for gpu in load_catalog():
        for name in (gpu.id, *gpu.aliases):
            key = re.sub(r"[\s_\-]+", "", name.lower())
            assert seen.setdefault(key, gpu.id) == gpu.id, (name, gpu.id, seen[key])


def test_usable_rule_holds_everywhere():
    by_vendor = _raw()["context_bytes_by_vendor"]
    for gpu in load_catalog():
        assert gpu.usable_bytes == gpu.memory_bytes - gpu.context_bytes, gpu.id
        assert gpu.context_bytes == by_vendor[gpu.vendor], gpu.id
        assert 0 < gpu.usable_bytes < gpu.memory_bytes, gpu.id


def test_context_bytes_figures():
    assert get_gpu("h100-80gb").context_bytes == 512 * MiB
    assert get_gpu("mi300x").context_bytes == 512 * MiB
    assert get_gpu("gaudi3").context_bytes == 1 * GiB


# ------------------------------------------------------------------------------------ exact memory
@pytest.mark.parametrize(
    "gpu_id, mib",
    [
        ("t4", 15360),
        ("v100-16gb", 16384),
        ("v100-32gb", 32768),
        ("a10g", 23028),
        ("a10", 23028),
        ("l4", 23034),
        ("rtx-3060", 12288),
        ("rtx-4060-ti-16gb", 16380),
        ("rtx-3090", 24576),
        ("rtx-4090", 24564),
        ("rtx-5090", 32607),
        ("rtx-a6000", 49140),
        ("rtx-6000-ada", 49140),
        ("l40s", 46068),
        ("a100-40gb", 40960),
        ("a100-80gb", 81920),
        ("h100-pcie", 81559),
        ("h100-80gb", 81559),
        ("h100-nvl", 95830),
        ("gh200", 97871),
        ("h200", 143771),
        ("b200", 183359),
    ],
)
def test_nvidia_memory_is_nvidia_smi_total(gpu_id, mib):
    gpu = get_gpu(gpu_id)
    assert gpu.vendor == "nvidia"
    assert gpu.memory_bytes == mib * MiB
    assert f"{mib}MiB" in gpu.memory_source
    assert gpu.usable_bytes == mib * MiB - 512 * MiB


def test_non_nvidia_memory():
    assert get_gpu("mi300x").memory_bytes == 206141652992  # rocm-smi: 192 GiB - 16 MiB
    assert get_gpu("mi250x").memory_bytes == 64 * GiB - 16 * MiB  # one GCD
    assert get_gpu("mi325x").memory_bytes == 256 * GiB
    assert get_gpu("gaudi3").memory_bytes == 128 * GiB
    assert get_gpu("gaudi3").usable_bytes == 127 * GiB


def test_rtx_4090_exact():
    gpu = get_gpu("rtx-4090")
    assert gpu.memory_bytes == 24564 * 2**20
    assert gpu.usable_bytes == 24564 * 2**20 - 512 * 2**20
    assert gpu.name == "NVIDIA GeForce RTX 4090"


# -------------------------------------------------------------------------------- capability flags
@pytest.mark.parametrize("gpu_id", ["t4", "v100-16gb", "v100-32gb"])
def test_pre_ampere_has_no_bf16_or_fp8(gpu_id):
    gpu = get_gpu(gpu_id)
    assert gpu.bf16 is False
    assert gpu.fp8 is False


@pytest.mark.parametrize("gpu_id", ["a10g", "rtx-3090", "a100-40gb", "a100-80gb", "mi250x"])
def test_bf16_without_fp8(gpu_id):
    gpu = get_gpu(gpu_id)
    assert gpu.bf16 is True
    assert gpu.fp8 is False


@pytest.mark.parametrize(
    "gpu_id", ["l4", "rtx-4090", "l40s", "h100-80gb", "h200", "b200", "mi300x", "gaudi3"]
)
def test_fp8_cards(gpu_id):
    gpu = get_gpu(gpu_id)
    assert gpu.bf16 is True
    assert gpu.fp8 is True


def test_all_ampere_and_newer_have_bf16():
    for gpu in load_catalog():
        if gpu.architecture not in ("turing", "volta"):
            assert gpu.bf16, gpu.id


def test_interconnect_vocabulary():
    allowed = {"nvlink", "nvlink-bridge", "pcie", "infinity-fabric", "roce"}
    for gpu in load_catalog():
        assert gpu.interconnect in allowed, gpu.id
    assert get_gpu("h100-80gb").interconnect == "nvlink"
    assert get_gpu("rtx-4090").interconnect == "pcie"
    assert get_gpu("mi300x").interconnect == "infinity-fabric"


# -------------------------------------------------------------------------------------------- lookup
@pytest.mark.parametrize(
    "query, gpu_id",
    [
        ("rtx-4090", "rtx-4090"),
        ("4090", "rtx-4090"),
        ("rtx4090", "rtx-4090"),
        ("RTX 4090", "rtx-4090"),
        ("rtx_4090", "rtx-4090"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("a100", "a100-80gb"),
        ("A100 80GB", "a100-80gb"),
        ("A100-SXM4-40GB", "a100-40gb"),
        ("h100", "h100-80gb"),
        ("H100 SXM", "h100-80gb"),
        ("NVIDIA H100 80GB HBM3", "h100-80gb"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("h100 nvl", "h100-nvl"),
        ("Tesla T4", "t4"),
        ("T4", "t4"),
        ("v100", "v100-16gb"),
        ("A6000", "rtx-a6000"),
        ("RTX 6000 Ada Generation", "rtx-6000-ada"),
        ("AMD Instinct MI300X", "mi300x"),
        ("mi300", "mi300x"),
        ("Gaudi 3", "gaudi3"),
        ("Intel Gaudi3", "gaudi3"),
        ("  L40S  ", "l40s"),
    ],
)
def test_get_gpu_by_id_or_alias(query, gpu_id):
    assert get_gpu(query).id == gpu_id


def test_get_gpu_returns_catalog_object():
    assert get_gpu("4090") is get_gpu("rtx-4090")


def test_unknown_gpu_is_keyerror_with_suggestions():
    with pytest.raises(KeyError) as info:
        get_gpu("rtx-4091")
    err = info.value
    assert isinstance(err, UnknownGPUError)
    assert "rtx-4090" in err.suggestions
    assert str(err).startswith("unknown GPU 'rtx-4091'; did you mean ")
    assert "rtx-4090" in str(err)
    assert err.exit_code == 2


def test_unknown_gpu_suggests_related_ids():
    with pytest.raises(UnknownGPUError) as info:
        get_gpu("h100-94gb-nvl")
    assert "h100-nvl" in info.value.suggestions
    with pytest.raises(UnknownGPUError) as info:
        get_gpu("4060ti")  # 8 GB or 16 GB: deliberately not an alias
    assert "rtx-4060-ti-16gb" in info.value.suggestions


def test_unknown_gpu_without_any_match():
    with pytest.raises(UnknownGPUError) as info:
        get_gpu("zzzzzz")
    assert info.value.suggestions == ()
    assert "did you mean" not in str(info.value)


def test_get_gpu_rejects_non_string():
    with pytest.raises(TypeError):
        get_gpu(4090)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ defaults
def test_default_gpus():
    defaults = default_gpus()
    assert [g.id for g in defaults] == [
        "t4", "a10g", "l4", "rtx-4090", "a100-40gb", "l40s", "a100-80gb", "h100-80gb",
    ]
    ids = {g.id for g in load_catalog()}
    for gpu in defaults:
        assert gpu.id in ids
        assert get_gpu(gpu.id) is gpu


def test_catalog_is_cached_and_frozen():
    assert load_catalog() is load_catalog()
    gpu = get_gpu("t4")
    with pytest.raises(FrozenInstanceError):
        gpu.memory_bytes = 1  # type: ignore[misc]
    assert isinstance(gpu.aliases, tuple)
    assert hash(gpu) == hash(get_gpu("tesla-t4"))


# --------------------------------------------------------------------------------------- parse_bytes
@pytest.mark.parametrize(
    "text, expected",
    [
        ("24GiB", 24 * 2**30),
        ("24GB", 24 * 10**9),
        ("80 GiB", 80 * 2**30),
        ("24576MiB", 24576 * 2**20),
        ("16000MB", 16000 * 10**6),
        ("1.5TiB", 3 * 2**39),
        ("2TB", 2 * 10**12),
        ("512KiB", 512 * 1024),
        ("512KB", 512_000),
        ("1048576B", 2**20),
        ("24gib", 24 * 2**30),
        ("24 gb", 24 * 10**9),
        ("0.5GiB", 2**29),
        (".5 GiB", 2**29),
        ("  40GiB ", 40 * 2**30),
        ("1.1GB", 1_100_000_000),
    ],
)
def test_parse_bytes_exact(text, expected):
    assert parse_bytes(text) == expected


def test_parse_bytes_rounds_fractional_bytes_down():
    assert parse_bytes("0.1KiB") == 102  # 102.4 bytes


def test_parse_bytes_rejects_bare_number():
    with pytest.raises(MemorySizeError, match=r"has no unit.*'24GiB'.*'24GB'"):
        parse_bytes("24")


@pytest.mark.parametrize("text", ["24GX", "24 Gb/s", "24G", "24 gigs"])
def test_parse_bytes_rejects_unknown_units(text):
    with pytest.raises(MemorySizeError, match=r"unknown unit|cannot read"):
        parse_bytes(text)


@pytest.mark.parametrize("text", ["", "   ", "GiB", "-24GiB", "24,000MB", "1e3GB", "24 GiB extra", "1..5GiB"])
def test_parse_bytes_rejects_malformed(text):
    with pytest.raises(MemorySizeError, match="cannot read memory size"):
        parse_bytes(text)


def test_parse_bytes_rejects_zero():
    with pytest.raises(MemorySizeError, match="greater than zero"):
        parse_bytes("0GiB")


def test_parse_bytes_errors_are_valueerrors():
    with pytest.raises(ValueError):
        parse_bytes("24")
    with pytest.raises(MemorySizeError):
        parse_bytes(24)  # type: ignore[arg-type]
    assert MemorySizeError("x").exit_code == 2


# ---------------------------------------------------------------------------------------- custom_gpu
def test_custom_gpu_takes_size_as_usable():
    gpu = custom_gpu("24GiB")
    assert isinstance(gpu, GPU)
    assert gpu.id == "custom-24gib"
    assert gpu.memory_bytes == gpu.usable_bytes == 24 * 2**30
    assert gpu.context_bytes == 0
    assert gpu.vendor == "custom"
    assert gpu.default is False
    assert gpu.name == "Custom (24 GiB)"


@pytest.mark.parametrize(
    "text, gpu_id, size",
    [
        ("80 GiB", "custom-80gib", 80 * 2**30),
        ("24GB", "custom-24gb", 24 * 10**9),
        ("1.5TiB", "custom-1.5tib", 3 * 2**39),
        ("16000MB", "custom-16000mb", 16 * 10**9),
    ],
)
def test_custom_gpu_ids(text, gpu_id, size):
    gpu = custom_gpu(text)
    assert gpu.id == gpu_id
    assert gpu.usable_bytes == size


def test_custom_gpu_flags_and_errors():
    assert custom_gpu("24GiB").bf16 is True
    assert custom_gpu("24GiB").fp8 is False
    assert custom_gpu("16GiB", bf16=False).bf16 is False
    with pytest.raises(MemorySizeError, match="no unit"):
        custom_gpu("24")
