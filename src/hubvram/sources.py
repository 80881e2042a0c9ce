"""Model reference -> Metadata, from the Hub, a local folder or the bundled snapshot. The only I/O.

Fetch plan for a Hub repo (each step one request, headers concurrently):
  1. ``/api/models/{id}/revision/{rev}``: the commit sha and the file list;
  2. ``config.json``;
  3. ``model.safetensors.index.json`` when the repo is sharded;
  4. the header of every safetensors file by ``Range`` read (see :mod:`hubvram.hub`).
Repos with only ``pytorch_model*.bin`` get their tensor inventory derived from config.json
(:mod:`hubvram.inventory`); the bin index's ``total_size`` is kept as a cross-check.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .config import load_config_bytes
from .errors import ConfigError, HeaderError
from .inventory import tensors_from_config
from .jsonlimits import too_deep
from .metadata import Metadata, ModelRef, Provenance, TensorInfo, expert_group_name, group_experts
from .safetensors import _SURROGATE_ESCAPE_RE, header_length, header_read_size, parse_header

if TYPE_CHECKING:  # pragma: no cover
    from .hub import HubClient

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
MAX_JSON_BYTES = 50_000_000


# --------------------------------------------------------------------------------------------------
# Index files
# --------------------------------------------------------------------------------------------------
def parse_index(data: bytes, *, model: str, file: str) -> tuple[dict[str, str], int | None]:
    """Validate an index file: ``weight_map`` (tensor -> shard file) and ``metadata.total_size``."""
    try:
        text = data.decode("utf-8")
        if too_deep(text):
            raise RecursionError
        obj = json.loads(text)
        if _SURROGATE_ESCAPE_RE.search(text):  # only a \u escape can make half a surrogate pair (strict UTF-8)
            json.dumps(obj, ensure_ascii=False).encode("utf-8")  # no "\ud800" (half a surrogate pair) anywhere
    except (UnicodeError, ValueError, RecursionError):  # ValueError: JSON, or a 4300+ digit number
        raise HeaderError("index is not valid JSON", model=model, file=file) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("weight_map"), dict) or not obj["weight_map"]:
        raise HeaderError("index has no weight_map object", model=model, file=file)
    wm = obj["weight_map"]
    # the only files a safetensors index may send us to read are safetensors files
    suffix = ".safetensors" if file.endswith(".safetensors.index.json") else ""
    safe: dict[str, bool] = {}  # per shard name, not per tensor: 163 names for 91,991 DeepSeek-V3 tensors
    for name, shard in wm.items():
        ok = safe.get(shard) if isinstance(shard, str) else False
        if ok is None:
            ok = safe[shard] = _safe_filename(shard) and shard.endswith(suffix)
        if not ok:
            raise HeaderError(f"index maps {_clip(name)!r} to an unsafe shard name {_clip(shard)!r}",
                              model=model, file=file)
    total = (obj.get("metadata") or {}).get("total_size") if isinstance(obj.get("metadata"), dict) else None
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        total = None
    return dict(wm), total


def _clip(value: object, n: int = 80) -> object:
    return value[: n - 1] + "…" if isinstance(value, str) and len(value) > n else value


def _safe_filename(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return False
    norm = posixpath.normpath(name)
    return norm == name and not norm.startswith("..") and "/../" not in f"/{norm}/"


def check_index_against_headers(weight_map: Mapping[str, str], headers: Mapping[str, tuple[TensorInfo, ...]],
                                *, model: str, index_file: str) -> None:
    """Every tensor the index names must be in the shard it names."""
    present = {shard: {t.name for t in ts} for shard, ts in headers.items()}
    for name, shard in weight_map.items():
        if name not in present.get(shard, ()):  # shard missing or tensor missing
            raise HeaderError(f"index says {name!r} is in {shard}, but that shard does not contain it",
                              model=model, file=index_file)


# --------------------------------------------------------------------------------------------------
# Local folders
# --------------------------------------------------------------------------------------------------
def _read_local(path: Path, *, model: str, limit: int = MAX_JSON_BYTES) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(f"file is {size} bytes, larger than the {limit}-byte limit", model=model,
                              file=path.name)
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read ({e.strerror})", model=model, file=path.name) from None


def read_local_header(path: Path, *, model: str) -> tuple[TensorInfo, ...]:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            n = header_length(f.read(8), file=path.name, model=model, file_size=size)
            raw = f.read(n)
    except OSError as e:
        raise HeaderError(f"cannot read ({e.strerror})", model=model, file=path.name) from None
    return parse_header(raw, file=path.name, model=model, file_size=size).tensors


def from_local(ref: ModelRef) -> Metadata:
    assert ref.path is not None
    root = ref.path
    model = str(root)
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ConfigError("no config.json in this folder", model=model, file="config.json")
    config = load_config_bytes(_read_local(cfg_path, model=model), model=model)
    idx_path = root / SAFETENSORS_INDEX
    index_total = None
    if idx_path.is_file():
        wm, index_total = parse_index(_read_local(idx_path, model=model), model=model, file=SAFETENSORS_INDEX)
        shards = sorted(set(wm.values()))
        headers = {}
        for shard in shards:
            p = root / shard
            if not p.is_file():
                raise HeaderError(f"index names shard {shard}, which is not in the folder", model=model,
                                  file=SAFETENSORS_INDEX)
            headers[shard] = read_local_header(p, model=model)
        check_index_against_headers(wm, headers, model=model, index_file=SAFETENSORS_INDEX)
        return _from_headers(model, None, "local", config, headers, index_total,
                             Provenance(config=f"config.json in {root}",
                                        tensors=f"safetensors headers of {len(shards)} shard(s) on disk",
                                        revision="local folder"))
    files = sorted(p.name for p in root.glob("*.safetensors") if p.is_file())
    if files:
        headers = {f: read_local_header(root / f, model=model) for f in files}
        return _from_headers(model, None, "local", config, headers, None,
                             Provenance(config=f"config.json in {root}",
                                        tensors=f"safetensors header(s) of {', '.join(files)} on disk",
                                        revision="local folder"))
    bin_map, bin_total = None, None
    if (root / BIN_INDEX).is_file():
        bin_map, bin_total = parse_index(_read_local(root / BIN_INDEX, model=model), model=model, file=BIN_INDEX)
    return derived_from_config(model, None, "local", config, bin_total, bin_map,
                               config_origin=f"config.json in {root}", revision="local folder")


# --------------------------------------------------------------------------------------------------
# Hub
# --------------------------------------------------------------------------------------------------
#: The small files asked for together with the revision lookup (HubClient.repo_info ``prefetch``).
PREFETCH = ("config.json", SAFETENSORS_INDEX)


def from_hub(ref: ModelRef, client: "HubClient", early: Any = None) -> Metadata:
    """Resolve the revision, then the memoized Metadata of that commit (:mod:`hubvram.memo`) or the plan above.
    ``early``: a :class:`hubvram.early.EarlyFetch` of the first round trip, for the client to take."""
    model = ref.repo_id
    more = {"early": early} if early is not None else {}
    info = client.repo_info(model, ref.revision or "main", prefetch=PREFETCH, **more)
    meta = memo_lookup(client, model, info.sha)
    if meta is None:
        meta = _from_hub_files(model, info, client)
        memo_store(client, meta)
    return meta


def _memo_place(client: Any) -> tuple[Any, str] | None:
    """(cache folder, endpoint) of a client that has them, else None (no memo for stand-ins)."""
    cache_dir, endpoint = getattr(client, "cache_dir", None), getattr(client, "endpoint", None)
    return (cache_dir, endpoint) if cache_dir is not None and isinstance(endpoint, str) else None


def memo_lookup(client: Any, model: str, sha: str) -> Metadata | None:
    """The memoized Metadata for ``model`` at ``sha`` from ``client``'s cache; online, no older than its max_age."""
    place = _memo_place(client)
    if place is None:
        return None
    from . import memo

    online = not getattr(client, "offline", True)
    return memo.lookup(model, sha, endpoint=place[1], cache_dir=place[0],
                       max_age=getattr(client, "max_age", None) if online else None)


