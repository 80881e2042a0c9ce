"""Cache management: what is cached, prefetching, clearing, and a portable archive for air-gapped machines.

Three places answer a model offline, in this order (see :func:`hubvram.api.load_metadata`):

1. the **HTTP cache** ``<cache_dir>/http_cache.sqlite`` (requests-cache, JSON rows; :mod:`hubvram.hub`):
   every model fetched before, at the revision fetched; a branch name resolves to the sha last seen;
2. the **metadata store** ``<cache_dir>/metadata/``: entries merged by ``hubvram cache import``, one
   file per model and commit (``<org>--<name>@<sha>.json``, a ``hubvram-snapshot/1`` entry plus the
   fields that make its answer identical to the Hub's, below) and one small file per branch
   (``<org>--<name>@<branch>.ref``: ``{"sha": ..., "seen": ...}``); files 0600, written atomically;
3. the **bundled snapshot** (``cache/`` in the repository, ``hubvram._snapshot`` in the wheel).

This module reads the HTTP cache with :mod:`sqlite3` and :func:`json.loads` only (rows are JSON, never
pickle) and finds a model's rows by their URLs: ``/api/models/<id>/revision/<rev>`` and
``/<id>/resolve/<sha>/<file>`` (a CDN row is attributed through the redirect history that led to it).

Export archive (``hubvram-export/1``): one gzip member, written with a fixed header (no name, mtime 0),
holding one JSON document::

    {"format": "hubvram-export/1", "created": "<UTC ISO time>", "hubvram": "<version>", "count": N,
     "entries": [{"entry": {<hubvram-snapshot/1 entry + extras>}, "refs": {"main": "<UTC ISO time seen>"},
                  "sha256": "<sha256 of the canonical JSON of {entry, refs}>"}, ...],
     "sha256": "<sha256 of the canonical JSON of the document without this key>"}

Canonical JSON: ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``, UTF-8. Extras in an entry
(``hubvram-snapshot/1`` readers ignore them): ``tensors_from`` ("safetensors" | "config"; ``tensors`` is
then always the full inventory, each layer's routed experts folded into ``[name, dtype, shape, count]``),
``index_total_size``, ``warnings``, ``files``, ``fetched``. ``clear`` also removes the memo files
(:mod:`hubvram.memo`), which are derived from the HTTP rows.
:func:`import_` checks the gzip header, the stream (CRC-32, length, no trailing bytes), the document
checksum, then every entry (checksum, :func:`hubvram.snapshot.read_entry`, a 40-hex revision, the extras'
types, and that it converts to :class:`~hubvram.metadata.Metadata`) before writing anything: a changed or
truncated archive is one :class:`~hubvram.errors.CacheError` and the cache is not touched.

Nothing here imports requests, requests-cache or huggingface_hub at module level: the metadata store
answers offline as fast as the bundled snapshot.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, unquote, urlsplit

from . import memo, snapshot
from .errors import CacheError, HubvramError, InputError, ModelRefError
from .fileio import atomic_write, private_dir
from .metadata import SHA_RE, Metadata, ModelRef
from .sources import cache_root

if TYPE_CHECKING:  # pragma: no cover
    from .hub import HubClient

__all__ = [
    "CacheInfo", "CachedModel", "ClearResult", "ExportResult", "ImportResult", "SnapshotResult", "WarmResult",
    "clear", "export", "import_", "info", "list_models", "snapshot_models", "store_lookup", "warm",
]

HTTP_CACHE_FILE = "http_cache.sqlite"
STORE_DIRNAME = "metadata"
EXPORT_FORMAT = "hubvram-export/1"
#: The 10-byte gzip header :func:`export` writes (deflate, no flags, mtime 0, XFL 0, OS unknown).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
MAX_ARCHIVE_BYTES = 1 << 30          # compressed
MAX_ARCHIVE_JSON_BYTES = 4 << 30     # decompressed (gzip bomb guard)
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_API_RE = re.compile(r"/api/models/(?P<repo>[^/]+(?:/[^/]+)?)/revision/(?P<rev>[^/?#]+)$")
_RESOLVE_RE = re.compile(r"/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_EXTRA_KEYS = ("tensors_from", "index_total_size", "warnings", "files", "fetched")


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def _root(cache_dir: str | os.PathLike | None) -> Path:
    return cache_root(cache_dir)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def _model_stem(model_id: str) -> str:
    return model_id.replace("/", "--")


def _stem_model(stem: str) -> str:
    return stem.replace("--", "/", 1)


# --------------------------------------------------------------------------------------------------
# The metadata store (imported entries)
# --------------------------------------------------------------------------------------------------
def store_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return _root(cache_dir) / STORE_DIRNAME


def _store_files(cache_dir) -> list[Path]:
    d = store_dir(cache_dir)
    try:
        return sorted(p for p in d.iterdir() if not p.name.startswith(".") and p.suffix in (".json", ".ref"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _split_store_name(p: Path) -> tuple[str, str] | None:
    """``org--name@rev.json`` -> (model id, rev); rev is a sha (.json) or a quoted branch (.ref)."""
    stem, at, rev = p.stem.rpartition("@")
    if not at or not stem or not rev:
        return None
    return _stem_model(stem), unquote(rev)


def store_lookup(ref: ModelRef, cache_dir: str | os.PathLike | None = None) -> Metadata | None:
    """Imported metadata for ``ref``: a pinned sha directly; a branch (default ``main``) through the sha
    last seen for it; without a revision and without a ``main`` record, the newest entry of the model."""
    files = _store_files(cache_dir)
    if not files:
        return None
    want = ref.repo_id.lower()
    entries: dict[str, Path] = {}
    branches: dict[str, Path] = {}
    for p in files:
        split = _split_store_name(p)
        if split is None or split[0].lower() != want:
            continue
        (entries if p.suffix == ".json" else branches)[split[1]] = p
    if not entries:
        return None
    rev = ref.revision
    sha = None
    if rev is not None and SHA_RE.match(rev):
        sha = rev
    else:
        refp = branches.get(rev or "main")
        if refp is not None:
            rec = _read_json_file(refp)
            sha = rec.get("sha") if isinstance(rec, dict) else None
        elif rev is None:
            newest = max(entries.items(), key=lambda kv: (_fetched(kv[1]), kv[0]))
            sha = newest[0]
    path = entries.get(sha) if isinstance(sha, str) else None
    if path is None:
        return None
    try:
        entry = snapshot.read_entry(path.read_bytes(), file=path.name)
        return entry_to_metadata(entry, file=path.name, imported=True)
    except (OSError, HubvramError):
        return None  # an unreadable store file is a miss, like an unreadable cache row


def _read_json_file(p: Path) -> Any:
    try:
        return json.loads(p.read_bytes())
    except (OSError, ValueError):
        return None


def _fetched(p: Path) -> str:
    obj = _read_json_file(p)
    return str(obj.get("fetched") or obj.get("recorded") or "") if isinstance(obj, dict) else ""


def entry_to_metadata(entry: Mapping[str, Any], *, file: str, imported: bool = False) -> Metadata:
    """A store/export entry -> Metadata identical to what the Hub answer gave (extras restored)."""
    meta = snapshot.entry_to_metadata(entry, file=file, source="hub")
    changes: dict[str, Any] = {}
    if entry.get("tensors_from") in ("safetensors", "config"):
        changes["tensors_from"] = entry["tensors_from"]
    if "index_total_size" in entry:
        changes["index_total_size"] = entry["index_total_size"]
    if isinstance(entry.get("warnings"), list):
        changes["warnings"] = tuple(entry["warnings"])
    if isinstance(entry.get("files"), list):
        changes["files"] = tuple(entry["files"])
    if imported:
        changes["provenance"] = replace(
            meta.provenance, config=f"{meta.provenance.config} (imported metadata, recorded {entry.get('recorded')})")
    return replace(meta, **changes)


def metadata_to_store_entry(meta: Metadata, *, fetched: dt.datetime | None) -> dict[str, Any]:
    """Metadata from the Hub -> a ``hubvram-snapshot/1`` entry with the extras (full inventory always)."""
    if not meta.revision or not SHA_RE.match(meta.revision):
        raise CacheError("only Hub metadata at a commit sha can be exported", model=meta.model_id)
    when = fetched or _now()
    entry = snapshot.metadata_to_entry(meta, recorded=when.date().isoformat())
    entry["tensors"] = snapshot.tensors_to_json(meta.tensors)
    entry["tensors_from"] = meta.tensors_from
    entry["index_total_size"] = meta.index_total_size
    entry["warnings"] = list(meta.warnings)
    entry["files"] = list(meta.files)
    entry["fetched"] = _iso(when)
    return entry


def _store_entries(cache_dir) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every valid store entry with the branches whose last-seen sha it is: [(entry, {branch: seen})]."""
    files = _store_files(cache_dir)
    refs: dict[tuple[str, str], dict[str, str]] = {}
    for p in files:
        split = _split_store_name(p)
        if p.suffix == ".ref" and split:
            rec = _read_json_file(p)
            if isinstance(rec, dict) and isinstance(rec.get("sha"), str):
                refs.setdefault((split[0].lower(), rec["sha"]), {})[split[1]] = str(rec.get("seen") or "")
    out = []
    for p in files:
        if p.suffix != ".json":
            continue
        try:
            entry = snapshot.read_entry(p.read_bytes(), file=p.name)
        except (OSError, HubvramError):
            continue
        out.append((entry, refs.get((entry["model_id"].lower(), entry.get("revision") or ""), {})))
    return out


