"""Typed pictures of what a model repository holds: references, tensors and metadata.

Only :mod:`hubvram.sources` creates :class:`Metadata` (it does the I/O); everything after it is pure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from .errors import ModelRefError

SourceKind = Literal["hub", "local", "snapshot"]

#: Bits per element of every dtype a safetensors header may name (safetensors 0.6+ spec).
DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

#: config.json ``torch_dtype``/``dtype`` spellings -> safetensors dtype names.
TORCH_DTYPE_TO_ST: Mapping[str, str] = {
    "float32": "F32", "float": "F32", "fp32": "F32",
    "float16": "F16", "half": "F16", "fp16": "F16",
    "bfloat16": "BF16", "bf16": "BF16",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: its name, safetensors dtype and shape; or, with ``count`` > 1, that many routed
    experts' tensors of one layer and module with the same dtype and shape, named with ``*`` in place of
    the expert index (``model.layers.5.mlp.experts.*.gate_proj.weight``: see :func:`group_experts`)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    count: int = 1

    @property
    def numel(self) -> int:
        """Elements of one tensor."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of one tensor."""
        return (self.numel * DTYPE_BITS[self.dtype] + 7) // 8


#: The expert index of a per-expert tensor name (``...mlp.experts.17.w1.weight``; Mixtral's
#: ``block_sparse_moe.experts.7.``): the one index segment :func:`group_experts` folds.
_EXPERT_INDEX_RE = re.compile(r"\.experts\.\d+\.")


def expert_group_name(name: str) -> str:
    """``name`` with its expert index replaced by ``*`` (unchanged if it has none)."""
    return _EXPERT_INDEX_RE.sub(".experts.*.", name, count=1) if ".experts." in name else name


def group_experts(tensors: "Iterable[TensorInfo]") -> tuple[TensorInfo, ...]:
    """Fold the per-expert tensors of each layer and module into one :class:`TensorInfo` with a count.

    DeepSeek-V3 stores 61 layers x 256 experts x 3 projections (x 2 with FP8 scales): 91,991 tensors
    whose names differ only in the expert index. Nothing after the metadata reads that index, and every
    total (parameters, bytes, Linear modules) is a sum, so the model picture keeps one entry per
    (layer, module, dtype, shape) instead: 1,721 entries for DeepSeek-V3, the same counts to the element.
    Other tensors pass through unchanged, in order; a group takes the place of its first member."""
    groups: dict[tuple[str, str, tuple[int, ...]], int] = {}
    for t in tensors:
        key = (expert_group_name(t.name), t.dtype, t.shape)
        groups[key] = groups.get(key, 0) + t.count
    return tuple(TensorInfo(n, d, s, c) for (n, d, s), c in groups.items())


#: A full commit sha, as the Hub writes it (40 lower-case hex digits).
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SINGLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}$")


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for: a Hub repo (with an optional revision) or a local folder."""

    repo_id: str
    revision: str | None = None
    path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def display(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id

    @classmethod
    def parse(cls, text: str, revision: str | None = None) -> "ModelRef":
        """Parse ``org/name``, ``org/name@rev`` or a path to an existing folder."""
        raw = text.strip()
        if not raw:
            raise ModelRefError("empty model reference", model=repr(text))
        try:
            path = Path(raw).expanduser()
            is_dir = path.is_dir()
        except (OSError, RuntimeError):  # a name too long for the file system, an unknown ~user
            path, is_dir = Path(raw), False
        looks_like_path = raw.startswith((".", "/", "~")) or is_dir
        if looks_like_path:
            if not is_dir:
                raise ModelRefError("no such folder", model=_clip(raw))
            return cls(repo_id=path.resolve().name, revision=None, path=path.resolve())
        repo, at, rev = raw.partition("@")
        if at and not rev:
            raise ModelRefError("empty revision after '@'", model=_clip(raw))
        if rev and revision and rev != revision:
            raise ModelRefError(f"two revisions given ({rev!r} and --revision {revision!r})", model=raw)
        rev = rev or revision
        if not (_REPO_RE.match(repo) or _SINGLE_RE.match(repo)) or ".." in repo or repo.endswith((".", "-")):
            raise ModelRefError("not a Hub model id (expected org/name or org/name@revision) "
                                "and not an existing folder", model=_clip(raw))
        if rev is not None and (not _REV_RE.match(rev) or ".." in rev):
            raise ModelRefError(f"invalid revision {_clip(rev)!r}", model=_clip(raw))
        return cls(repo_id=repo, revision=rev or None)


def _clip(text: str, n: int = 120) -> str:
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass(frozen=True)
class Provenance:
    """Where each fact came from, in words a user can check."""

    config: str
    tensors: str
    revision: str
    recorded: str | None = None  # ISO date for snapshot entries
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Metadata:
    """Everything hubvram knows about one checkpoint before any arithmetic."""

    model_id: str
    revision: str | None          # resolved commit sha when known
    source: SourceKind
    config: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    tensors_from: Literal["safetensors", "config"]
    provenance: Provenance
    index_total_size: int | None = None
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