def memo_store(client: Any, meta: Metadata) -> None:
    place = _memo_place(client)
    if place is not None:
        from . import memo

        memo.store(meta, endpoint=place[1], cache_dir=place[0])


def _from_hub_files(model: str, info: Any, client: "HubClient") -> Metadata:
    sha = info.sha
    files = set(info.files)
    config = load_config_bytes(client.fetch_file(model, sha, "config.json"), model=model)
    origin = f"config.json at {sha[:12]}"
    if SAFETENSORS_INDEX in files:
        raw = client.fetch_file(model, sha, SAFETENSORS_INDEX)
        wm, total = parse_index(raw, model=model, file=SAFETENSORS_INDEX)
        shards = sorted(set(wm.values()))
        missing = [s for s in shards if files and s not in files]
        if missing:
            raise HeaderError(f"index names shard {missing[0]}, which the repo does not have", model=model,
                              file=SAFETENSORS_INDEX)
        by_shard: dict[str, list[str]] = {}
        for name, shard in wm.items():
            by_shard.setdefault(shard, []).append(name)
        got = client.fetch_headers(model, sha, shards,
                                   read_sizes={s: header_read_size(names) for s, names in by_shard.items()})
        headers = {s: parse_header(raw, file=s, model=model, file_size=size).tensors
                   for s, (raw, size) in got.items()}
        check_index_against_headers(wm, headers, model=model, index_file=SAFETENSORS_INDEX)
        return _from_headers(model, sha, "hub", config, headers, total,
                             Provenance(config=origin, revision=sha,
                                        tensors=f"safetensors headers of {len(shards)} shard(s) at {sha[:12]}"),
                             files=tuple(sorted(files)))
    if SAFETENSORS_SINGLE in files:
        raw, size = client.fetch_header(model, sha, SAFETENSORS_SINGLE)
        headers = {SAFETENSORS_SINGLE: parse_header(raw, file=SAFETENSORS_SINGLE, model=model, file_size=size).tensors}
        return _from_headers(model, sha, "hub", config, headers, None,
                             Provenance(config=origin, revision=sha,
                                        tensors=f"safetensors header of model.safetensors at {sha[:12]}"),
                             files=tuple(sorted(files)))
    bin_map, bin_total = None, None
    if BIN_INDEX in files:
        bin_map, bin_total = parse_index(client.fetch_file(model, sha, BIN_INDEX), model=model, file=BIN_INDEX)
    return derived_from_config(model, sha, "hub", config, bin_total, bin_map, config_origin=origin,
                               revision=sha, files=tuple(sorted(files)))


