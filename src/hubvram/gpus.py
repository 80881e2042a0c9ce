"""The GPU catalog: which accelerators hubvram knows, and how much memory a training process gets on each.

The data lives in ``hubvram/data/gpus.json`` (read with :mod:`importlib.resources`, so it works from a
wheel or a zip). Every entry gives the memory total as the driver reports it (``memory_bytes``), the
runtime context a process loses (``context_bytes``) and what is left to allocate
(``usable_bytes = memory_bytes - context_bytes``); the file's top-level ``"notes"`` state the rule and
where each figure comes from.

Public API::

    load_catalog() -> tuple[GPU, ...]      # every entry, in file order (cached)
    get_gpu("RTX 4090") -> GPU              # by id or alias; case, spaces, '-' and '_' ignored
    default_gpus() -> tuple[GPU, ...]       # the columns of the default fit matrix
    custom_gpu("24GiB") -> GPU              # an ad-hoc device of that (usable) size
    parse_bytes("80 GiB") -> int            # "24GB" = 24 * 10**9, "24GiB" = 24 * 2**30

Errors: :class:`UnknownGPUError` (a :class:`KeyError`) for an id or alias not in the catalog, with close
matches in the message; :class:`MemorySizeError` (a :class:`ValueError`) for a size that cannot be read.
Both carry ``exit_code = 2`` (an input error), as :mod:`hubvram.errors` does.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from importlib import resources

__all__ = [
    "GPU",
    "UnknownGPUError",
    "MemorySizeError",
    "load_catalog",
    "get_gpu",
    "default_gpus",
    "custom_gpu",
    "parse_bytes",
]

_EXIT_INPUT = 2  # same value as hubvram.errors.EXIT_INPUT; kept local so this module needs only stdlib


@dataclass(frozen=True)
class GPU:
    """One accelerator, as one process sees it (one device index)."""

    id: str
    name: str
    vendor: str
    memory_bytes: int
    usable_bytes: int
    context_bytes: int
    bf16: bool
    fp8: bool
    interconnect: str
    aliases: tuple[str, ...] = ()
    default: bool = False
    architecture: str | None = None
    tdp_w: int | None = None
    memory_source: str = ""
    note: str | None = None

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30

    @property
    def usable_gib(self) -> float:
        return self.usable_bytes / 2**30


class UnknownGPUError(KeyError):
    """No catalog entry has that id or alias."""

    exit_code = _EXIT_INPUT

    def __init__(self, query: str, suggestions: tuple[str, ...] = ()) -> None:
        self.query = query
        self.suggestions = suggestions
        msg = f"unknown GPU {query!r}"
        if suggestions:
            msg += "; did you mean " + ", ".join(suggestions) + "?"
        msg += " (see the GPU list, or give a size such as '24GiB' for a custom device)"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class MemorySizeError(ValueError):
    """A memory size that is not ``<number><unit>``."""

    exit_code = _EXIT_INPUT


# --------------------------------------------------------------------------------------------------
# catalog
# --------------------------------------------------------------------------------------------------
_REQUIRED = {
    "id": str, "name": str, "vendor": str, "memory_bytes": int, "usable_bytes": int,
    "context_bytes": int, "bf16": bool, "fp8": bool, "interconnect": str,
}
_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _normalize(text: str) -> str:
    """The lookup key: lower case, without spaces, hyphens and underscores."""
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


def _entry_to_gpu(entry: dict, position: int) -> GPU:
    where = f"gpus.json entry {position} ({entry.get('id', '?')})"
    for key, typ in _REQUIRED.items():
        value = entry.get(key)
        # bool is a subclass of int: reject true/false where a byte count is expected
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ValueError(f"{where}: {key!r} must be {typ.__name__}, got {value!r}")
    if not _ID_RE.match(entry["id"]):
        raise ValueError(f"{where}: id must be lower-case words joined by '-'")
    if entry["memory_bytes"] <= 0 or entry["context_bytes"] < 0:
        raise ValueError(f"{where}: memory_bytes must be > 0 and context_bytes >= 0")
    if entry["usable_bytes"] != entry["memory_bytes"] - entry["context_bytes"]:
        raise ValueError(f"{where}: usable_bytes must equal memory_bytes - context_bytes")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ValueError(f"{where}: aliases must be a list of non-empty strings")
    tdp = entry.get("tdp_w")
    if tdp is not None and (not isinstance(tdp, int) or isinstance(tdp, bool) or tdp <= 0):
        raise ValueError(f"{where}: tdp_w must be a positive integer or null")
    return GPU(
        id=entry["id"],
        name=entry["name"],
        vendor=entry["vendor"],
        memory_bytes=entry["memory_bytes"],
        usable_bytes=entry["usable_bytes"],
        context_bytes=entry["context_bytes"],
        bf16=entry["bf16"],
        fp8=entry["fp8"],
        interconnect=entry["interconnect"],
        aliases=tuple(aliases),
        default=bool(entry.get("default", False)),
        architecture=entry.get("architecture"),
        tdp_w=tdp,
        memory_source=entry.get("memory_source", ""),
        note=entry.get("note"),
    )


def _read_catalog_json() -> dict:
    text = resources.files("hubvram").joinpath("data/gpus.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("gpus"), list):
        raise ValueError("gpus.json: expected an object with a 'gpus' list")
    return doc


@functools.lru_cache(maxsize=None)
def load_catalog() -> tuple[GPU, ...]:
    """Every catalog entry, in file order. Validated once, then cached."""
    doc = _read_catalog_json()
    by_vendor = doc.get("context_bytes_by_vendor", {})
    gpus = tuple(_entry_to_gpu(e, i) for i, e in enumerate(doc["gpus"]))
    owner: dict[str, str] = {}
    for gpu in gpus:
        if gpu.vendor in by_vendor and gpu.context_bytes != by_vendor[gpu.vendor]:
            raise ValueError(f"gpus.json: {gpu.id}: context_bytes differs from the {gpu.vendor} rule")
        for name in (gpu.id, *gpu.aliases):
            key = _normalize(name)
            if key in owner and owner[key] != gpu.id:
                raise ValueError(f"gpus.json: {name!r} of {gpu.id} clashes with {owner[key]}")
            if key in owner and name == gpu.id:
                raise ValueError(f"gpus.json: duplicate id {gpu.id!r}")
            owner[key] = gpu.id
    return gpus


@functools.lru_cache(maxsize=None)
def _index() -> dict[str, GPU]:
    index: dict[str, GPU] = {}
    for gpu in load_catalog():
        for name in (gpu.id, *gpu.aliases):
            index[_normalize(name)] = gpu
    return index


# Prefixes that people (and nvidia-smi / rocm-smi) put before a model name: "NVIDIA GeForce RTX 4090",
# "Tesla T4", "AMD Instinct MI300X", "Intel Gaudi 3".
_PREFIXES = ("nvidia", "geforce", "tesla", "amd", "instinct", "intel", "habana")


def get_gpu(id_or_alias: str) -> GPU:
    """The catalog entry for an id or alias.

    Matching ignores case, spaces, hyphens and underscores (``"RTX 4090"``, ``"rtx_4090"`` and
    ``"rtx4090"`` all find ``rtx-4090``), and a leading vendor/brand word (``"NVIDIA A100"``).
    Raises :class:`UnknownGPUError` (a ``KeyError``) naming close matches.
    """
    if not isinstance(id_or_alias, str):
        raise TypeError(f"GPU id must be a string, not {type(id_or_alias).__name__}")
    index = _index()
    key = _strip_prefixes(_normalize(id_or_alias))
    if key in index:
        return index[key]
    raise UnknownGPUError(id_or_alias, _suggest(key))


def _strip_prefixes(key: str) -> str:
    """Drop leading vendor/brand words from a normalized key, unless that key is itself known."""
    index = _index()
    while key not in index:
        for prefix in _PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key = key[len(prefix):]
                break
        else:
            break
    return key


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _suggest(key: str, limit: int = 5) -> tuple[str, ...]:
    """Catalog ids whose id or aliases resemble the normalized key, best first, without repeats."""
    index = _index()
    ranked: list[str] = []
    if len(key) >= 2:
        # One is a prefix of the other ("l40" / "l40s", "a10g24gb" / "a10g"): the closest guesses.
        related = [k for k in index if len(k) >= 2 and (k.startswith(key) or key.startswith(k))]
        related.sort(key=lambda k: (-_common_prefix(k, key), abs(len(k) - len(key)), k))
        ranked += related
    ranked += difflib.get_close_matches(key, list(index), n=limit * 3, cutoff=0.6)
    if len(key) >= 2:
        # Substring hits anywhere ("100nvl" inside "h100nvl").
        ranked += [k for k in index if key in k or (len(k) >= 3 and k in key)]
    ids: list[str] = []
    for k in ranked:
        gpu_id = index[k].id
        if gpu_id not in ids:
            ids.append(gpu_id)
    return tuple(ids[:limit])


def default_gpus() -> tuple[GPU, ...]:
    """The entries marked ``"default": true`` (the default fit-matrix columns), in catalog order."""
    return tuple(g for g in load_catalog() if g.default)


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------
_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_UNIT_SPELLING = {
    "b": "B", "kb": "KB", "mb": "MB", "gb": "GB", "tb": "TB",
    "kib": "KiB", "mib": "MiB", "gib": "GiB", "tib": "TiB",
}
_SIZE_RE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)\s*$")
_ACCEPTED = "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"


def parse_bytes(text: str) -> int:
    """Read a memory size such as ``24GiB``, ``24GB``, ``80 GiB``, ``24576MiB`` or ``1.5TiB``.

    ``KB/MB/GB/TB`` are powers of 1000 and ``KiB/MiB/GiB/TiB`` powers of 1024 (so ``24GB`` is
    24,000,000,000 bytes and ``24GiB`` is 25,769,803,776); ``B`` is bytes. Units are read without regard
    to case. Arithmetic is exact (decimal); a size that is not a whole number of bytes is rounded down.
    A bare number is rejected, since ``24`` could mean either unit. Raises :class:`MemorySizeError`.
    """
    if not isinstance(text, str):
        raise MemorySizeError(f"memory size must be a string such as '24GiB', not {type(text).__name__}")
    match = _SIZE_RE.match(text)
    if not match:
        raise MemorySizeError(
            f"cannot read memory size {text!r}: write a positive number and a unit, e.g. '24GiB' or "
            f"'80GB' (units: {_ACCEPTED})"
        )
    number, unit = match.group("num"), match.group("unit")
    if not unit:
        raise MemorySizeError(
            f"memory size {text!r} has no unit: write e.g. '{number}GiB' ({number} x 2^30 bytes) or "
            f"'{number}GB' ({number} x 10^9 bytes)"
        )
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise MemorySizeError(f"unknown unit {unit!r} in memory size {text!r} (units: {_ACCEPTED})")
    try:
        value = (Decimal(number) * factor).to_integral_value(rounding=ROUND_FLOOR)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only plain decimals
        raise MemorySizeError(f"cannot read memory size {text!r}") from exc
    if value <= 0:
        raise MemorySizeError(f"memory size {text!r} must be greater than zero")
    return int(value)


def custom_gpu(memory: str, *, bf16: bool = True, fp8: bool = False) -> GPU:
    """An ad-hoc device with ``memory`` of memory, e.g. ``custom_gpu("24GiB")``.

    A custom size is taken as **usable** memory: ``usable_bytes == memory_bytes`` and
    ``context_bytes == 0`` (no context is subtracted; give the size your process can really allocate).
    The id is ``custom-`` plus the size as written, lower case and without spaces
    (``"24 GiB"`` -> ``custom-24gib``). bf16 is assumed available and fp8 not, unless told otherwise.
    """
    size = parse_bytes(memory)
    number, unit = _SIZE_RE.match(memory).group("num", "unit")  # parse_bytes accepted it
    label = f"{number} {_UNIT_SPELLING[unit.lower()]}"
    return GPU(
        id="custom-" + f"{number}{unit}".lower(),
        name=f"Custom ({label})",
        vendor="custom",
        memory_bytes=size,
        usable_bytes=size,
        context_bytes=0,
        bf16=bf16,
        fp8=fp8,
        interconnect="unknown",
        aliases=(),
        default=False,
        memory_source=f"given by the user as {memory.strip()!r}; taken as usable memory",
    )
