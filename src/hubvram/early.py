"""A first fetch's first round trip, sent while the HTTP stack is still being imported.

A cold ``hubvram MODEL`` imports requests and requests-cache (~150 ms) before its first request. The first
round trip (the revision lookup, with config.json and the index at that revision) needs none of it:
:class:`EarlyFetch` sends those GETs on http.client threads as soon as the model is known, and
:meth:`hubvram.hub.HubClient.repo_info` takes their answers instead of asking again: stored in the cache
exactly as if it had fetched them itself, checked by the same rules. A 200 with its complete body is
taken; a refusal (401/403/404) is reported as HubClient reports it, without asking again; for anything
else (a redirect, 429, 5xx, a network error) HubClient sends the request itself, with its retries. Nothing is started when a proxy is configured or the token is one only huggingface_hub
can produce (:func:`hubvram.tokens.plain_token`).
"""

from __future__ import annotations

import threading
from typing import Any, Sequence
from urllib.parse import quote, urlsplit

from .tokens import plain_token

MAX_BODY = 50_000_000  # = hub.MAX_FILE_BYTES
TIMEOUT_S = 5.0  # = HubClient's connect timeout; a slower answer is asked again by HubClient


class Answer:
    """One answer: its status and headers, the whole body of a 200 (b"" otherwise), the request headers sent."""

    __slots__ = ("url", "status", "reason", "headers", "body", "version", "sent")

    def __init__(self, url: str, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
                 version: int, sent: dict[str, str]) -> None:
        self.url, self.status, self.reason, self.headers = url, status, reason, headers
        self.body, self.version, self.sent = body, version, sent


class EarlyFetch:
    """GETs of ``/api/models/<id>/revision/<rev>`` and of ``filenames`` at ``rev``, one thread each."""

    def __init__(self, endpoint: str, repo_id: str, revision: str, filenames: Sequence[str], token: str | bool):
        base = endpoint.rstrip("/")
        self.endpoint, self.repo_id, self.revision = base, repo_id, revision
        self.urls = {"api": f"{base}/api/models/{repo_id}/revision/{quote(revision, safe='')}",
                     **{name: f"{base}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(name)}"
                        for name in dict.fromkeys(filenames)}}
        # every URL is on the endpoint's host: the token goes with each (never followed to another host)
        self._headers = request_headers(token)
        self._answers: dict[str, Answer | None] = {}
        self._done = {key: threading.Event() for key in self.urls}
        for key, url in self.urls.items():
            threading.Thread(target=self._get, args=(key, url), name=f"hubvram-early-{key}", daemon=True).start()

    @classmethod
    def start(cls, endpoint: str, repo_id: str, revision: str, filenames: Sequence[str],
              token: str | bool | None = None) -> "EarlyFetch | None":
        """Start the GETs, or None when they should be left to HubClient (proxy, token it must resolve)."""
        token = direct_token(endpoint, token)
        return None if token is None else cls(endpoint, repo_id, revision, filenames, token)

    def answer(self, key: str, timeout: float = TIMEOUT_S) -> Answer | None:
        """The answer for ``key`` ("api" or a filename), waiting for it; None if none came (a transport
        failure, or a 200 without a complete, bounded body)."""
        event = self._done.get(key)
        if event is None or not event.wait(timeout):
            return None
        return self._answers.get(key)

    def _get(self, key: str, url: str) -> None:
        try:
            self._answers[key] = get_once(url, self._headers)
        except Exception:  # noqa: BLE001 - any failure: HubClient asks again and reports it
            self._answers[key] = None
        finally:
            self._done[key].set()


def direct_token(endpoint: str, token: str | bool | None) -> str | bool | None:
    """The token to send with a direct (http.client) request to ``endpoint``: ``token`` itself, or the plain
    one when ``token`` is None (False: none); None when no direct request should be made: a proxy is
    configured, the endpoint is not plain http(s), or only huggingface_hub can give the token."""
    from .netenv import proxies_configured

    if proxies_configured():
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return None
    return plain_token() if token is None else token


def request_headers(token: str | bool) -> dict[str, str]:
    headers = {"User-Agent": "hubvram", "Accept-Encoding": "identity"}
    if isinstance(token, str) and token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def get_once(url: str, headers: dict[str, str]) -> Answer | None:
    """One GET on a new connection: the answer (a 200's whole body, another status's headers), or None for
    a 200 without a complete body within :data:`MAX_BODY`. Transport failures raise (OSError, HTTPException)."""
    import http.client

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        from . import netenv

        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=TIMEOUT_S, context=netenv.context(True))
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", target, headers=headers)
        r = conn.getresponse()
        if r.status != 200:  # its status and headers say what went wrong (HubClient maps them); no body
            return Answer(url, r.status, r.reason, r.getheaders(), b"", r.version, dict(headers))
        length = r.getheader("Content-Length") or ""
        if not length.isdigit() or int(length) > MAX_BODY:
            return None
        body = r.read(int(length))
        if len(body) != int(length):
            return None
        return Answer(url, r.status, r.reason, r.getheaders(), body, r.version, dict(headers))
    finally:
        conn.close()


def as_response(answer: Answer) -> Any:
    """The answer as a complete :class:`requests.Response` (for HubClient's checks and its cache)."""
    from .transport import build_response

    return build_response(answer.url, answer.sent, answer.status, answer.reason, answer.headers, answer.body,
                          answer.version)