# --------------------------------------------------------------------------------------------------
# Reading the HTTP cache (sqlite3 + json only)
# --------------------------------------------------------------------------------------------------
@dataclass
class _Row:
    key: str
    size: int
    created: dt.datetime | None
    expires: dt.datetime | None
    model: str | None = None
    endpoint: str | None = None
    api_rev: str | None = None      # revision asked of /api/models/<id>/revision/<rev>
    api_sha: str | None = None      # sha in that answer
    file_rev: str | None = None     # revision in a resolve URL
    cdn: tuple[str, ...] = ()       # CDN paths this row's request went through


def http_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    return _root(cache_dir) / HTTP_CACHE_FILE


def http_cache_may_have(repo_id: str, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
                        endpoint: str | None = None) -> bool:
    """Whether the HTTP cache holds the revision answer for ``repo_id`` at ``revision`` (default ``main``;
    as spelled: cache keys are URLs), or with ``revision=None`` and an endpoint whose URLs have no exact
    key, any revision answer of ``repo_id``.

    A stdlib-only look (sqlite3, no requests import) that lets offline answers from the metadata store or
    the bundled snapshot skip the HTTP stack when the cache cannot answer; any doubt answers True. The
    exact look is one primary-key read; the fallback scans the rows (~0.1 s per 100 MiB of cache)."""
    from .httpcache import cache_key, default_endpoint

    db = http_cache_path(cache_dir)
    if not db.is_file():
        return False
    base = (endpoint or default_endpoint()).rstrip("/")
    key = cache_key(f"{base}/api/models/{repo_id}/revision/{quote(revision or 'main', safe='')}")
    try:
        con = _connect(db)
        try:
            if key is not None:
                hit = con.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone()
            else:
                hit = con.execute("SELECT 1 FROM responses WHERE instr(value, ?) > 0 LIMIT 1",
                                  (f"/api/models/{repo_id}/revision/",)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return True
    return hit is not None


def _connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, timeout=30)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def _read_rows(db: Path) -> tuple[list[_Row], int, int]:
    """(attributed and orphan rows, number of redirect rows, number of unreadable rows)."""
    if not db.is_file():
        return [], 0, 0
    try:
        con = _connect(db)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "responses" not in tables:
                return [], 0, 0
            raw = con.execute("SELECT key, value, expires FROM responses").fetchall()
            redirects = con.execute("SELECT COUNT(*) FROM redirects").fetchone()[0] if "redirects" in tables else 0
        finally:
            con.close()
    except sqlite3.Error as e:
        raise CacheError(f"the HTTP cache is unreadable ({e})", file=str(db),
                         hint="`hubvram cache clear` removes it; the next online run rebuilds it") from None
    rows, bad = [], 0
    for key, value, expires in raw:
        size = len(value) if value is not None else 0
        try:
            obj = json.loads(value)
            if not isinstance(obj, dict):
                raise ValueError
        except (TypeError, ValueError, RecursionError):
            bad += 1
            rows.append(_Row(key, size, None, None))
            continue
        exp = dt.datetime.fromtimestamp(expires, dt.timezone.utc) if isinstance(expires, (int, float)) else None
        row = _Row(key, size, _parse_time(obj.get("created_at")), exp)
        _attribute(row, obj)
        rows.append(row)
    # CDN-only rows (the request the redirect led to, cached under its own key) belong to the model
    # whose redirect history went there.
    by_cdn = {c: r.model for r in rows if r.model for c in r.cdn}
    for r in rows:
        if r.model is None and r.cdn:
            r.model = next((by_cdn[c] for c in r.cdn if c in by_cdn), None)
    return rows, redirects, bad


