"""The bundled metadata snapshot: ``cache/`` at the repository root, shipped as ``hubvram._snapshot``.

One reviewable JSON file per model (``<org>--<name>.json``), format ``hubvram-snapshot/1``::

    {"format": "hubvram-snapshot/1", "model_id": "org/name", "revision": "<sha>" | null,
     "recorded": "YYYY-MM-DD", "config": {...config.json as published...},
     "config_source": "where config.json was copied from",
     "tensors": [[name, dtype, [shape...]], ...] | null,   # null: derived from config.json on load
                # (a 4th element, count, folds the routed experts of one layer and module: "experts.*")
     "tensors_source": "safetensors headers at <sha>" | "derived from config.json ...",
     "published_total": 8030261248 | null, "published_total_source": "...", "notes": [...],
     "index": {"file": "model.safetensors.index.json", "total_size": 16060522496,
               "weight_map": {tensor name: shard file}} | absent}

``index`` (optional, for entries derived from config.json) is the repo's published index: its names add the
stored buffers the layout rules cannot know of (rotary ``inv_freq``) and its ``total_size`` is checked to the
byte, exactly as for a live ``pytorch_model*.bin`` repo (:func:`hubvram.sources.derived_from_config`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import CacheError
from .metadata import DTYPE_BITS, Metadata, Provenance, TensorInfo, group_experts
from .sources import derived_from_config

FORMAT = "hubvram-snapshot/1"


def filename_for(model_id: str) -> str:
    return model_id.replace("/", "--") + ".json"


def snapshot_dir() -> Path:
    # the package's folder (as importlib.resources.files would give it), without importing importlib.resources
    # (5 ms of start-up: tempfile, shutil, zipfile); importlib.util is loaded by every interpreter already
    import importlib.util

    spec = importlib.util.find_spec("hubvram._snapshot")
    return Path(spec.submodule_search_locations[0])  # type: ignore[union-attr, index]


@lru_cache(maxsize=1)
def available() -> dict[str, str]:
    """Lower-cased model id -> file name for every bundled entry (one directory listing, no parsing)."""
    out = {}
    for p in snapshot_dir().glob("*.json"):
        out[p.stem.replace("--", "/", 1).lower()] = p.name
    return out


def has(model_id: str) -> bool:
    return model_id.lower() in available()


def load(model_id: str) -> Metadata | None:
    name = available().get(model_id.lower())
    if name is None:
        return None
    path = snapshot_dir() / name
    return entry_to_metadata(read_entry(path.read_bytes(), file=name), file=name)


def read_entry(data: bytes, *, file: str) -> dict[str, Any]:
    """Parse and validate one snapshot entry (also used to validate imports)."""
    def fail(msg: str) -> CacheError:
        return CacheError(msg, model="snapshot", file=file)
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise fail("not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise fail(f"not a {FORMAT} entry")
    mid = obj.get("model_id")
    if not isinstance(mid, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", mid):
        raise fail("model_id missing or malformed")
    if not isinstance(obj.get("config"), dict):
        raise fail("config must be an object")
    tensors = obj.get("tensors")
    if tensors is not None:
        if not isinstance(tensors, list):
            raise fail("tensors must be a list or null")
        for t in tensors:
            if (not isinstance(t, list) or len(t) not in (3, 4) or not isinstance(t[0], str)
                    or t[1] not in DTYPE_BITS or not isinstance(t[2], list)
                    or not all(type(d) is int and d >= 0 for d in t[2])
                    or (len(t) == 4 and (type(t[3]) is not int or t[3] < 1))):
                raise fail(f"malformed tensor entry {str(t)[:60]}")
    rev = obj.get("revision")
    if rev is not None and not (isinstance(rev, str) and re.fullmatch(r"[0-9a-f]{40}", rev)):
        raise fail("revision must be a 40-hex commit sha or null")
    index = obj.get("index")
    if index is not None:
        wm = index.get("weight_map") if isinstance(index, dict) else None
        total = index.get("total_size") if isinstance(index, dict) else None
        if (not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items())
                or (total is not None and (type(total) is not int or total < 0))):
            raise fail("index must hold a weight_map of names to files and an integer total_size")
    return obj


def entry_to_metadata(obj: Mapping[str, Any], *, file: str, source: str = "snapshot") -> Metadata:
    mid = obj["model_id"]
    recorded = obj.get("recorded")
    origin = obj.get("config_source") or "bundled snapshot"
    revision = obj.get("revision") or f"bundled snapshot, recorded {recorded}"
    notes = tuple(obj.get("notes") or ())
    if isinstance(obj.get("published_total"), int):
        notes += (f"published total: {obj['published_total']:,} parameters",)
    if obj.get("tensors") is None:
        index = obj.get("index") or {}
        return derived_from_config(mid, obj.get("revision"), source, dict(obj["config"]), index.get("total_size"),
                                   index.get("weight_map"), config_origin=origin, revision=revision,
                                   recorded=recorded, notes=notes, index_file=index.get("file"))
    tensors = tensors_from_json(obj["tensors"])
    return Metadata(model_id=mid, revision=obj.get("revision"), source=source,  # type: ignore[arg-type]
                    config=dict(obj["config"]), tensors=tensors, tensors_from="safetensors",
                    provenance=Provenance(config=origin, tensors=obj.get("tensors_source") or "snapshot",
                                          revision=revision, recorded=recorded, notes=notes))


def tensors_to_json(tensors: Iterable[TensorInfo]) -> list[list[Any]]:
    """``[name, dtype, shape]``, or ``[name, dtype, shape, count]`` for a group of routed experts."""
    return [[t.name, t.dtype, list(t.shape)] + ([t.count] if t.count != 1 else []) for t in tensors]


def tensors_from_json(items: Iterable[Sequence[Any]], *, fold: bool = True) -> tuple[TensorInfo, ...]:
    """The inverse of :func:`tensors_to_json` (items validated by :func:`read_entry`); per-expert lists of
    older entries are folded as a fresh read would fold them (:func:`hubvram.metadata.group_experts`)
    unless ``fold`` is false (items known to be written folded)."""
    tensors = (TensorInfo(t[0], t[1], tuple(t[2]), t[3] if len(t) == 4 else 1) for t in items)
    return group_experts(tensors) if fold else tuple(tensors)


def metadata_to_entry(meta: Metadata, *, recorded: str, config_source: str | None = None,
                      published_total: int | None = None, published_total_source: str | None = None) -> dict:
    return {
        "format": FORMAT,
        "model_id": meta.model_id,
        "revision": meta.revision,
        "recorded": recorded,
        "config_source": config_source or meta.provenance.config,
        "config": dict(meta.config),
        "tensors_source": meta.provenance.tensors,
        "tensors": tensors_to_json(meta.tensors) if meta.tensors_from == "safetensors" else None,
        "published_total": published_total,
        "published_total_source": published_total_source,
        "notes": list(meta.provenance.notes),
    }
