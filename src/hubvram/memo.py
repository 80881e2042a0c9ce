"""The metadata memo: :class:`~hubvram.metadata.Metadata` already derived from a commit's files.

Answering DeepSeek-V3 from the HTTP cache means decoding 163 stored header answers and checking 91,991
tensor entries (~1.5 s); the Metadata it gives folds to 1,721 tensor entries, ~150 KB of JSON that reads
in a few milliseconds. Files at a commit never change, so that Metadata stands for the HTTP cache rows it
was derived from for as long as the code that derived it is the same. One file per model and commit::

    <cache_dir>/memo/<org>--<name>@<sha>.json
    {"format": "hubvram-memo/1", "code": "<digest of the modules that turn files into Metadata>",
     "endpoint": "https://huggingface.co", "created": <unix time>, "metadata": {<Metadata's fields>}}

A file made by other code (:data:`CODE_MODULES`), for another endpoint or model spelling, or one that does
not parse and validate is a miss; the next derivation overwrites it. Online, a file older than ``max_age``
is a miss too, so the HTTP cache underneath is revalidated as before; offline any age answers, like the
HTTP cache. Files are 0600 in a 0700 folder, written atomically (temporary file + ``os.replace``), so
concurrent runs never see half a file. ``hubvram cache clear`` removes them with the HTTP rows. Only
Hub metadata at a commit sha is memoized: local folders are read afresh, the bundled snapshot is already
this fast, and nothing is written by a run that did not fetch (or read the HTTP cache) itself.

Standard library only: a pinned revision answered here never imports the HTTP stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from .fileio import atomic_write, private_dir
from .metadata import DTYPE_BITS, SHA_RE, Metadata, Provenance
from .snapshot import tensors_from_json, tensors_to_json
from .sources import cache_root

FORMAT = "hubvram-memo/1"
DIRNAME = "memo"
#: The modules whose code decides what Metadata a commit's files give; the memo is keyed by their bytes.
CODE_MODULES = ("metadata.py", "sources.py", "safetensors.py", "inventory.py", "config.py", "jsonlimits.py",
                "snapshot.py", "memo.py")
_code_digest: str | None = None


def code_digest() -> str | None:
    """sha256 over the source of :data:`CODE_MODULES` (read once per process); None when the sources cannot
    be read (an install without .py files): then there is no memo."""
    global _code_digest
    if _code_digest is None:
        h = hashlib.sha256()
        here = Path(__file__).parent
        try:
            for name in CODE_MODULES:
                h.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
        except OSError:
            _code_digest = ""
        else:
            _code_digest = h.hexdigest()
    return _code_digest or None


def memo_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / DIRNAME


def _path(cache_dir: str | os.PathLike | None, repo_id: str, sha: str) -> Path:
    return memo_dir(cache_dir) / f"{repo_id.replace('/', '--')}@{sha}.json"


def lookup(repo_id: str, sha: str, *, endpoint: str, cache_dir: str | os.PathLike | None = None,
           max_age: float | None = None) -> Metadata | None:
    """The memoized Metadata of ``repo_id`` at commit ``sha``, or None. ``max_age`` (seconds; None: any
    age): older files are a miss, as online reads of the HTTP cache revalidate entries that old."""
    if not SHA_RE.match(sha) or code_digest() is None:
        return None
    try:
        obj = json.loads(_path(cache_dir, repo_id, sha).read_bytes())
        if not (isinstance(obj, dict) and obj.get("format") == FORMAT and obj.get("code") == code_digest()
                and obj.get("endpoint") == endpoint):
            return None
        created = obj.get("created")
        if type(created) not in (int, float) or (max_age is not None and time.time() - created > max_age):
            return None
        meta = metadata_from_json(obj.get("metadata"))
    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None  # absent or unreadable: a miss
    if meta is None or meta.model_id != repo_id or meta.revision != sha:
        return None
    return meta


def store(meta: Metadata, *, endpoint: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """Memoize Hub metadata at a commit sha; False (and nothing written) when it is not that, or the
    folder cannot be written (a read-only cache still answers from the HTTP cache)."""
    if meta.source != "hub" or not meta.revision or not SHA_RE.match(meta.revision) or code_digest() is None:
        return False
    doc = {"format": FORMAT, "code": code_digest(), "endpoint": endpoint, "created": time.time(),
           "metadata": metadata_to_json(meta)}
    path = _path(cache_dir, meta.model_id, meta.revision)
    try:
        private_dir(path.parent)
        # not fsynced: a file lost or cut by a crash is unreadable, i.e. a miss, and is made again
        atomic_write(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"), durable=False)
    except OSError:
        return False
    return True


def remove(cache_dir: str | os.PathLike | None = None, repo_id: str | None = None) -> tuple[int, int]:
    """Remove the memo files (of one model, any spelling, when ``repo_id`` is given): (files, bytes)."""
    paths = files(cache_dir, repo_id)
    n_bytes = 0
    for p in paths:
        try:
            n_bytes += p.stat().st_size
            p.unlink()
        except FileNotFoundError:  # another run removed it meanwhile
            pass
    return len(paths), n_bytes


def files(cache_dir: str | os.PathLike | None = None, repo_id: str | None = None) -> list[Path]:
    """The memo files (of one model, any spelling, when ``repo_id`` is given)."""
    try:
        found = [p for p in memo_dir(cache_dir).iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    if repo_id is not None:
        stem = repo_id.replace("/", "--").lower()
        found = [p for p in found if p.stem.rpartition("@")[0].lower() == stem]
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# Metadata <-> JSON (every field, so that a memoized answer is the answer)
# --------------------------------------------------------------------------------------------------
def metadata_to_json(meta: Metadata) -> dict[str, Any]:
    p = meta.provenance
    return {"model_id": meta.model_id, "revision": meta.revision, "source": meta.source,
            "config": dict(meta.config), "tensors": tensors_to_json(meta.tensors), "tensors_from": meta.tensors_from,
            "provenance": {"config": p.config, "tensors": p.tensors, "revision": p.revision, "recorded": p.recorded,
                           "notes": list(p.notes)},
            "index_total_size": meta.index_total_size, "files": list(meta.files), "warnings": list(meta.warnings)}


def _strings(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ValueError("expected a list of strings")
    return tuple(v)


def _valid_tensor(t: Any) -> bool:
    if type(t) is not list or len(t) not in (3, 4) or type(t[0]) is not str or t[1] not in DTYPE_BITS:
        return False
    shape = t[2]
    if type(shape) is not list or (shape and (min(shape) < 0 or not all(type(d) is int for d in shape))):
        return False  # (min before the type check: a string among ints raises TypeError, a miss too)
    return len(t) == 3 or (type(t[3]) is int and t[3] >= 1)


def metadata_from_json(obj: Any) -> Metadata | None:
    """The inverse of :func:`metadata_to_json`; None for anything malformed."""
    if not isinstance(obj, Mapping):
        return None
    p, tensors = obj["provenance"], obj["tensors"]
    total = obj["index_total_size"]
    if not (isinstance(obj["model_id"], str) and isinstance(obj["revision"], str) and obj["source"] == "hub"
            and isinstance(obj["config"], dict) and isinstance(tensors, list) and all(map(_valid_tensor, tensors))
            and obj["tensors_from"] in ("safetensors", "config") and isinstance(p, dict)
            and all(isinstance(p[k], str) for k in ("config", "tensors", "revision"))
            and (p["recorded"] is None or isinstance(p["recorded"], str))
            and (total is None or (type(total) is int and total >= 0))):
        return None
    return Metadata(model_id=obj["model_id"], revision=obj["revision"], source="hub", config=obj["config"],
                    tensors=tensors_from_json(tensors, fold=False),  # written folded by this very code
                    tensors_from=obj["tensors_from"],
                    provenance=Provenance(config=p["config"], tensors=p["tensors"], revision=p["revision"],
                                          recorded=p["recorded"], notes=_strings(p["notes"])),
                    index_total_size=total, files=_strings(obj["files"]), warnings=_strings(obj["warnings"]))
