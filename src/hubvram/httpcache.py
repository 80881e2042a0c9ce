"""Offline answers from the HTTP cache without requests, requests-cache or huggingface_hub.

Importing the HTTP stack costs ~200 ms, four times a whole ``hubvram MODEL --offline`` answered from the
bundled snapshot. Offline, nothing of it is needed: an answer is a few rows of
``<cache_dir>/http_cache.sqlite`` (JSON, see :mod:`hubvram.hub`), found by the key requests-cache gives
the request. :class:`CacheReader` is an offline :class:`hubvram.hub.HubClient` made of :mod:`sqlite3`,
:mod:`json` and :mod:`base64` only: it computes the same keys (:func:`cache_key`, for the URLs hubvram
builds; checked against requests-cache in the tests and, once per reader, against a stored row), reads
the rows and answers, or raises the same :class:`~hubvram.errors.OfflineMissError`. Whatever it cannot
decide on its own (a URL it does not normalize exactly like requests-cache, a cache it cannot open, keys
that do not match) it hands to a real offline HubClient, made on first need.

Also here, shared with :mod:`hubvram.hub` and free of its imports: :class:`RepoInfo`, :class:`Stats`,
:func:`parse_revision_answer`, :func:`read_header` (first ranged read, then the rest if needed) and
:func:`parse_max_age` / :func:`max_age_from_env` (``HUBVRAM_MAX_AGE``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

from .errors import HeaderError, HubError, OfflineMissError
from .metadata import SHA_RE
from .safetensors import FIRST_READ_BYTES, MAX_HEADER_BYTES, header_length

__all__ = ["CacheReader", "RepoInfo", "Stats", "cache_key", "max_age_from_env", "open_reader", "parse_max_age",
           "parse_revision_answer", "read_header"]

DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_HINT = "run `hubvram cache warm {repo_id}` with a network first"
#: ``str()`` of hubvram.hub._SafeJSONPipeline, the last part of every key requests-cache computes for us.
SERIALIZER_ID = "SerializerPipeline(name=hubvram-json-v1, n_stages=3)"
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
#: URLs that requests and url_normalize leave exactly as they are: lower-case http(s) host, no default
#: port, a path of unreserved characters only (no percent-escapes, no dot segments), no query, no fragment.
_PLAIN_URL_RE = re.compile(r"^(?P<scheme>https?)://(?P<host>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                           r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)(?::(?P<port>[1-9][0-9]{0,4}))?"
                           r"(?P<path>(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*|/\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
                           r"|/\.\.[A-Za-z0-9._~-]+)+)$")


DEFAULT_MAX_AGE_S = 7 * 24 * 3600
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_max_age(text: str | int | float | None) -> float | None:
    """``"90s"``, ``"12h"``, ``"7d"``, ``"2w"``, plain seconds, or ``"never"`` (-> None).

    Values under one second are raised to one second: requests-cache does not store an answer that is
    born expired and has no validator, which would leave nothing for offline use."""
    if text is None:
        return float(DEFAULT_MAX_AGE_S)
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        if raw in ("never", "none", "inf", "off"):
            return None
        m = _AGE_RE.match(raw)
        if not m:
            raise ValueError(f"invalid max age {text!r} (expected e.g. 3600, 90s, 12h, 7d, 2w or never)")
        seconds = float(m[1]) * _AGE_UNITS[m[2]]
    if seconds < 0:
        raise ValueError(f"invalid max age {text!r} (negative)")
    return max(seconds, 1.0)


def max_age_from_env() -> float | None:
    """``$HUBVRAM_MAX_AGE`` (see :func:`parse_max_age`), default 7 days."""
    return parse_max_age(os.environ.get("HUBVRAM_MAX_AGE") or None)


@dataclass(frozen=True)
class RepoInfo:
    repo_id: str
    sha: str
    files: tuple[str, ...]
    #: the Hub's published ``safetensors.total`` (Σ numel of the stored tensors) when the answer has one
    safetensors_total: int | None = None


class Stats:
    """Thread-safe counts of network requests by kind (api, file, header, header_extra), of cache
    hits (``cache_hits``), of revalidations answered 304 (``revalidated``) and of retries (``retries``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] += n

    def __getitem__(self, kind: str) -> int:
        with self._lock:
            return self._counts[kind]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        return f"Stats({self.as_dict()})"