def _urls(obj: Mapping[str, Any]) -> list[str]:
    out = []
    for part in (obj, *(obj.get("history") or ())):
        if not isinstance(part, dict):
            continue
        for u in (part.get("url"), (part.get("request") or {}).get("url")):
            if isinstance(u, str):
                out.append(u)
    return out


def _attribute(row: _Row, obj: Mapping[str, Any]) -> None:
    cdn = []
    for url in _urls(obj):
        parts = urlsplit(url)
        path = unquote(parts.path)
        m = _API_RE.search(path)
        if m and row.model is None:
            row.model, row.api_rev = m["repo"], m["rev"]
            row.endpoint = f"{parts.scheme}://{parts.netloc}{path[:m.start()]}"
            row.api_sha = _api_sha(obj)
            continue
        m = _RESOLVE_RE.search(path)
        if m and row.model is None:
            row.model, row.file_rev = m["repo"], m["rev"]
            row.endpoint = f"{parts.scheme}://{parts.netloc}{path[:m.start()]}"
            continue
        if not _RESOLVE_RE.search(path) and not _API_RE.search(path):
            cdn.append(f"{parts.netloc}{parts.path}")
    row.cdn = tuple(dict.fromkeys(cdn))


def _api_sha(obj: Mapping[str, Any]) -> str | None:
    content = obj.get("_content")
    if not isinstance(content, str):
        return None
    try:
        data = json.loads(base64.b64decode(content))
    except (ValueError, TypeError, RecursionError):
        return None
    sha = data.get("sha") if isinstance(data, dict) else None
    return sha if isinstance(sha, str) and SHA_RE.match(sha) else None


