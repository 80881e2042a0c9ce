"""The Hugging Face Hub HTTP client: revision lookups, small files and safetensors headers by Range.

Transport is ``requests`` through one ``requests_cache.CachedSession`` per client (huggingface_hub 1.x+
uses httpx, which neither requests-cache nor ``responses`` sees; we use it only for tokens, endpoints
and resolve-URL quoting). The traps this module exists to avoid (requests-cache 1.3.x):

* **Range is not in the cache key** unless listed in ``match_headers``: two ranges of one URL would
  collide. We match on ``Range``.
* **206 is not cached** unless listed in ``allowable_codes``. We allow (200, 206).
* **Tokens on disk.** After the Hub's 302 from ``resolve/`` to a signed CDN URL, requests-cache stores
  the redirect history, whose request still carries ``Authorization``; only the top-level request is
  redacted. Our serializer's first stage strips auth headers, cookies and ``Set-Cookie`` from every
  request/response in the entry, history included. The token is attached by an auth hook for the
  endpoint's host only, and requests drops it on a redirect to another host.
* **Pickle.** The default SQLite serializer is pickle, which runs code from a tampered cache file.
  Ours is JSON (cattrs + base64 bodies); any row that fails to load is a cache miss.
* **Incomplete answers.** A 206 whose Content-Range differs from the request, or a body shorter than
  its Content-Length, is refused by ``filter_fn`` (never stored) and reported as ``NetworkError``.
  A 200 to a Range request (server ignored Range) is read only as far as needed and never stored.
* **Branches move.** Revision answers for branch names are refetched online (``force_refresh``) but
  kept for offline use.
* **Revalidation, not refetching.** Everything else is addressed by a commit sha and cannot change, but
  entries older than ``max_age`` (``HUBVRAM_MAX_AGE``, default 7 days; ``never`` disables it) are
  revalidated online: requests-cache sends the stored ETag as ``If-None-Match`` and a 304 renews the
  entry without a body. A 304's Content-Length/Content-Range describe the whole file, not our range, so
  they are dropped before requests-cache merges the 304's headers into the stored 206.
  Offline, every stored entry is usable whatever its age.
* **Offline means no sockets.** Offline lookups use ``only_if_cached`` and the session's adapters
  are replaced by one that refuses to send.
* **Files are private**: the cache folder is 0700 and the SQLite file (hence its -wal/-shm) 0600.
* **A broken cache is not fatal.** Opening checks the SQLite file (``PRAGMA quick_check``) under a lock
  file; garbage, a truncated file, a folder in its place or a file we may not read and write is renamed
  ``http_cache.sqlite.corrupt-<timestamp>`` and a new cache is started, with a one-line warning on
  stderr. A cache folder that cannot be written at all gives a temporary cache for the run (warned too).
"""

from __future__ import annotations

import contextlib
import email.utils
import http.cookiejar
import json
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote, urljoin, urlsplit

import requests
import requests_cache
from huggingface_hub import constants as hf_constants
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict
from requests_cache.cache_keys import redact_response
from requests_cache.policy.expiration import get_expiration_datetime
from requests_cache.serializers import SerializerPipeline, Stage
from requests_cache.serializers.preconf import json_preconf_stage

from .errors import (ConfigError, EntryNotFoundError, GatedRepoError, HeaderError, HubError, HubvramError,
                     NetworkError, OfflineMissError, RepoNotFoundError, RevisionNotFoundError)
from .fileio import private_dir
from .httpcache import (DEFAULT_MAX_AGE_S, OFFLINE_HINT, RepoInfo, Stats, cache_key,  # noqa: F401 (re-exported)
                        max_age_from_env, parse_max_age, parse_revision_answer, range_header, read_header)
from .metadata import SHA_RE
from .netenv import proxies_configured
from .safetensors import FIRST_READ_BYTES, MAX_HEADER_BYTES
from .sources import cache_root, default_cache_dir  # noqa: F401  (default_cache_dir: part of this module's API)
from .tokens import hub_token
from .transport import RangeAdapter
from .workers import Workers

__all__ = ["HubClient", "RepoInfo", "Stats", "default_cache_dir", "max_age_from_env", "parse_max_age"]

_KEY_RE = re.compile(r"^[0-9a-f]{1,128}$")  # requests-cache keys are hex digests
_LOOK_UP = object()  # _ranged: the stored answer has not been looked up yet
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d+)$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Dropped from every stored request and response (history included) before serialization.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie",
                             "x-api-key", "x-auth-token", "x-api-token", "x-access-token", "vary"})
RETRY_AFTER_CAP_S = 10.0
BACKOFF_CAP_S = 8.0
TOTAL_BUDGET_S = 60.0  # per logical request, retries and waits included
#: Whole-file answers (config.json, index files, API JSON) larger than this are refused unread.
MAX_FILE_BYTES = 50_000_000  # = sources.MAX_JSON_BYTES, the limit for local files
MAX_CONNECTIONS = 256  # default max_workers; $HUBVRAM_MAX_CONNECTIONS
MAX_REDIRECTS = 10  # the Hub needs two at most (renamed repo -> resolve -> CDN)
NETWORK_HINT = "check the network or use --offline"