def parse_revision_answer(data: Any, *, endpoint: str, repo_id: str, revision: str) -> RepoInfo:
    """The Hub's ``/api/models/{id}/revision/{rev}`` JSON (already decoded) -> RepoInfo, or HubError."""
    try:
        sha = data["sha"]
        files = tuple(s["rfilename"] for s in data.get("siblings") or ())
        st = data.get("safetensors")
        total = st.get("total") if isinstance(st, dict) else None
        total = total if type(total) is int and total >= 0 else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HubError(f"unexpected answer from {endpoint} for revision {revision!r}", model=repo_id) from None
    if not isinstance(sha, str) or not SHA_RE.match(sha) or not all(isinstance(f, str) for f in files):
        raise HubError(f"unexpected answer from {endpoint} for revision {revision!r}", model=repo_id)
    return RepoInfo(repo_id=repo_id, sha=sha, files=files, safetensors_total=total)


RangedRead = Callable[[str, int, int], "tuple[bytes, int | None]"]


def read_header(ranged: RangedRead, *, model: str, file: str, size: int) -> tuple[bytes, int | None]:
    """A safetensors header by ranged reads: ``ranged(kind, start, end)`` -> (bytes, file size or None).
    The first read asks ``size`` bytes; a longer header takes one more read for the rest."""
    first, total = ranged("header", 0, size - 1)
    n = header_length(first[:8], file=file, model=model, file_size=total)
    if 8 + n > len(first):
        if total is None and len(first) < size:
            raise HeaderError(f"file ends at byte {len(first)}, inside its {n}-byte header", model=model, file=file)
        rest, total2 = ranged("header_extra", len(first), 8 + n - 1)
        first, total = first + rest, total if total is not None else total2
        if 8 + n > len(first):
            raise HeaderError(f"file ends at byte {len(first)}, inside its {n}-byte header", model=model, file=file)
    return first[8:8 + n], total


def range_header(start: int, end: int) -> str:
    return f"bytes={start}-{min(end, 8 + MAX_HEADER_BYTES - 1)}"  # never more than the largest legal header


def cache_key(url: str, range_: str | None = None) -> str | None:
    """The key requests-cache (1.2-1.3, ``match_headers=["Range"]``, our serializer) gives a GET of ``url``,
    or None for a URL that requests / url_normalize would rewrite (the caller then asks requests-cache):
    blake2b-64 of method, normalized URL, body, verify, the Range header and the serializer."""
    m = _PLAIN_URL_RE.match(url)
    if m is None or (m["port"] and int(m["port"]) == {"http": 80, "https": 443}[m["scheme"]]):
        return None
    h = blake2b(digest_size=8)
    for part in ("GET", url, "", "True", *((f"range={range_}",) if range_ else ()), SERIALIZER_ID):
        h.update(part.encode("utf-8"))
    return h.hexdigest()


class _Undecided(Exception):
    """The reader cannot answer this exactly as requests-cache would: ask a real offline HubClient."""