# --------------------------------------------------------------------------------------------------
# ls / info
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachedModel:
    """One model in the HTTP cache (``where="http"``) or the metadata store (``where="imported"``)."""

    model_id: str
    where: str
    refs: dict[str, str]              # branch/tag -> commit sha last seen for it
    shas: tuple[str, ...]             # every commit sha held
    entries: int                      # HTTP cache rows, or store files
    size: int                         # bytes
    fetched: dt.datetime | None       # newest entry (last time it was fetched or revalidated online)
    oldest: dt.datetime | None        # oldest entry
    revalidate_after: dt.datetime | None = None  # earliest expiry: past it, online use revalidates (304)
    endpoint: str | None = None

    def as_dict(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or _now()
        d = asdict(self)
        d["shas"] = list(self.shas)
        for k in ("fetched", "oldest", "revalidate_after"):
            d[k] = _iso(getattr(self, k))
        d["age_s"] = None if self.fetched is None else max(0, int((now - self.fetched).total_seconds()))
        return d


def list_models(cache_dir: str | os.PathLike | None = None) -> list[CachedModel]:
    """Every model the HTTP cache or the metadata store holds, sorted by model id (then where)."""
    rows, _, _ = _read_rows(http_cache_path(cache_dir))
    groups: dict[str, list[_Row]] = {}
    for r in rows:
        if r.model:
            groups.setdefault(r.model.lower(), []).append(r)
    out = []
    for rs in groups.values():
        refs_seen: dict[str, tuple[dt.datetime, str]] = {}
        shas: dict[str, None] = {}
        for r in rs:
            if r.api_sha:
                shas[r.api_sha] = None
                if not SHA_RE.match(r.api_rev or ""):
                    t = r.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
                    if r.api_rev not in refs_seen or t >= refs_seen[r.api_rev][0]:
                        refs_seen[r.api_rev] = (t, r.api_sha)  # type: ignore[index]
            if r.file_rev and SHA_RE.match(r.file_rev):
                shas[r.file_rev] = None
        times = [r.created for r in rs if r.created]
        expiries = [r.expires for r in rs if r.expires]
        model = next((r.model for r in rs if r.api_rev), rs[0].model)
        out.append(CachedModel(
            model_id=model or "?", where="http", refs={k: v[1] for k, v in sorted(refs_seen.items())},
            shas=tuple(shas), entries=len(rs), size=sum(r.size for r in rs),
            fetched=max(times) if times else None, oldest=min(times) if times else None,
            revalidate_after=min(expiries) if expiries else None,
            endpoint=next((r.endpoint for r in rs if r.api_rev), None)))
    store: dict[str, list[tuple[dict, dict, Path]]] = {}
    for p in _store_files(cache_dir):
        split = _split_store_name(p)
        if split and p.suffix == ".json":
            entry = _read_json_file(p)
            if isinstance(entry, dict):
                store.setdefault(split[0].lower(), []).append((entry, {}, p))
    for p in _store_files(cache_dir):
        split = _split_store_name(p)
        if split and p.suffix == ".ref" and split[0].lower() in store:
            rec = _read_json_file(p)
            if isinstance(rec, dict) and isinstance(rec.get("sha"), str):
                store[split[0].lower()][0][1][split[1]] = rec["sha"]
    for items in store.values():
        times = [t for e, _, _ in items if (t := _parse_time(e.get("fetched")))]
        out.append(CachedModel(
            model_id=str(items[0][0].get("model_id") or _split_store_name(items[0][2])[0]),  # type: ignore[index]
            where="imported", refs=dict(sorted(items[0][1].items())),
            shas=tuple(str(e.get("revision")) for e, _, _ in items), entries=len(items),
            size=sum(p.stat().st_size for _, _, p in items),
            fetched=max(times) if times else None, oldest=min(times) if times else None))
    return sorted(out, key=lambda m: (m.model_id.lower(), m.where))


@dataclass(frozen=True)
class CacheInfo:
    cache_dir: Path
    http_cache: Path
    http_cache_bytes: int          # the SQLite file with its -wal and -shm
    http_entries: int              # response rows
    http_redirects: int            # redirect alias rows
    http_models: int
    http_unattributed: int         # rows that belong to no model (unreadable or unknown URL)
    store_dir: Path
    store_entries: int
    store_models: int
    store_bytes: int
    snapshot_dir: Path
    snapshot_entries: int
    max_age_s: float | None        # revalidation age in force (HUBVRAM_MAX_AGE), None: never
    memo_dir: Path | None = None   # hubvram.memo: the parsed metadata of each fetched commit
    memo_entries: int = 0
    memo_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def info(cache_dir: str | os.PathLike | None = None, *, max_age: float | None | str = "env") -> CacheInfo:
    from .httpcache import max_age_from_env, parse_max_age

    root = _root(cache_dir)
    db = http_cache_path(root)
    rows, redirects, _ = _read_rows(db)
    size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())
    store_files = [p for p in _store_files(root) if p.suffix == ".json"]
    memo_files = memo.files(root)
    return CacheInfo(
        cache_dir=root, http_cache=db, http_cache_bytes=size, http_entries=len(rows), http_redirects=redirects,
        http_models=len({r.model.lower() for r in rows if r.model}),
        http_unattributed=sum(1 for r in rows if not r.model),
        store_dir=store_dir(root), store_entries=len(store_files),
        store_models=len({_split_store_name(p)[0].lower() for p in store_files if _split_store_name(p)}),  # type: ignore[index]
        store_bytes=sum(p.stat().st_size for p in _store_files(root)),
        snapshot_dir=snapshot.snapshot_dir(), snapshot_entries=len(snapshot.available()),
        max_age_s=max_age_from_env() if max_age == "env" else parse_max_age(max_age),  # type: ignore[arg-type]
        memo_dir=memo.memo_dir(root), memo_entries=len(memo_files), memo_bytes=sum(_size_of(p) for p in memo_files))


