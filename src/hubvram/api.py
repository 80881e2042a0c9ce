"""The typed Python API: model references in, :class:`Architecture` (and estimates) out.

    >>> from hubvram import load_model
    >>> arch = load_model("meta-llama/Meta-Llama-3-8B", offline=True)
    >>> arch.counts.total
    8030261248

Where answers come from, in order: a local folder (no network); otherwise the Hub through the HTTP cache
(online: live metadata wins); when offline (``--offline`` / ``HF_HUB_OFFLINE=1``) the HTTP cache, then the
metadata store (``hubvram cache import``), then the bundled snapshot; when the network is unreachable, the
same three with a warning. Offline with no HTTP cache file, neither requests nor the cache is touched.
A commit fetched before is answered from its memo (:mod:`hubvram.memo`) instead of its stored headers; a
warm online run tries :mod:`hubvram.fastpath` (no HTTP stack) before it makes a client, and a first fetch
starts its first round trip (:mod:`hubvram.early`) before it makes one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Iterable, Sequence

from . import snapshot
from .architecture import Architecture, describe
from .errors import HubvramError, NetworkError, OfflineMissError
from .metadata import Metadata, ModelRef
from .sources import from_hub, from_local

if TYPE_CHECKING:  # pragma: no cover
    from .early import EarlyFetch
    from .hub import HubClient


def offline_from_env() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it (constants._is_true), without importing it."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def make_client(*, offline: bool | None = None, cache_dir=None, token=None, endpoint=None,
                max_age=None) -> "HubClient":
    if offline_from_env() if offline is None else offline:  # answered from the cache file: no HTTP stack
        from .httpcache import open_reader

        reader = open_reader(cache_dir, endpoint)
        if reader is not None:
            return reader  # type: ignore[return-value]
    from .hub import HubClient  # imported lazily: local folders and snapshots never need requests

    return HubClient(endpoint=endpoint, token=token, cache_dir=cache_dir, offline=offline, max_age=max_age)


def load_metadata(ref: str | ModelRef, *, revision: str | None = None, client: "HubClient | None" = None,
                  offline: bool | None = None, cache_dir=None, token=None, endpoint=None,
                  max_age=None) -> Metadata:
    """Fetch (or read) the metadata of one model. ``max_age``: see :func:`hubvram.hub.parse_max_age`."""
    if not isinstance(ref, ModelRef):
        ref = ModelRef.parse(ref, revision=revision)
    if ref.is_local:
        return from_local(ref)
    if offline is None:
        offline = offline_from_env()
    if offline and client is None and not _http_cache_may_have(ref, cache_dir, endpoint):
        return _stored(ref, cache_dir, None)  # the HTTP cache cannot answer: no requests import, no files
    early = None
    if not offline and client is None:
        meta = _fast(ref, cache_dir=cache_dir, endpoint=endpoint, token=token, max_age=max_age)
        if meta is not None:
            return meta
        early = _early(ref, cache_dir=cache_dir, endpoint=endpoint, token=token)
    own = client is None
    client = client or make_client(offline=offline, cache_dir=cache_dir, token=token, endpoint=endpoint,
                                   max_age=max_age)
    try:
        return from_hub(ref, client, early)
    except OfflineMissError as e:
        return _stored(ref, getattr(client, "cache_dir", cache_dir), e)
    except NetworkError as e:
        return _unreachable(ref, client, cache_dir, e)
    finally:
        if own:
            client.close()


def _fast(ref: ModelRef, **kwargs) -> Metadata | None:
    """A warm online answer without the HTTP stack (:mod:`hubvram.fastpath`), or None."""
    if not _memo_exists(kwargs.get("cache_dir")):
        return None
    from . import fastpath

    return fastpath.answer(ref, **kwargs)


def _early(ref: ModelRef, *, cache_dir, endpoint, token) -> "EarlyFetch | None":
    """For a first fetch (the revision asked is not in the HTTP cache), its first round trip started now,
    while the HTTP stack imports (:mod:`hubvram.early`); None otherwise."""
    if os.environ.get("HUGGINGFACE_CO_STAGING") or _http_cache_may_have(ref, cache_dir, endpoint):
        return None
    from .early import EarlyFetch
    from .httpcache import default_endpoint
    from .sources import PREFETCH

    return EarlyFetch.start((endpoint or default_endpoint()).rstrip("/"), ref.repo_id, ref.revision or "main",
                            PREFETCH, token)


def _stored(ref: ModelRef, cache_dir, miss: OfflineMissError | None) -> Metadata:
    """Offline after the HTTP cache: imported metadata, then the bundled snapshot (no revision asked)."""
    meta = None
    if _store_exists(cache_dir):  # hubvram.cache is a large module: only imported when there is a store
        from .cache import store_lookup

        meta = store_lookup(ref, cache_dir)
    if meta is None and ref.revision is None:
        meta = snapshot.load(ref.repo_id)
    if meta is not None:
        return meta
    if miss is not None and miss.file is not None:
        raise miss  # the revision is cached but a file is not: say which
    raise OfflineMissError("offline, and not in the HTTP cache, imported metadata or the bundled snapshot",
                           model=ref.display, hint=f"run `hubvram cache warm {ref.display}` with a network "
                                                   "first, or `hubvram cache import FILE`")


def _unreachable(ref: ModelRef, client: "HubClient", cache_dir, e: NetworkError) -> Metadata:
    """Online but the network failed: what we would answer offline, with a warning saying so."""
    try:
        offline_client = make_client(offline=True, cache_dir=getattr(client, "cache_dir", cache_dir),
                                     endpoint=getattr(client, "endpoint", None))
        try:
            meta = from_hub(ref, offline_client)
            where = f"the HTTP cache (commit {meta.revision})"
        finally:
            offline_client.close()
    except OfflineMissError:
        try:
            meta = _stored(ref, getattr(client, "cache_dir", cache_dir), None)
        except OfflineMissError:
            raise e from None
        where = (f"the bundled snapshot, recorded {meta.provenance.recorded}" if meta.source == "snapshot"
                 else f"imported metadata (commit {meta.revision}), recorded {meta.provenance.recorded}")
    return replace(meta, warnings=meta.warnings + (f"network unreachable ({e.message}): answered from {where}",))


def _http_cache_may_have(ref: ModelRef, cache_dir, endpoint) -> bool:
    if not _http_cache_exists(cache_dir):
        return False
    from .cache import http_cache_may_have

    return http_cache_may_have(ref.repo_id, cache_dir, ref.revision, endpoint)


def _store_exists(cache_dir) -> bool:
    from .sources import cache_root

    return (cache_root(cache_dir) / "metadata").is_dir()  # hubvram.cache.store_dir


def _memo_exists(cache_dir) -> bool:
    from .sources import cache_root

    return (cache_root(cache_dir) / "memo").is_dir()  # hubvram.memo.DIRNAME


def _http_cache_exists(cache_dir) -> bool:
    from .sources import cache_root

    return (cache_root(cache_dir) / "http_cache.sqlite").exists()


def load_model(ref: str | ModelRef, **kwargs) -> Architecture:
    """Metadata -> Architecture for one model (see :func:`load_metadata` for the keyword arguments)."""
    return describe(load_metadata(ref, **kwargs))


def load_models(refs: Sequence[str | ModelRef], *, max_workers: int = 8, client: "HubClient | None" = None,
                offline: bool | None = None, cache_dir=None, token=None, endpoint=None,
                on_done=None, max_age=None) -> list[Architecture | HubvramError]:
    """Load many models concurrently; a failing model yields its error in its slot, the others complete."""
    parsed: list[ModelRef | HubvramError] = []
    for r in refs:
        try:
            parsed.append(r if isinstance(r, ModelRef) else ModelRef.parse(r))
        except HubvramError as e:
            parsed.append(e)
    needs_hub = any(isinstance(p, ModelRef) and not p.is_local for p in parsed)
    offline = offline_from_env() if offline is None else offline
    # offline with no HTTP cache file: each model goes the fast path (store, snapshot), no client
    own = client is None and needs_hub and not (offline and not _http_cache_exists(cache_dir))
    fast = own and not offline and _memo_exists(cache_dir)  # warm online answers first, client on first need
    shared: list = [client]
    lock = threading.Lock()

    def the_client() -> "HubClient | None":
        with lock:
            if shared[0] is None and own:
                shared[0] = make_client(offline=offline, cache_dir=cache_dir, token=token, endpoint=endpoint,
                                        max_age=max_age)
            return shared[0]

    if own and not fast:
        the_client()

    def one(p: ModelRef | HubvramError) -> Architecture | HubvramError:
        if isinstance(p, HubvramError):
            return p
        try:
            if fast and not p.is_local:
                meta = _fast(p, cache_dir=cache_dir, endpoint=endpoint, token=token, max_age=max_age)
                if meta is not None:
                    return describe(meta)
            return load_model(p, client=the_client(), offline=offline, cache_dir=cache_dir)
        except HubvramError as e:
            return e
        finally:
            if on_done:
                on_done()

    try:
        if len(parsed) == 1 or offline:
            # offline, every answer is local and CPU-bound: threads would only contend for the interpreter
            # lock (100 cached models: ~0.3 s in turn, ~0.5 s on 8 threads)
            return [one(p) for p in parsed]
        from concurrent.futures import ThreadPoolExecutor  # only for many models (7 ms of start-up)

        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(parsed)))) as pool:
            return list(pool.map(one, parsed))
    finally:
        if own and shared[0] is not None:
            shared[0].close()


def iter_ids_from_file(lines: Iterable[str]) -> list[str]:
    """Model ids from a file: one per line, ``#`` starts a comment, blank lines ignored."""
    out = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            out.append(text)
    return out