class CacheReader:
    """An offline HubClient over the HTTP cache file that needs neither requests nor requests-cache."""

    offline = True

    def __init__(self, db: Path, *, cache_dir: Path, endpoint: str) -> None:
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self.stats = Stats()
        self._db = db
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._fallback: Any = None
        self._keys_ok: bool | None = None  # see _check_keys

    # -- the HubClient interface (what hubvram.sources.from_hub and hubvram.api use) ------------------------
    def repo_info(self, repo_id: str, revision: str | None = "main", prefetch: Sequence[str] = ()) -> RepoInfo:
        revision = revision or "main"
        try:
            url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
            body = self._get("api", url, None, model=repo_id, file=None, revision=revision)[1]
            try:
                data = json.loads(body)
            except ValueError:
                raise HubError(f"unexpected answer from {self.endpoint} for revision {revision!r}",
                               model=repo_id) from None
            return parse_revision_answer(data, endpoint=self.endpoint, repo_id=repo_id, revision=revision)
        except _Undecided:
            return self._client().repo_info(repo_id, revision)

    def fetch_file(self, repo_id: str, sha: str, filename: str) -> bytes:
        try:
            return self._get("file", self._file_url(repo_id, sha, filename), None, model=repo_id, file=filename,
                             revision=sha)[1]
        except _Undecided:
            return self._client().fetch_file(repo_id, sha, filename)

    def fetch_header(self, repo_id: str, sha: str, filename: str) -> tuple[bytes, int | None]:
        return self.fetch_headers(repo_id, sha, [filename])[filename]

    def fetch_headers(self, repo_id: str, sha: str, filenames: Sequence[str],
                      read_sizes: Mapping[str, int] | None = None) -> dict[str, tuple[bytes, int | None]]:
        try:
            out = {}
            for name in dict.fromkeys(filenames):
                url = self._file_url(repo_id, sha, name)

                def ranged(kind: str, start: int, end: int, url: str = url, name: str = name):
                    status, body, headers = self._get(kind, url, range_header(start, end), model=repo_id,
                                                      file=name, revision=sha)
                    got = _CONTENT_RANGE_RE.match(headers.get("Content-Range") or "")
                    if status != 206 or got is None:
                        raise _Undecided()  # only complete 206 answers are stored; be sure all the same
                    return body, (None if got[3] == "*" else int(got[3]))

                size = max(8, (read_sizes or {}).get(name) or FIRST_READ_BYTES)
                out[name] = read_header(ranged, model=repo_id, file=name, size=size)
            return out
        except _Undecided:
            return self._client().fetch_headers(repo_id, sha, filenames, read_sizes)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
        if self._fallback is not None:
            self._fallback.close()

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------
    def _file_url(self, repo_id: str, revision: str, filename: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    def _client(self) -> Any:
        """The real offline HubClient (imports the HTTP stack), for what this reader cannot decide."""
        with self._lock:
            if self._fallback is None:
                from .hub import HubClient

                self._fallback = HubClient(endpoint=self.endpoint, cache_dir=self.cache_dir, offline=True)
            return self._fallback

    def _get(self, kind: str, url: str, range_: str | None, *, model: str, file: str | None,
             revision: str) -> tuple[int, bytes, Mapping[str, str]]:
        """(status, body, headers) of the stored answer to a GET of url (with Range), OfflineMissError when
        there is none, _Undecided when this reader cannot be sure."""
        key = cache_key(url, range_)
        if key is None:
            raise _Undecided()
        row = self._row(key)
        if row is None:
            raise OfflineMissError(f"offline and not cached ({kind} {file or revision})", model=model, file=file,
                                   hint=OFFLINE_HINT.format(repo_id=model))
        try:
            status, content, headers = row["status_code"], row.get("_content"), row.get("headers") or {}
            body = base64.b64decode(content) if content else b""
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _Undecided() from None
        if status not in (200, 206) or not isinstance(headers, dict):
            raise _Undecided()
        self.stats.add("cache_hits")
        return status, body, headers

    def _row(self, key: str) -> dict | None:
        with self._lock:
            try:
                if self._con is None:
                    self._con = sqlite3.connect(self._db, timeout=30, check_same_thread=False)
                if self._keys_ok is None:
                    self._keys_ok = self._check_keys(self._con)
                if not self._keys_ok:
                    raise _Undecided()
                row = self._con.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error:
                raise _Undecided() from None  # a damaged or locked cache: the HubClient knows what to do
        if row is None:
            return None
        try:
            obj = json.loads(row[0])
        except (ValueError, TypeError):  # a pickle, garbage: requests-cache would not read it either
            return None
        return obj if isinstance(obj, dict) else None

    @staticmethod
    def _check_keys(con: sqlite3.Connection) -> bool:
        """Once per reader: do stored rows sit under the keys this module computes for their requests? False
        when rows it can key exist and none matches (another requests-cache version or serializer): then
        every lookup goes to the HubClient. (Some rows legitimately do not match: an API answer aliased under
        its commit's URL keeps the branch URL in its request.)"""
        keyable = 0
        for key, value in con.execute("SELECT key, value FROM responses LIMIT 64"):
            try:
                obj = json.loads(value)
                req = obj["request"]
                if obj.get("history"):
                    continue  # stored under the key of the first request of the redirect chain
                mine = cache_key(req["url"], (req.get("headers") or {}).get("Range"))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if mine == key:
                return True
            keyable += mine is not None
        return keyable == 0


def open_reader(cache_dir: str | os.PathLike | None = None, endpoint: str | None = None) -> CacheReader | None:
    """A CacheReader on the HTTP cache in ``cache_dir`` (default: see hubvram.sources.default_cache_dir), or None
    when there is no cache file (or an endpoint only huggingface_hub knows how to pick)."""
    if os.environ.get("HUGGINGFACE_CO_STAGING"):
        return None  # huggingface_hub then points at its staging Hub: let HubClient pick the endpoint
    from .sources import cache_root

    root = cache_root(cache_dir)
    db = root / "http_cache.sqlite"
    if not db.is_file():
        return None
    return CacheReader(db, cache_dir=root, endpoint=(endpoint or default_endpoint()).rstrip("/"))


def default_endpoint() -> str:
    """What HubClient uses without an endpoint: $HF_ENDPOINT, else huggingface_hub's ENDPOINT, read from the
    module when it is already imported (it may have been set there) and computed as it would be when not."""
    hf_constants = sys.modules.get("huggingface_hub.constants")
    return (os.environ.get("HF_ENDPOINT") or getattr(hf_constants, "ENDPOINT", None) or DEFAULT_ENDPOINT).rstrip("/")