def _size_of(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:  # removed meanwhile
        return 0


# --------------------------------------------------------------------------------------------------
# clear
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClearResult:
    model: str | None
    http_entries: int      # response rows removed
    store_files: int       # imported entry and branch files removed
    bytes: int             # bytes of the rows and files removed (the SQLite file shrinks by VACUUM)
    memo_files: int = 0    # metadata memo files removed (hubvram.memo: derived from the rows, go with them)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clear(model: str | None = None, cache_dir: str | os.PathLike | None = None) -> ClearResult:
    """Remove everything (the HTTP cache files and the metadata store), or one model's entries only."""
    root = _root(cache_dir)
    db = http_cache_path(root)
    if model is None:
        try:
            n_rows = len(_read_rows(db)[0])
        except CacheError:
            n_rows = 0  # unreadable: removed all the same
        n_bytes = 0
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if p.exists():
                n_bytes += p.stat().st_size
                p.unlink()
        files = _store_files(root)
        for p in files:
            n_bytes += p.stat().st_size
            p.unlink()
        n_memo, memo_bytes = memo.remove(root, None)
        return ClearResult(None, n_rows, len(files), n_bytes + memo_bytes, n_memo)
    if "@" in model:
        raise ModelRefError("give a model id without @revision (clear removes every revision)", model=model)
    ref = ModelRef.parse(model)
    if ref.is_local:
        raise ModelRefError("not a Hub model id", model=model)
    want = ref.repo_id.lower()
    rows, _, _ = _read_rows(db)
    keys = [r.key for r in rows if r.model and r.model.lower() == want]
    n_bytes = sum(r.size for r in rows if r.key in set(keys))
    if keys:
        con = _connect(db)
        try:
            with con:
                for i in range(0, len(keys), 500):
                    chunk = keys[i:i + 500]
                    marks = ",".join("?" * len(chunk))
                    con.execute(f"DELETE FROM responses WHERE key IN ({marks})", chunk)
                    con.execute(f"DELETE FROM redirects WHERE key IN ({marks}) OR value IN ({marks})", chunk + chunk)
            con.execute("VACUUM")
        finally:
            con.close()
    removed = 0
    for p in _store_files(root):
        split = _split_store_name(p)
        if split and split[0].lower() == want:
            n_bytes += p.stat().st_size
            p.unlink()
            removed += 1
    n_memo, memo_bytes = memo.remove(root, ref.repo_id)
    return ClearResult(ref.repo_id, len(keys), removed, n_bytes + memo_bytes, n_memo)



# --------------------------------------------------------------------------------------------------
# warm
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WarmResult:
    model: str                       # as asked
    sha: str | None                  # commit fetched
    error: HubvramError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "sha": self.sha, "ok": self.ok,
                "error": None if self.error is None else str(self.error),
                "exit_code": None if self.error is None else self.error.exit_code}


ProgressFn = Callable[[int, int, str, "HubvramError | None"], None]


def _online_client(client, *, cache_dir, token, endpoint, max_age, what: str) -> tuple["HubClient", bool]:
    from .api import make_client, offline_from_env

    own = client is None
    if own:
        if offline_from_env():
            raise InputError(f"`{what}` needs the network, but HF_HUB_OFFLINE is set")
        client = make_client(offline=False, cache_dir=cache_dir, token=token, endpoint=endpoint, max_age=max_age)
    if client.offline:
        if own:
            client.close()
        raise InputError(f"`{what}` needs the network, but offline mode is on (--offline or HF_HUB_OFFLINE=1)")
    return client, own


def _fetch_all(refs: Sequence[str], fn: Callable[[ModelRef], Any], *, max_workers: int,
               on_progress: ProgressFn | None) -> list[Any | HubvramError]:
    total = len(refs)
    done = 0
    lock = threading.Lock()

    def one(text: str) -> Any:
        nonlocal done
        err: HubvramError | None = None
        try:
            ref = ModelRef.parse(text)
            if ref.is_local:
                raise ModelRefError("a local folder is read directly; only Hub models are cached", model=text)
            return fn(ref)
        except HubvramError as e:
            err = e
            return e
        finally:
            if on_progress is not None:
                with lock:
                    done += 1
                    on_progress(done, total, text, err)

    if total <= 1:
        return [one(t) for t in refs]
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, total)), thread_name_prefix="hubvram-warm") as pool:
        return list(pool.map(one, refs))