# --- storage: a scrubbing, JSON-only serializer --------------------------------------------------
def _clean_headers(headers: Mapping[str, str] | None) -> CaseInsensitiveDict:
    return CaseInsensitiveDict({k: v for k, v in (headers or {}).items()
                                if k.lower() not in _SECRET_HEADERS})


def _scrub(response: Any) -> Any:
    """Strip credentials and cookies from a CachedResponse and every response in its history."""
    for r in (response, *(getattr(response, "history", None) or ())):
        r.headers = _clean_headers(r.headers)
        r.cookies = RequestsCookieJar()
        for req in (r.request, getattr(r, "_next", None)):
            if req is not None:
                req.headers = _clean_headers(req.headers)
                req.cookies = RequestsCookieJar()
    return response


class _SafeJSONPipeline(SerializerPipeline):
    """JSON rows only; anything that does not load as a CachedResponse is a miss (ValueError)."""

    def __init__(self) -> None:
        super().__init__(
            [Stage(dumps=_scrub, loads=lambda v: v), json_preconf_stage.copy(),
             Stage(dumps=lambda v: json.dumps(v, separators=(",", ":")), loads=json.loads)],
            name="hubvram-json-v1", is_binary=False)

    def copy(self) -> "_SafeJSONPipeline":  # init_serializer() copies; keep our class
        return _SafeJSONPipeline()

    def loads(self, value: Any) -> Any:
        try:
            obj = super().loads(value)
        except Exception as e:  # cattrs raises ExceptionGroups that requests-cache would not catch
            raise ValueError(f"unreadable cache row ({type(e).__name__})") from None
        if not isinstance(obj, requests_cache.CachedResponse):
            raise ValueError("cache row is not a response")
        return obj


def _private_db(cache_dir: Path) -> Path:
    db = private_dir(cache_dir) / "http_cache.sqlite"
    # Create the file 0600 before SQLite does: SQLite gives -wal/-shm the database file's mode.
    os.close(os.open(db, os.O_CREAT | os.O_RDWR, 0o600))
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if path.exists():
            os.chmod(path, 0o600)
    return db


def _warn(text: str) -> None:
    sys.stderr.write(f"hubvram: warning: {text}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def _cache_lock(cache_dir: Path):
    """Serialise checking and repairing the cache file between processes (POSIX flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, the check is still made
        yield
        return
    private_dir(cache_dir)
    fd = os.open(cache_dir / "http_cache.sqlite.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _db_problem(db: Path) -> str | None:
    """Why this SQLite file cannot be our cache, in a few words (None: it can). Changes nothing."""
    if not os.access(db, os.R_OK | os.W_OK):
        return "no permission to read and write it"
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            row = con.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        text = str(e) or type(e).__name__
        return None if ("locked" in text or "busy" in text) else text  # busy is not broken
    return None if row and row[0] == "ok" else f"integrity check failed: {str(row[0] if row else '')[:80]}"


def _set_aside(db: Path) -> Path:
    """Rename the cache file (and its -wal/-shm) to ``<name>.corrupt-<timestamp>``; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = db.with_name(f"{db.name}.corrupt-{stamp}"), 1
    while os.path.lexists(aside):
        aside, n = db.with_name(f"{db.name}.corrupt-{stamp}-{n}"), n + 1
    os.rename(db, aside)
    for ext in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{db}{ext}", f"{aside}{ext}")
    return aside


def _sqlite_cache(db: Path) -> requests_cache.SQLiteCache:
    return requests_cache.SQLiteCache(db, serializer=_SafeJSONPipeline(), wal=True, busy_timeout=30_000)


def _open_cache(cache_dir: Path) -> tuple[requests_cache.SQLiteCache, str | None]:
    """(the SQLite cache in cache_dir, None); an unusable cache file is set aside and rebuilt, and when
    the folder itself is unusable: (a cache in a temporary folder, that folder), to delete on close."""
    db = cache_dir / "http_cache.sqlite"
    try:
        with _cache_lock(cache_dir):
            for attempt in (1, 2):
                try:
                    problem = _db_problem(_private_db(cache_dir))
                except OSError as e:  # a folder where the file should be, a file we may not open
                    problem = e.strerror or type(e).__name__
                if problem is None:
                    return _sqlite_cache(db), None
                if attempt == 2:
                    raise OSError(problem)
                aside = _set_aside(db)
                _warn(f"the HTTP cache {db} was unreadable ({problem}); moved it to {aside.name} and "
                      "started a new one")
    except (OSError, sqlite3.Error) as e:
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e) or type(e).__name__
        tmp = tempfile.mkdtemp(prefix="hubvram-cache-")
        _warn(f"cannot use the HTTP cache in {cache_dir} ({reason}); this run uses a temporary cache")
        return _sqlite_cache(_private_db(Path(tmp))), tmp
    raise AssertionError("unreachable")  # pragma: no cover


# --- transport helpers ---------------------------------------------------------------------------
class _HubAuth(requests.auth.AuthBase):
    """Bearer token for the endpoint's host only; requests strips it on a cross-host redirect."""

    def __init__(self, token: str, host: str) -> None:
        self._token, self._host = token, host

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if urlsplit(r.url or "").netloc == self._host:
            r.headers["Authorization"] = f"Bearer {self._token}"
        return r


