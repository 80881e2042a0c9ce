"""Warm online answers without the HTTP stack: the memo, and at most one revision lookup by http.client.

Importing requests, requests-cache and huggingface_hub costs ~200 ms, more than everything else a warm
``hubvram MODEL`` does. When the model was fetched before, an online run needs none of it:

* ``org/name@<sha>``: the memo of that commit (:mod:`hubvram.memo`) answers if it is younger than
  ``max_age``, exactly as the HTTP cache would answer without sending anything;
* ``org/name`` or ``org/name@branch``: the branch still has to be asked, because it may have moved. The
  HTTP cache says which commit the branch was at when last seen; if the memo has that commit, one GET of
  ``/api/models/<id>/revision/<branch>`` (http.client, standard library) confirms the branch is still
  there, and the memo answers. Nothing is written: the stored answer for the branch is already right.

Anything else goes the full way (:class:`hubvram.hub.HubClient`), which then sends the requests again with
its retries, error mapping and cache updates: a branch that moved, a memo miss, any HTTP status but 200,
a redirect, a network error, a proxy, a token that only huggingface_hub knows how to get (OIDC, an
OAuth token it may need to refresh), an HTTP cache file that is no longer private (HubClient repairs it). The fast path never decides an error; it only ever answers or steps aside.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

from . import memo
from .early import direct_token, get_once, request_headers
from .errors import HubvramError
from .httpcache import default_endpoint, max_age_from_env, open_reader, parse_max_age, parse_revision_answer
from .metadata import SHA_RE, Metadata, ModelRef



def answer(ref: ModelRef, *, cache_dir=None, endpoint: str | None = None, token: str | bool | None = None,
           max_age=None) -> Metadata | None:
    """The online answer for ``ref`` from the memo (see the module docstring), or None: go the full way."""
    if ref.is_local or os.environ.get("HUGGINGFACE_CO_STAGING") or not _private(cache_dir):
        return None
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    try:
        age = max_age_from_env() if max_age is None else parse_max_age(max_age)
    except ValueError:
        return None  # HubClient reports it
    revision = ref.revision or "main"
    if SHA_RE.match(revision):
        return memo.lookup(ref.repo_id, revision, endpoint=endpoint, cache_dir=cache_dir, max_age=age)
    seen = _last_seen(ref.repo_id, revision, cache_dir, endpoint)
    meta = memo.lookup(ref.repo_id, seen, endpoint=endpoint, cache_dir=cache_dir, max_age=age) if seen else None
    if meta is None:
        return None
    return meta if branch_sha(endpoint, ref.repo_id, revision, token) == seen else None


def _private(cache_dir) -> bool:
    """Whether the HTTP cache file is ours and 0600, as HubClient leaves it (or absent): anything else goes
    the full way, where HubClient makes it private again or sets it aside."""
    from .sources import cache_root

    try:
        st = os.stat(cache_root(cache_dir) / "http_cache.sqlite")
        uid = getattr(os, "geteuid", None)  # (not on Windows: the mode check alone)
        return st.st_mode & 0o777 == 0o600 and (uid is None or st.st_uid == uid())
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _last_seen(repo_id: str, revision: str, cache_dir, endpoint: str) -> str | None:
    """The commit the HTTP cache last saw ``revision`` at (standard library read), or None."""
    reader = open_reader(cache_dir, endpoint)
    if reader is None:
        return None
    try:
        with reader:
            return reader.repo_info(repo_id, revision).sha
    except HubvramError:
        return None


def branch_sha(endpoint: str, repo_id: str, revision: str, token: str | bool | None = None) -> str | None:
    """The commit ``revision`` is at now, by one plain GET of the revision API; None for anything but a
    clean 200 answer (or when a proxy or a token source only huggingface_hub handles is configured)."""
    token = direct_token(endpoint, token)
    if token is None:
        return None
    import http.client

    url = f"{endpoint.rstrip('/')}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
    try:
        answer = get_once(url, request_headers(token))
        if answer is None or answer.status != 200:
            return None
        info = parse_revision_answer(json.loads(answer.body), endpoint=endpoint, repo_id=repo_id, revision=revision)
    except (OSError, ValueError, HubvramError, http.client.HTTPException):
        return None
    return info.sha