def warm(models: Iterable[str], client: "HubClient | None" = None, *, cache_dir=None, token=None, endpoint=None,
         max_age: str | float | None = None, max_workers: int = 8,
         on_progress: ProgressFn | None = None) -> list[WarmResult]:
    """Fetch models through the HTTP cache now, for later offline use (concurrently; errors per model).

    Entries already cached and younger than ``max_age`` cost nothing; older ones are revalidated with
    conditional requests (a 304 renews them); branch names are always asked again."""
    from .sources import from_hub

    refs = list(dict.fromkeys(models))
    client, own = _online_client(client, cache_dir=cache_dir, token=token, endpoint=endpoint, max_age=max_age,
                                 what="cache warm")
    try:
        got = _fetch_all(refs, lambda ref: from_hub(ref, client), max_workers=max_workers, on_progress=on_progress)
    finally:
        if own:
            client.close()
    return [WarmResult(t, None, g) if isinstance(g, HubvramError) else WarmResult(t, g.revision)
            for t, g in zip(refs, got)]


# --------------------------------------------------------------------------------------------------
# export / import
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    path: Path
    entries: int
    models: int
    bytes: int
    skipped: tuple[str, ...] = ()    # "model@sha: why" for cached revisions that could not be read back

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": self.entries, "models": self.models, "bytes": self.bytes,
                "skipped": list(self.skipped)}


def _http_revisions(cache_dir) -> list[tuple[str, str, str, dt.datetime | None, dict[str, str]]]:
    """(model, sha, endpoint, fetched, {branch: seen}) for every revision the HTTP cache resolved."""
    rows, _, _ = _read_rows(http_cache_path(cache_dir))
    found: dict[tuple[str, str], list] = {}
    for r in rows:
        if r.model and r.api_sha and r.endpoint is not None:
            k = (r.model.lower(), r.api_sha)
            cur = found.setdefault(k, [r.model, r.api_sha, r.endpoint, r.created, {}])
            if r.created and (cur[3] is None or r.created < cur[3]):
                cur[3] = r.created
    # a branch points at the sha of its newest answer
    latest: dict[tuple[str, str], _Row] = {}
    for r in rows:
        if r.model and r.api_sha and r.api_rev and not SHA_RE.match(r.api_rev):
            k = (r.model.lower(), r.api_rev)
            if k not in latest or (r.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc)) >= \
                    (latest[k].created or dt.datetime.min.replace(tzinfo=dt.timezone.utc)):
                latest[k] = r
    for (model, branch), r in latest.items():
        found[(model, r.api_sha)][4][branch] = _iso(r.created) or ""  # type: ignore[index]
    return [tuple(v) for _, v in sorted(found.items())]  # type: ignore[misc]


def export(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
           models: Sequence[str] | None = None) -> ExportResult:
    """Write every revision the HTTP cache can answer offline, and every imported entry, to ``path``."""
    from .hub import HubClient
    from .sources import from_hub

    want = {m.lower() for m in models} if models else None
    items: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: list[str] = []
    clients: dict[str, HubClient] = {}
    try:
        for model, sha, endpoint, fetched, refs in _http_revisions(cache_dir):
            if want is not None and model.lower() not in want:
                continue
            client = clients.get(endpoint)
            if client is None:
                client = clients[endpoint] = HubClient(endpoint=endpoint, cache_dir=_root(cache_dir), offline=True)
            try:
                meta = from_hub(ModelRef(model, sha), client)
            except HubvramError as e:
                skipped.append(f"{model}@{sha[:12]}: {e.message}")
                continue
            entry = metadata_to_store_entry(meta, fetched=fetched)
            items[(model.lower(), sha)] = {"entry": entry, "refs": refs}
    finally:
        for c in clients.values():
            c.close()
    for entry, refs in _store_entries(cache_dir):
        k = (entry["model_id"].lower(), entry.get("revision") or "")
        if (want is None or k[0] in want) and k not in items and k[1]:
            items[k] = {"entry": entry, "refs": refs}
    entries = []
    for _, item in sorted(items.items()):
        item["sha256"] = _sha256({"entry": item["entry"], "refs": item["refs"]})
        entries.append(item)
    doc: dict[str, Any] = {"format": EXPORT_FORMAT, "created": _iso(_now()), "hubvram": _version(),
                           "count": len(entries), "entries": entries}
    doc["sha256"] = _sha256(doc)
    data = _gzip(canonical_json(doc))
    out = Path(path).expanduser()
    if out.is_dir():
        raise InputError("is a folder; give a file name for the archive", file=str(out))
    try:
        atomic_write(out, data, mode=0o600)
    except OSError as e:
        raise CacheError(f"cannot write the archive ({e.strerror})", file=str(out)) from None
    return ExportResult(out, len(entries), len({k[0] for k in items}), len(data), tuple(skipped))