class _NoCookies(RequestsCookieJar):
    """A cookie jar that keeps nothing: the Hub needs no cookies, and parsing every response's headers
    for them (http.cookiejar) costs more than the rest of a small request."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Any, *args: Any, **kwargs: Any) -> None:
        pass


def _quiet_environment(session: requests.Session) -> None:
    """When no proxy is configured (environment or OS), stop requests from re-reading the environment for
    proxies and ~/.netrc on every request and redirect (``trust_env``, ~0.4 ms each: a header read is two
    requests); the CA bundle variables it would read are read once here."""
    if proxies_configured():
        return
    session.trust_env = False
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


class _NoNetwork(BaseAdapter):
    def send(self, request, **kwargs):  # noqa: ANN001
        raise _OfflineBlocked(f"offline: refused to send {request.method} {request.url}")

    def close(self) -> None:
        pass


class _OfflineBlocked(requests.ConnectionError):
    pass


class _Cancelled(Exception):
    pass


class _StoreQueue:
    """Fetched answers waiting to be written to the cache. Whoever adds one writes everything waiting in
    one transaction, unless another thread is writing (that one then picks it up): answers are on disk
    moments after they arrive (an interrupted run keeps them), without a transaction per answer."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._items: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()      # guards _items
        self._writing = threading.Lock()   # held by the one thread writing

    def add(self, *item: Any) -> None:
        with self._lock:
            self._items.append(item)
        self.flush(block=False)

    def flush(self, block: bool = True) -> None:
        while self._writing.acquire(blocking=block):
            try:
                while True:
                    with self._lock:
                        batch, self._items = self._items, []
                    if not batch:
                        break
                    self._store(batch)
            finally:
                self._writing.release()
            with self._lock:  # added while we were releasing, by a thread that found us writing?
                if not self._items:
                    return


