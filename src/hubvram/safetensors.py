"""safetensors header bytes -> validated tensor entries. Pure: no I/O.

File layout (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian unsigned
header length N, then N bytes of UTF-8 JSON mapping tensor names to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the byte buffer after the header) plus an optional
``"__metadata__"`` object of string -> string, then the byte buffer.

The checks follow the reference implementation (safetensors/src/tensor.rs ``validate``): the header
length is capped before anything is allocated, offsets must tile the buffer in order without gaps or
overlaps, and ``end - begin`` must equal ``numel * bits / 8``.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Iterable, Mapping

from .errors import HeaderError
from .jsonlimits import too_deep
from .metadata import DTYPE_BITS, TensorInfo

#: The reference implementation refuses headers above 100,000,000 bytes (MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000
#: What a first ranged read asks for; ~97 % of Hub headers are shorter than 100 kB.
FIRST_READ_BYTES = 100_000
#: Product of a shape must stay below this (2^63): anything larger is corrupt, not a model.
MAX_NUMEL = 2**63 - 1
#: Header bytes one tensor entry takes besides its quoted name, at most in practice:
#: ``:{"dtype":"F8_E4M3","shape":[5 dims],"data_offsets":[13 digits,13 digits]},`` is under 120.
HEADER_ENTRY_BYTES = 128
#: Room for ``__metadata__``, the JSON braces and the space padding to 8 bytes.
HEADER_SLACK_BYTES = 2048


def header_read_size(tensor_names: Iterable[str]) -> int:
    """The first ranged read for a shard whose tensors an index lists: its whole header in the common case.

    An index names every tensor of every shard, so the header length is known to within the dtype/shape/
    offset digits of each entry; we ask for that upper bound (rounded up to 4 KiB) instead of a fixed
    FIRST_READ_BYTES: 4 KiB instead of 100 kB for a Llama-3.1-405B shard, and no second round trip for a
    shard of a large MoE whose header is over 100 kB. A header with unusual ``__metadata__`` that does
    not fit is completed by a second read, as before."""
    n = 8 + HEADER_SLACK_BYTES + sum(len(name.encode("utf-8")) + 2 + HEADER_ENTRY_BYTES for name in tensor_names)
    return min(-(-n // 4096) * 4096, 8 + MAX_HEADER_BYTES)


@dataclass(frozen=True)
class Header:
    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str]
    data_bytes: int  # length of the byte buffer the header describes

    @property
    def file_bytes(self) -> int:
        return 8 + self.header_bytes + self.data_bytes

    header_bytes: int = 0


def header_length(prefix: bytes, *, file: str, model: str | None = None,
                  file_size: int | None = None) -> int:
    """Read and check the 8-byte length prefix. Refuses absurd values before anything is allocated."""
    if len(prefix) < 8:
        raise HeaderError(f"file too short for a safetensors header ({len(prefix)} bytes)", model=model, file=file)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n == 0:
        raise HeaderError("declared header length is 0", model=model, file=file)
    if n > MAX_HEADER_BYTES:
        raise HeaderError(f"declared header length {n} exceeds the {MAX_HEADER_BYTES}-byte cap",
                          model=model, file=file)
    if file_size is not None and n + 8 > file_size:
        raise HeaderError(f"declared header length {n} is larger than the file ({file_size} bytes)",
                          model=model, file=file)
    return n


def parse_header(raw: bytes, *, file: str, model: str | None = None,
                 file_size: int | None = None) -> Header:
    """Validate header JSON bytes (without the 8-byte prefix) and return its tensors in file order."""
    def fail(msg: str) -> HeaderError:
        return HeaderError(msg, model=model, file=file)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"header is not valid UTF-8 (byte {e.start})") from None
    # a lone surrogate can only come from a \\u escape (text is strict UTF-8): without one, skip that check
    hook = _unique_keys if _SURROGATE_ESCAPE_RE.search(text) else _no_duplicates
    if too_deep(text):
        raise fail("header is not JSON (too deeply nested)")
    try:
        obj = json.loads(text, object_pairs_hook=hook)
    except _DuplicateKey as e:
        raise fail(f"tensor {e.args[0]!r} appears twice in the header") from None
    except _LoneSurrogate:
        raise fail("header is not JSON (a \\u escape is half of a surrogate pair)") from None
    except (json.JSONDecodeError, RecursionError) as e:
        msg = getattr(e, "msg", "too deeply nested")
        raise fail(f"header is not JSON ({msg})") from None
    except ValueError:  # int() refuses number literals of more than 4300 digits
        raise fail("header is not JSON (a number literal is too long)") from None
    if not isinstance(obj, dict):
        raise fail(f"header is a JSON {type(obj).__name__}, not an object")

    meta = obj.pop("__metadata__", None)
    meta = {} if meta is None else meta  # null is "no metadata"; [], "" or 0 are not (as the reference)
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise fail("__metadata__ must map strings to strings")

    entries: list[tuple[int, int, TensorInfo]] = []
    for name, spec in obj.items():
        if not isinstance(spec, dict):
            raise fail(f"tensor {name!r}: entry is not an object")
        dtype = spec.get("dtype")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise fail(f"tensor {name!r}: unknown dtype {dtype!r}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise fail(f"tensor {name!r}: shape must be a list of non-negative integers, got {_short(shape)}")
        offsets = spec.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets)):
            raise fail(f"tensor {name!r}: data_offsets must be two non-negative integers, got {_short(offsets)}")
        begin, end = offsets
        numel = 1
        for d in shape:  # stop at the first overflow: never multiply a million huge dims
            numel *= d
            if numel > MAX_NUMEL:
                raise fail(f"tensor {name!r}: shape {_short(shape)} overflows")
        nbits = numel * DTYPE_BITS[dtype]
        if nbits % 8:
            raise fail(f"tensor {name!r}: {numel} elements of {dtype} is not a whole number of bytes")
        if end < begin or end - begin != nbits // 8:
            raise fail(f"tensor {name!r}: data_offsets [{begin}, {end}] hold {end - begin} bytes, "
                       f"but {dtype} x {shape} needs {nbits // 8}")
        entries.append((begin, end, TensorInfo(name, dtype, tuple(shape))))

    entries.sort(key=lambda e: (e[0], e[1]))
    pos = 0
    for begin, end, t in entries:
        if begin < pos:
            raise fail(f"tensor {t.name!r}: data_offsets [{begin}, {end}] overlap the previous tensor")
        if begin > pos:
            raise fail(f"tensor {t.name!r}: gap before data_offsets [{begin}, {end}] (previous tensor ends at {pos})")
        pos = end
    if file_size is not None and 8 + len(raw) + pos > file_size:
        raise fail(f"tensors need {8 + len(raw) + pos} bytes but the file has {file_size}")
    return Header(tensors=tuple(t for _, _, t in entries), metadata=meta, data_bytes=pos,
                  header_bytes=len(raw))


class _DuplicateKey(Exception):
    pass


class _LoneSurrogate(Exception):
    pass


_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json object_pairs_hook: a name given twice is an error (json.loads would keep the last), and so is a
    string that is not Unicode (``"\\ud800"``: json.loads takes it, the reference implementation does not)."""
    for key, value in pairs:
        for s in (key, value) if isinstance(value, str) else (key,):
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise _LoneSurrogate() from None
    return _no_duplicates(pairs)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json object_pairs_hook: a name given twice is an error (json.loads would keep the last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:59] + "…"