def _version() -> str:
    from . import __version__

    return __version__


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return GZIP_HEADER + body + zlib.crc32(data).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(4, "little")


def _gunzip(data: bytes, *, file: str) -> bytes:
    def fail(msg: str) -> CacheError:
        return CacheError(f"rejected: {msg}; the cache was not changed", file=file)

    if data[:2] != GZIP_HEADER[:2]:
        raise fail("not a hubvram export (not gzip data)")
    if data[:10] != GZIP_HEADER:
        raise fail("gzip header differs from what `hubvram cache export` writes (changed or recompressed)")
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data[10:], MAX_ARCHIVE_JSON_BYTES)
    except zlib.error:
        raise fail("corrupted compressed data") from None
    if d.unconsumed_tail:
        raise fail(f"content larger than {MAX_ARCHIVE_JSON_BYTES} bytes")
    if not d.eof:
        raise fail("truncated (the compressed stream ends early)")
    trailer = d.unused_data
    if len(trailer) < 8:
        raise fail("truncated (the gzip trailer is missing)")
    if len(trailer) > 8:
        raise fail("unexpected bytes after the end of the archive")
    if zlib.crc32(out).to_bytes(4, "little") != trailer[:4] or (len(out) & 0xFFFFFFFF).to_bytes(4, "little") != trailer[4:]:
        raise fail("CRC-32 or length check failed (changed or corrupted)")
    return out


@dataclass(frozen=True)
class ImportResult:
    path: Path
    entries: int           # entries in the archive (all valid)
    new: int               # entries not in the store before
    models: int
    refs: int              # branch records written (newer than what the store had)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": self.entries, "new": self.new, "models": self.models,
                "refs": self.refs}


def read_archive(path: str | os.PathLike) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Read and validate an export completely: [(entry, {branch: seen})]; CacheError on any defect."""
    p = Path(path).expanduser()
    name = p.name

    def fail(msg: str) -> CacheError:
        return CacheError(f"rejected: {msg}; the cache was not changed", file=name)

    try:
        size = p.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            raise fail(f"file is {size} bytes, larger than the {MAX_ARCHIVE_BYTES}-byte limit")
        data = p.read_bytes()
    except OSError as e:
        raise CacheError(f"cannot read ({e.strerror})", file=name) from None
    raw = _gunzip(data, file=name)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise fail("content is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise fail(f"not a {EXPORT_FORMAT} archive")
    claimed = doc.pop("sha256", None)
    if not isinstance(claimed, str) or _sha256(doc) != claimed:
        raise fail("archive checksum mismatch (changed or corrupted)")
    items = doc.get("entries")
    if not isinstance(items, list) or doc.get("count") != len(items):
        raise fail("entry count does not match the entries present")
    out: list[tuple[dict[str, Any], dict[str, str]]] = []
    seen: dict[tuple[str, str], str] = {}
    for i, item in enumerate(items, 1):
        where = f"entry {i}"
        if not isinstance(item, dict) or set(item) != {"entry", "refs", "sha256"}:
            raise fail(f"{where} is malformed")
        entry, refs = item["entry"], item["refs"]
        if not isinstance(entry, dict) or not isinstance(refs, dict):
            raise fail(f"{where} is malformed")
        if _sha256({"entry": entry, "refs": refs}) != item["sha256"]:
            raise fail(f"{where} checksum mismatch")
        try:
            entry = snapshot.read_entry(canonical_json(entry), file=f"{name}: {where}")
        except CacheError as e:
            raise fail(f"{where}: {e.message}") from None
        mid, sha = entry["model_id"], entry.get("revision")
        where = f"{where} ({mid})"
        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise fail(f"{where} has no commit sha")
        if not all(isinstance(k, str) and k and not SHA_RE.match(k) and isinstance(v, str) and _parse_time(v)
                   for k, v in refs.items()):
            raise fail(f"{where} has malformed branch records")
        bad = _bad_extras(entry)
        if bad:
            raise fail(f"{where}: {bad}")
        try:
            entry_to_metadata(entry, file=where)
        except HubvramError as e:
            raise fail(f"{where}: {e.message}") from None
        k = (mid.lower(), sha)
        digest = _sha256(entry)
        if seen.get(k, digest) != digest:
            raise fail(f"{where} appears twice with different content")
        seen[k] = digest
        out.append((entry, refs))
    return out


def _bad_extras(entry: Mapping[str, Any]) -> str | None:
    if entry.get("tensors_from", "safetensors") not in ("safetensors", "config"):
        return "tensors_from must be 'safetensors' or 'config'"
    if entry.get("tensors_from") == "config" and entry.get("tensors") is None:
        return "a config-derived entry must carry its tensors"
    tot = entry.get("index_total_size")
    if tot is not None and (type(tot) is not int or tot < 0):
        return "index_total_size must be a non-negative integer or null"
    for key in ("warnings", "files", "notes"):
        v = entry.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(s, str) for s in v)):
            return f"{key} must be a list of strings"
    if entry.get("fetched") is not None and _parse_time(entry.get("fetched")) is None:
        return "fetched must be an ISO time"
    if not isinstance(entry.get("recorded"), str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["recorded"]):
        return "recorded must be a YYYY-MM-DD date"
    return None


def import_(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ImportResult:
    """Validate every entry of an export, then merge them into the metadata store (atomic file writes).

    A branch record is replaced only by a newer one (``seen``), so importing an old archive does not move
    ``main`` back. Nothing is written when any entry is invalid."""
    items = read_archive(path)
    root = _root(cache_dir)
    d = store_dir(root)
    existing = {p.name for p in _store_files(root)}
    new = refs_written = 0
    if items:
        private_dir(root)
        private_dir(d)
    for entry, refs in items:
        stem = _model_stem(entry["model_id"])
        name = f"{stem}@{entry['revision']}.json"
        new += name not in existing
        atomic_write(d / name, json.dumps(entry, indent=1).encode() + b"\n")
        existing.add(name)
        for branch, seen in refs.items():
            rp = d / f"{stem}@{quote(branch, safe='')}.ref"
            old = _read_json_file(rp) if rp.exists() else None
            old_seen = _parse_time(old.get("seen")) if isinstance(old, dict) else None
            if old_seen is None or (_parse_time(seen) or old_seen) >= old_seen:
                atomic_write(rp, canonical_json({"sha": entry["revision"], "seen": seen}) + b"\n")
                refs_written += 1
    return ImportResult(Path(path), len(items), new, len({e["model_id"].lower() for e, _ in items}), refs_written)


# --------------------------------------------------------------------------------------------------
# snapshot: the maintainer refresh of the bundled snapshot
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotResult:
    model: str
    path: Path | None
    sha: str | None = None
    tensors: int = 0
    error: HubvramError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "path": None if self.path is None else str(self.path), "sha": self.sha,
                "tensors": self.tensors, "ok": self.ok, "error": None if self.error is None else str(self.error),
                "exit_code": None if self.error is None else self.error.exit_code}


def snapshot_entry(meta: Metadata, *, endpoint: str, recorded: str, published_total: int | None,
                   previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A bundled-snapshot entry for live Hub metadata, checked against the Hub's published total."""
    sha = meta.revision
    stored = sum(t.numel * t.count for t in meta.tensors)
    total_source = (f"Hub API {endpoint}/api/models/{meta.model_id}/revision/{sha}: safetensors.total"
                    if published_total is not None else None)
    if published_total is None and previous and isinstance(previous.get("published_total"), int):
        published_total, total_source = previous["published_total"], previous.get("published_total_source")
    entry = snapshot.metadata_to_entry(
        meta, recorded=recorded, config_source=f"config.json of {meta.model_id} at {sha} ({endpoint})",
        published_total=published_total, published_total_source=total_source)
    notes = list(entry.get("notes") or [])
    if meta.tensors_from == "safetensors" and published_total is not None and stored != published_total:
        notes.append(f"safetensors headers hold {stored:,} elements, the published total is {published_total:,}")
    entry["notes"] = notes
    return entry