def _drop_304_entity_headers(r: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Response hook: a 304's Content-Length/Content-Range (if any) describe the full representation;
    requests-cache would merge them into the stored 206 and make it look truncated."""
    if r.status_code == 304:
        for name in ("Content-Length", "Content-Range", "Transfer-Encoding"):
            r.headers.pop(name, None)
    return r


def _identity(r: Any) -> bool:
    return r.headers.get("Content-Encoding", "identity").lower() in ("identity", "")


def _defect(r: Any) -> str | None:
    """Why a 200/206 answer is not a complete, correct answer to its request (None if it is)."""
    if r.status_code == 206:
        asked = _RANGE_RE.match(r.request.headers.get("Range", ""))
        got = _CONTENT_RANGE_RE.match(r.headers.get("Content-Range", ""))
        if not asked or not got:
            return f"206 with Content-Range {r.headers.get('Content-Range')!r} for {r.request.headers.get('Range')!r}"
        a0, a1 = int(asked[1]), int(asked[2])
        g0, g1 = int(got[1]), int(got[2])
        total = None if got[3] == "*" else int(got[3])
        if (g0 != a0 or g1 < g0 or g1 > a1 or (total is not None and g1 >= total)
                or (g1 < a1 and total is not None and g1 != total - 1)):
            return f"Content-Range {got[0]!r} does not answer Range {asked[0]!r}"
        expected = g1 - g0 + 1
        length = r.headers.get("Content-Length")
        if length is not None and _identity(r) and length.isdigit() and int(length) != expected:
            return f"Content-Length {length} disagrees with Content-Range {got[0]!r}"
        if len(r.content) != expected:
            return f"truncated answer: {len(r.content)} of {expected} bytes"
    elif r.status_code == 200 and "Range" not in r.request.headers:
        length = r.headers.get("Content-Length")
        if length is not None and _identity(r) and length.isdigit() and len(r.content) != int(length):
            return f"truncated answer: {len(r.content)} of {length} bytes"
    return None


def _oversized(r: Any) -> int | None:
    """The declared length of a whole-file 200 larger than MAX_FILE_BYTES (nothing read), else None."""
    if r.status_code != 200 or "Range" in r.request.headers:
        return None
    length = r.headers.get("Content-Length", "")
    return int(length) if length.isdigit() and int(length) > MAX_FILE_BYTES else None


def _cacheable(r: Any) -> bool:
    """filter_fn: store only complete answers, and never a 200 that ignored our Range."""
    if r.status_code == 200 and "Range" in r.request.headers:
        return False
    if _oversized(r) is not None:  # checked before _defect reads the body
        return False
    return _defect(r) is None


def _retry_after(r: requests.Response) -> float | None:
    value = r.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


# --- the client ----------------------------------------------------------------------------------
class HubClient:
    """Reads revisions, small files and safetensors headers from the Hub, through a private cache."""

    def __init__(self, *, endpoint: str | None = None, token: str | None | bool = None,
                 cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                 max_workers: int | None = None, timeout: tuple[float, float] = (5.0, 20.0),
                 retries: int = 4, max_age: str | float | None = None) -> None:
        # HF_ENDPOINT is read now, not when huggingface_hub was imported (its constants are import-time).
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")
        self.offline = bool(hf_constants.HF_HUB_OFFLINE if offline is None else offline)
        #: requests in flight at once (per host): the header reads of a whole repo, 191 shards for
        #: Llama-3.1-405B, go out together (one round trip, not one per batch of workers)
        self.max_workers = max(1, int(max_workers if max_workers is not None
                                      else os.environ.get("HUBVRAM_MAX_CONNECTIONS") or MAX_CONNECTIONS))
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.cache_dir = cache_root(cache_dir)
        self.stats = Stats()
        self._backoff_base = 0.5
        #: seconds after which a stored entry is revalidated online (None: never); offline ignores it
        self.max_age = max_age_from_env() if max_age is None else parse_max_age(max_age)
        if token is None and not self.offline:  # offline needs no token (get_token may refresh/OIDC)
            try:
                token = hub_token()
            except Exception as e:
                raise HubError(f"could not read the Hugging Face token ({type(e).__name__})",
                               hint="check HF_TOKEN or run `hf auth login`") from None
        self._auth = _HubAuth(token, urlsplit(self.endpoint).netloc) if isinstance(token, str) and token else None

        backend, self._temp_cache = _open_cache(self.cache_dir)
        self._session = requests_cache.CachedSession(
            backend=backend, allowable_codes=(200, 206),
            expire_after=requests_cache.NEVER_EXPIRE if self.max_age is None else timedelta(seconds=self.max_age),
            allowable_methods=("GET",), match_headers=["Range"], filter_fn=_cacheable,
            stale_if_error=self.offline)  # offline (only_if_cached): an entry past max_age still answers
        self._session.hooks["response"].append(_drop_304_entity_headers)
        self._session.max_redirects = MAX_REDIRECTS  # a redirect loop fails fast (then is retried)
        self._session.headers["User-Agent"] = "hubvram"
        #: Header reads that miss the cache go through this plain session (same connection pool) and are
        #: stored together afterwards by _store: requests-cache would write three rows per read (the answer,
        #: the CDN hop under its signed URL, a redirect alias), each in its own transaction.
        self._prefetched: dict[tuple[str, str, str], bytes | GatedRepoError] = {}  # see repo_info(prefetch=)
        self._pool: Workers | None = None  # see _workers
        self._workers_lock = threading.Lock()
        self._closed = False
        self._plain = requests.Session()
        self._plain.max_redirects = MAX_REDIRECTS
        self._plain.headers["User-Agent"] = "hubvram"
        for session in (self._session, self._plain):
            session.cookies = _NoCookies()
            session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            _quiet_environment(session)
        if self.offline:
            self._session.adapters.clear()
            for s in (self._session, self._plain):
                s.mount("http://", _NoNetwork())
                s.mount("https://", _NoNetwork())
        else:
            # pool_block: threads of models loaded concurrently wait for a free connection rather than
            # opening (and discarding, with a warning) connections beyond the pool
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.max_workers, max_retries=0,
                                  pool_block=True)
            for s in (self._session, self._plain):
                s.mount("http://", adapter)
                s.mount("https://", adapter)
        #: the plain session's ranged reads (``_plain_get``): http.client (hubvram.transport), unless
        #: $HUBVRAM_HTTP=urllib3 sends them through requests' own adapter (e.g. for `responses` mocks)
        self._ranges = RangeAdapter() if os.environ.get("HUBVRAM_HTTP", "").lower() != "urllib3" else None

    # -- public API -------------------------------------------------------------------------------
    def repo_info(self, repo_id: str, revision: str | None = "main", prefetch: Sequence[str] = (),
                  early: Any = None) -> RepoInfo:
        """Resolve a branch/tag/sha to the commit sha and list the repo's files.

        ``prefetch``: small files (config.json, the index) wanted next. When nothing about this revision
        is cached yet, they are requested at ``revision`` together with the revision lookup instead of
        after it, and kept for :meth:`fetch_file` (and the cache, under the commit's URL) if the answer's
        ``X-Repo-Commit`` is the commit the lookup returned: one round trip instead of three.

        ``early``: a :class:`hubvram.early.EarlyFetch` of this revision lookup and of ``prefetch``, sent
        before this client existed; its clean answers are taken (and stored) instead of asking again."""
        revision = revision or "main"
        pinned = bool(SHA_RE.match(revision))
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
        # the prefetched small files: filename -> Future of its response (None: nothing prefetched)
        r, fetched = (self._early(early, url, repo_id, revision, prefetch) if early is not None and not self.offline
                      else (None, None))
        if r is None:
            ahead = self._prefetch(repo_id, revision, prefetch, url) if prefetch and not self.offline else None
            try:
                r = self._request("api", url, model=repo_id, file=None, revision=revision,
                                  force_refresh=not pinned)
            finally:
                if ahead is not None:
                    ahead.answered.set()
                    ahead.shutdown(wait=True)  # the prefetches ran alongside; now they have answered
            fetched = ahead.futures if ahead is not None else None
        try:
            data = r.json()
        except ValueError:
            raise HubError(f"unexpected answer from {self.endpoint} for revision {revision!r}",
                           model=repo_id) from None
        info = parse_revision_answer(data, endpoint=self.endpoint, repo_id=repo_id, revision=revision)
        sha, files = info.sha, info.files
        if not self.offline and not pinned:
            # Alias the answer under its sha URL, so `org/name@<sha>` works offline after a warm.
            sha_url = f"{self.endpoint}/api/models/{repo_id}/revision/{sha}"
            cache = self._session.cache
            key = cache.create_key(requests.Request("GET", sha_url).prepare())
            if not cache.contains(key=key):
                cache.save_response(r, key)
        if fetched is not None:
            self._keep_prefetched(fetched, repo_id, sha, set(files))
        return info

    def fetch_file(self, repo_id: str, sha: str, filename: str) -> bytes:
        """A small file (config.json, *.index.json) at a pinned commit."""
        content = self._prefetched.pop((repo_id, sha, filename), None)
        if isinstance(content, GatedRepoError):
            raise content  # the prefetch was refused: asking again, pinned, would be refused the same way
        if content is not None:
            return content
        url = self._file_url(repo_id, sha, filename)
        r = self._request("file", url, model=repo_id, file=filename, revision=sha, stream=True)
        return r.content

    def fetch_header(self, repo_id: str, sha: str, filename: str) -> tuple[bytes, int | None]:
        """(header JSON bytes without the 8-byte prefix, file size from Content-Range or None)."""
        return self.fetch_headers(repo_id, sha, [filename])[filename]

    def fetch_headers(self, repo_id: str, sha: str, filenames: Sequence[str],
                      read_sizes: Mapping[str, int] | None = None) -> dict[str, tuple[bytes, int | None]]:
        """Headers of several files concurrently; the first error cancels the rest and is raised.

        ``read_sizes``: bytes to ask for in the first ranged read of each file (default FIRST_READ_BYTES),
        e.g. :func:`hubvram.safetensors.header_read_size` of the tensors an index puts in it."""
        names = list(dict.fromkeys(filenames))
        sizes = {n: max(8, (read_sizes or {}).get(n) or FIRST_READ_BYTES) for n in names}
        # One query for every first read that is already stored; the misses are fetched concurrently and
        # written in batches as they arrive, also when a read fails (what was fetched stays fetched).
        keys = {n: self._range_key(self._file_url(repo_id, sha, n), 0, sizes[n] - 1) for n in names}
        stored = self._stored(keys.values())
        pending = _StoreQueue(self._store)

        def one(name: str, cancel: threading.Event | None) -> tuple[bytes, int | None]:
            return self._fetch_header(repo_id, sha, name, cancel, sizes[name], stored.get(keys[name]), pending,
                                      keys[name])

        try:
            if len(names) <= 1:
                return {n: one(n, None) for n in names}
            cancel = threading.Event()
            futures = {self._workers().submit(one, n, cancel): n for n in names}
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    cancel.set()
                    for f in futures:
                        f.cancel()
                    first = next((f for f in failed if not isinstance(f.exception(), _Cancelled)), failed[0])
                    raise first.exception()  # type: ignore[misc]
                return {name: f.result() for f, name in futures.items()}  # in the order asked
            finally:
                wait(futures)  # the reads still running see `cancel` and stop
        finally:
            pending.flush()

    def _workers(self) -> Workers:
        """The client's threads for header reads, kept from one model to the next (a 405B repo needs 191)."""
        with self._workers_lock:
            if self._closed:
                raise RuntimeError("the HubClient is closed")
            if self._pool is None:
                self._pool = Workers(self.max_workers, name="hubvram-hdr")
            return self._pool

    def _start_workers(self, n: int, until: threading.Event) -> None:
        """Start up to n header-read threads in the background until ``until`` is set: while a first revision
        lookup is in flight the process is idle, and starting a thread takes ~0.15 ms (30 ms for the 191 of a
        405B repo, otherwise spent after the lookup answers). A fast answer leaves few threads started."""
        try:
            pool = self._workers()
        except RuntimeError:  # closed
            return
        threading.Thread(target=pool.start, args=(n, until), name="hubvram-start", daemon=True).start()

    def close(self) -> None:
        with self._workers_lock:
            self._closed = True
            if self._pool is not None:
                self._pool.close()  # idle threads told to stop; nothing is running (fetch_headers waits)
                self._pool = None
        self._prefetched.clear()
        self._session.close()
        self._plain.close()
        if self._ranges is not None:
            self._ranges.close()
        if self._temp_cache:
            shutil.rmtree(self._temp_cache, ignore_errors=True)

    def __enter__(self) -> "HubClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------
    def _prefetch(self, repo_id: str, revision: str, filenames: Sequence[str], api_url: str) -> Any:
        """Start GETs of small files at ``revision`` (uncached, plain session) when the revision lookup is
        not cached (a first fetch); returns the running pool (``.futures``: filename -> future) or None."""
        if self._session.cache.contains(url=api_url):
            return None  # fetched before: the files are most likely cached under the commit's URLs
        pool = ThreadPoolExecutor(max_workers=len(filenames), thread_name_prefix="hubvram-ahead")
        pool.answered = threading.Event()  # type: ignore[attr-defined]
        self._start_workers(self.max_workers, pool.answered)  # type: ignore[attr-defined]
        pool.futures = {name: pool.submit(self._request, "file", self._file_url(repo_id, revision, name),  # type: ignore[attr-defined]
                                          model=repo_id, file=name, revision=revision, stream=True,
                                          session=self._plain)
                        for name in dict.fromkeys(filenames)}
        return pool

    def _early(self, early: Any, url: str, repo_id: str, revision: str,
               prefetch: Sequence[str]) -> tuple[Any, Any]:
        """(the revision answer, {filename: Future of its response}) from an EarlyFetch of
        this URL, the answer stored as the session would store it; (None, None) when it has no answer to
        take. A refusal is raised as :meth:`_check` raises it; after a 429/5xx the server's Retry-After
        (or the first backoff) is waited before asking again, as :meth:`_request` would."""
        if early.urls.get("api") != url:
            return None, None
        got = early.answer("api")
        r = self._early_response(got, "api", repo_id, None, revision)
        if r is None:
            self._early_backoff(got)
            return None, None
        self._store([(self._session.cache.create_key(requests.Request("GET", url).prepare()), r)])
        fetched: dict[str, Future] = {}
        for name in dict.fromkeys(prefetch):
            future: Future = Future()
            try:
                answer = early.answer(name)
                file_r = self._early_response(answer, "file", repo_id, name, revision)
                if file_r is None:  # ask now, as _prefetch would have
                    self._early_backoff(answer)
                    file_r = self._request("file", early.urls[name], model=repo_id, file=name, revision=revision,
                                           stream=True, session=self._plain)
            except HubvramError as e:
                future.set_exception(e)
            else:
                future.set_result(file_r)
            fetched[name] = future
        return r, fetched

    def _early_response(self, answer: Any, kind: str, model: str, file: str | None, revision: str) -> Any:
        """An EarlyFetch answer as a response to take (a 200), None to ask again (none came, a redirect,
        429/5xx: HubClient's retries decide), or the refusal raised as :meth:`_check` raises it."""
        if answer is None or answer.status in _RETRY_STATUS or 300 <= answer.status < 400:
            return None
        from .early import as_response

        self.stats.add(kind)
        return self._check(as_response(answer), kind, model, file, revision)

    def _early_backoff(self, answer: Any) -> None:
        """Before asking again after an early 429/5xx: its Retry-After, else the first backoff."""
        if answer is None or answer.status not in _RETRY_STATUS:
            return
        from .early import as_response

        self.stats.add("retries")
        wait_s = _retry_after(as_response(answer))
        self._pause(wait_s if wait_s is not None else self._backoff(0), None)

    def _keep_prefetched(self, fetched: Mapping[str, Future], repo_id: str, sha: str, files: set[str]) -> None:
        """Keep the prefetched answers that are of commit ``sha`` for fetch_file, and store them as if they
        had been fetched at the commit's URL. Anything else (not in the repo, failed, another commit, a
        redirect) is dropped: fetch_file then asks again, pinned to the commit, and reports the error."""
        keep = []
        for name, future in fetched.items():
            if name in files and isinstance(future.exception(), GatedRepoError):
                self._prefetched[(repo_id, sha, name)] = future.exception()  # type: ignore[assignment]
            if name not in files or future.exception() is not None:
                continue
            r = future.result()
            if r.status_code != 200 or r.history or r.headers.get("X-Repo-Commit") != sha:
                self.stats.add("prefetch_dropped")
                continue
            sha_url = self._file_url(repo_id, sha, name)
            self._prefetched[(repo_id, sha, name)] = r.content
            if _cacheable(r):
                keep.append((self._session.cache.create_key(requests.Request("GET", sha_url).prepare()), r, sha_url))
        self._store(keep)

    def _file_url(self, repo_id: str, revision: str, filename: str) -> str:
        """``{endpoint}/{repo}/resolve/{rev}/{file}``, quoted as ``huggingface_hub.hf_hub_url`` does."""
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    def _fetch_header(self, repo_id: str, sha: str, filename: str, cancel: threading.Event | None,
                      size: int, stored: Any, pending: _StoreQueue, key: str) -> tuple[bytes, int | None]:
        url = self._file_url(repo_id, sha, filename)

        def ranged(kind: str, start: int, end: int) -> tuple[bytes, int | None]:
            first = kind == "header"  # its stored answer was looked up with the others'
            return self._ranged(kind, url, start, end, repo_id, filename, sha, cancel,
                                stored if first else _LOOK_UP, pending, key if first else None)

        return read_header(ranged, model=repo_id, file=filename, size=size)

    def _range_key(self, url: str, start: int, end: int) -> str:
        """The requests-cache key of a ranged GET (method, normalized URL, Range header, serializer)."""
        key = cache_key(url, range_header(start, end))
        if key is not None:
            return key  # = requests-cache's key, without its URL normalization (~0.1 ms)
        prepared = requests.Request("GET", url, headers={"Range": range_header(start, end)}).prepare()
        return self._session.cache.create_key(prepared)

    def _stored(self, keys: Any) -> dict[str, Any]:
        """The stored answers for these cache keys, read in one query; an unreadable row is a miss."""
        responses = self._session.cache.responses
        wanted = [k for k in dict.fromkeys(keys) if _KEY_RE.match(k)]
        out: dict[str, Any] = {}
        with responses.connection() as con:
            for i in range(0, len(wanted), 500):
                # keys inlined (hex only), as requests-cache does: placeholders on its shared connection
                # are not safe under concurrency on every Python
                marks = ",".join(f"'{k}'" for k in wanted[i:i + 500])
                for key, value in con.execute(
                        f"SELECT key, value FROM {responses.table_name} WHERE key IN ({marks})").fetchall():
                    obj = responses.deserialize(key, value)
                    if obj is not None:
                        out[key] = obj
        return out

    def _store(self, items: list[tuple[Any, ...]]) -> None:
        """Store fetched answers as CachedSession would (expiry, redaction), in one transaction. Items are
        ``(key, response)`` or ``(key, response, url)``: stored as the answer to ``url`` itself, without the
        redirect that led elsewhere (a CDN's signed URL is of no use later; revalidation asks ``url`` again)."""
        if not items:
            return
        cache, settings = self._session.cache, self._session.settings
        expires = get_expiration_datetime(settings.expire_after)
        rows = []
        for key, r, *as_url in items:
            if as_url:
                r.history = []  # (the response is done with: _ranged has read it)
            cached = requests_cache.CachedResponse.from_response(r, expires=expires)
            if as_url:
                cached.url = cached.request.url = as_url[0]
            rows.append((key, redact_response(cached, settings.ignored_parameters)))
        with cache.responses.connection():  # opened, for bulk_commit
            pass
        with cache.responses.bulk_commit():
            for key, cached in rows:
                cache.responses[key] = cached

    def _ranged(self, kind: str, url: str, start: int, end: int, model: str, file: str, sha: str,
                cancel: threading.Event | None, stored: Any = _LOOK_UP,
                pending: _StoreQueue | None = None, key: str | None = None) -> tuple[bytes, int | None]:
        """One ranged read: the stored answer when there is one (``stored``, or looked up when _LOOK_UP),
        else fetched through the plain session and handed to ``pending`` (stored at once without one)."""
        end = min(end, 8 + MAX_HEADER_BYTES - 1)  # never more than the largest legal header
        headers = {"Range": range_header(start, end), "Accept-Encoding": "identity"}
        key = key or self._range_key(url, start, end)
        if stored is _LOOK_UP:
            stored = self._stored([key]).get(key)
        if stored is not None and (self.offline or not stored.is_expired):
            self.stats.add("cache_hits")
            r = stored
        elif self.offline:
            raise OfflineMissError(f"offline and not cached ({kind} {file})", model=model, file=file,
                                   hint=OFFLINE_HINT.format(repo_id=model))
        elif stored is not None:  # past max_age: requests-cache revalidates it (If-None-Match; 304 renews)
            r = self._request(kind, url, model=model, file=file, revision=sha, headers=headers,
                              stream=True, cancel=cancel)
        else:
            r = self._request(kind, url, model=model, file=file, revision=sha, headers=headers,
                              stream=True, cancel=cancel, session=self._plain)
            if _cacheable(r):
                if pending is None:
                    self._store([(key, r, url)])
                else:
                    pending.add(key, r, url)
        try:
            if r.status_code == 206:
                got = _CONTENT_RANGE_RE.match(r.headers["Content-Range"])
                return r.content, (None if got is None or got[3] == "*" else int(got[3]))
            # 200: the server ignored Range. Read only what was asked for, store nothing.
            buf = bytearray()
            for chunk in r.iter_content(chunk_size=1 << 16):
                buf += chunk
                if len(buf) > end:
                    break
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() and _identity(r) else None
            return bytes(buf[start:end + 1]), total
        finally:
            r.close()

    def _request(self, kind: str, url: str, *, model: str, file: str | None, revision: str,
                 headers: dict[str, str] | None = None, stream: bool = False,
                 force_refresh: bool = False, cancel: threading.Event | None = None,
                 session: requests.Session | None = None) -> Any:
        """GET with cache, retries (429/5xx/timeouts/truncation) and Hub error mapping.

        ``session``: the plain session (no cache look-up, nothing stored) instead of the cached one."""
        if self.offline:
            try:
                r = self._session.get(url, headers=headers, only_if_cached=True, stream=stream)
            except _OfflineBlocked:  # defence in depth: only_if_cached should never get this far
                r = None
            if r is None or r.status_code == 504:  # requests-cache's "Not Cached"; 504 is never stored
                raise OfflineMissError(f"offline and not cached ({kind} {file or revision})", model=model,
                                       file=file, hint=OFFLINE_HINT.format(repo_id=model))
            self.stats.add("cache_hits")
            return self._check(r, kind, model, file, revision)
        deadline = time.monotonic() + TOTAL_BUDGET_S
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            wait_s: float | None = None
            try:
                if session is None:
                    r = self._session.get(url, headers=headers, auth=self._auth, timeout=self.timeout,
                                          stream=stream, force_refresh=force_refresh)
                else:
                    r = self._plain_get(url, headers, stream)
                    if r.status_code == 206 or (r.status_code == 200 and "Range" not in (headers or {})
                                                and _oversized(r) is None):
                        r.content  # noqa: B018 - read here, so that a cut-short body is retried like any
                        #            transport error (requests-cache reads it inside get())
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError, requests.TooManyRedirects) as e:
                self.stats.add(kind)
                problem = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            else:
                self.stats.add("cache_hits" if getattr(r, "from_cache", False) else kind)
                if getattr(r, "revalidated", False):
                    self.stats.add("revalidated")  # a 304 renewed a stored entry: a request, no body
                size = _oversized(r)
                if size is not None:
                    r.close()
                    raise (ConfigError if kind == "file" else HubError)(
                        f"file is {size} bytes, larger than the {MAX_FILE_BYTES}-byte limit", model=model, file=file)
                if r.status_code in _RETRY_STATUS:
                    problem, wait_s = f"HTTP {r.status_code}", _retry_after(r)
                    r.close()
                else:
                    defect = _defect(r) if r.status_code in (200, 206) else None
                    if defect is None:
                        return self._check(r, kind, model, file, revision)
                    problem = defect
                    r.close()
            delay = wait_s if wait_s is not None else self._backoff(attempt)
            if attempt >= self.retries or time.monotonic() + delay > deadline:
                what = f"{kind} request failed after {attempt + 1} tries ({problem})"
                raise NetworkError(what, model=model, file=file, hint=NETWORK_HINT)
            attempt += 1
            self.stats.add("retries")
            self._pause(delay, cancel)

    def _plain_get(self, url: str, headers: dict[str, str] | None, stream: bool) -> Any:
        """GET through the plain session, following redirects. Without a proxy it goes straight to the
        connection pool (requests.Session's per-request merging of settings, cookies and hooks, none of
        which the plain session uses, is most of a header read's CPU time besides the socket work); the
        token goes only to the endpoint's host (_HubAuth), as through the session."""
        s = self._plain
        if s.trust_env or s.proxies or not isinstance(s.get_adapter(url), HTTPAdapter):
            return s.get(url, headers=headers, auth=self._auth, timeout=self.timeout, stream=stream)
        fields = {**s.headers, **(headers or {})}
        history: list[Any] = []
        for _ in range(s.max_redirects + 1):
            p = requests.PreparedRequest()
            p.prepare(method="GET", url=url, headers=fields, auth=self._auth)
            # ranged reads (bounded, the many): http.client; whole files (config, index): urllib3
            adapter = self._ranges if self._ranges is not None and "Range" in fields else s.get_adapter(url)
            r = adapter.send(p, stream=stream, timeout=self.timeout, verify=s.verify, proxies={})
            if not r.is_redirect:
                r.history = history
                return r
            r.content  # noqa: B018 - drain the (empty) body so that the connection goes back to the pool
            r.close()
            history.append(r)
            url = requests.utils.requote_uri(urljoin(r.url, r.headers["location"]))
        raise requests.TooManyRedirects(f"Exceeded {s.max_redirects} redirects.", response=r)

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 2`` when the server named none: full jitter, capped."""
        return random.uniform(0, min(BACKOFF_CAP_S, self._backoff_base * 2 ** attempt))

    def _pause(self, seconds: float, cancel: threading.Event | None) -> None:
        if cancel is not None:
            if cancel.wait(seconds):
                raise _Cancelled()
        else:
            time.sleep(seconds)

    def _check(self, r: Any, kind: str, model: str, file: str | None, revision: str) -> Any:
        """Map an HTTP answer to hubvram errors; returns r when it is a success."""
        if r.status_code in (200, 206):
            return r
        status = r.status_code
        code = r.headers.get("X-Error-Code", "")
        message = r.headers.get("X-Error-Message", "")
        r.close()
        gated_hint = (f"request access at {self.endpoint}/{model} and log in with `hf auth login` "
                      f"or set HF_TOKEN")
        if code == "GatedRepo" or (status == 403 and not code):
            raise GatedRepoError("gated model: access not granted to this account", model=model,
                                 file=file, hint=gated_hint)
        if status == 401 and not code and "invalid credentials" in message.lower():
            raise HubError("the Hub rejected the token", model=model, file=file,
                           hint="check HF_TOKEN or run `hf auth login`")
        if code == "RepoNotFound" or (not code and (status == 401 or (status == 404 and kind == "api"))):
            raise RepoNotFoundError(f"model not found on {self.endpoint}", model=model, file=file,
                                    hint="check the name; a private model needs `hf auth login` or HF_TOKEN")
        if code == "RevisionNotFound":
            raise RevisionNotFoundError(f"revision {revision!r} not found", model=model, file=file)
        if code == "EntryNotFound" or status == 404:
            raise EntryNotFoundError(f"file not found at revision {revision[:12]}", model=model, file=file)
        if status == 416:
            raise HeaderError("file is empty (the server refused the byte range)", model=model, file=file)
        raise HubError(f"HTTP {status} {r.reason or ''}".strip() + (f": {message[:200]}" if message else ""),
                       model=model, file=file)