# --------------------------------------------------------------------------------------------------
# Shared assembly
# --------------------------------------------------------------------------------------------------
def _from_headers(model: str, sha: str | None, source: str, config: dict[str, Any],
                  headers: Mapping[str, tuple[TensorInfo, ...]], index_total: int | None,
                  provenance: Provenance, files: tuple[str, ...] = ()) -> Metadata:
    tensors = group_experts(t for shard in sorted(headers) for t in headers[shard])
    return Metadata(model_id=model, revision=sha, source=source, config=config,  # type: ignore[arg-type]
                    tensors=tensors, tensors_from="safetensors", provenance=provenance,
                    index_total_size=index_total, files=files)


def derived_from_config(model: str, sha: str | None, source: str, config: dict[str, Any],
                        index_total: int | None, weight_map: Mapping[str, str] | None = None, *,
                        config_origin: str, revision: str, files: tuple[str, ...] = (),
                        recorded: str | None = None, notes: tuple[str, ...] = (),
                        index_file: str | None = None) -> Metadata:
    """Metadata whose tensor inventory comes from config.json.

    When an index file is at hand (``pytorch_model.bin.index.json`` of a bin-only repo, or the index a
    snapshot entry recorded), the names it lists that the layout rules do not produce are added if they
    are known buffers (rotary ``inv_freq``: fp32, rotary_dim / 2 values), so that its ``total_size`` can
    be checked to the byte; other unknown names are reported.
    """
    index_file = index_file or BIN_INDEX
    tensors, inv_notes = tensors_from_config(config, model=model, fold_experts=True)
    warnings = list(inv_notes)
    if weight_map:
        known = {expert_group_name(t.name) for t in tensors}
        extra = [n for n in weight_map if expert_group_name(n) not in known]
        rot = rotary_dim(config)
        tensors = tensors + tuple(TensorInfo(n, "F32", (rot // 2,)) for n in extra if n.endswith(".inv_freq"))
        unknown = [n for n in extra if not n.endswith(".inv_freq")]
        if unknown:
            warnings.append(f"{index_file} lists {len(unknown)} tensor(s) the config layout does not produce, "
                            f"e.g. {unknown[0]!r}")
    tensors = group_experts(tensors)
    if index_total is not None:
        stored = sum(t.nbytes * t.count for t in tensors)
        if stored != index_total:
            warnings.append(f"{index_file} total_size {index_total} != {stored} bytes derived "
                            "from config.json (the checkpoint may store buffers or a different dtype)")
    return Metadata(model_id=model, revision=sha, source=source, config=config,  # type: ignore[arg-type]
                    tensors=tensors, tensors_from="config",
                    provenance=Provenance(config=config_origin, revision=revision, recorded=recorded,
                                          tensors="derived from config.json by hubvram's layout rules "
                                                  "(no safetensors headers)"
                                                  + (f"; names and total_size checked against {index_file}"
                                                     if weight_map else ""), notes=notes),
                    index_total_size=index_total, files=files, warnings=tuple(warnings))


def rotary_dim(config: Mapping[str, Any]) -> int:
    from .config import dims_from_config
    d = dims_from_config(config, model="?")
    frac = config.get("partial_rotary_factor") or config.get("rotary_pct") or 1.0
    return int(d.head_dim * float(frac))


def default_cache_dir() -> Path:
    """``$HUBVRAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/hubvram``, else ``~/.cache/hubvram``."""
    if os.environ.get("HUBVRAM_CACHE_DIR"):
        return Path(os.environ["HUBVRAM_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "hubvram"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` (``--cache-dir``) when given, else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