def snapshot_models(models: Iterable[str], client: "HubClient | None" = None, out_dir: str | os.PathLike = "cache",
                    *, recorded: str | None = None, cache_dir=None, token=None, endpoint=None,
                    max_workers: int = 4, on_progress: ProgressFn | None = None) -> list[SnapshotResult]:
    """Fetch live metadata and write ``<out_dir>/<org>--<name>.json`` for each model (the bundled snapshot
    format: config.json as published, the safetensors header inventory, the commit sha and the date)."""
    from .sources import from_hub

    refs = list(dict.fromkeys(models))
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError("no such folder", file=str(out))
    day = recorded or _now().date().isoformat()
    client, own = _online_client(client, cache_dir=cache_dir, token=token, endpoint=endpoint, max_age=None,
                                 what="cache snapshot")

    def one(ref: ModelRef) -> SnapshotResult:
        meta = from_hub(ref, client)
        info_ = client.repo_info(meta.model_id, meta.revision)  # pinned: answered from the cache
        path = out / snapshot.filename_for(meta.model_id)
        previous = _read_json_file(path) if path.exists() else None
        entry = snapshot_entry(meta, endpoint=client.endpoint, recorded=day, published_total=info_.safetensors_total,
                               previous=previous if isinstance(previous, dict) else None)
        data = json.dumps(entry, indent=1).encode() + b"\n"
        snapshot.read_entry(data, file=path.name)  # never write what the loader would refuse
        atomic_write(path, data, mode=0o644)
        return SnapshotResult(ref.display, path, meta.revision, len(entry["tensors"] or ()))

    try:
        got = _fetch_all(refs, one, max_workers=max_workers, on_progress=on_progress)
    finally:
        if own:
            client.close()
    snapshot.available.cache_clear()
    return [SnapshotResult(t, None, error=g) if isinstance(g, HubvramError) else g for t, g in zip(refs, got)]
