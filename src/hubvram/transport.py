"""A requests transport adapter on http.client, for the ranged header reads.

A Llama-3.1-405B checkpoint is 191 shards: 382 requests (a ``resolve/`` 302, then the CDN's 206) that go
out together. Their cost is CPU under the interpreter lock, and it decides when the last one is sent:
through urllib3 a header read costs ~1.7 ms of CPU here, through http.client ~0.9 ms (bench/speed.py, (c)).
:class:`RangeAdapter` is that: a :class:`requests.adapters.BaseAdapter` whose ``send`` uses a pool of
keep-alive ``http.client`` connections per (scheme, host, port) and returns a complete
:class:`requests.Response` (body read, connection back in the pool), so everything above it (retries,
error mapping, the checks of :mod:`hubvram.hub`, storing into requests-cache) is unchanged.

Only bounded reads come here: a request with a ``Range`` header reads at most the range's length, also
when the server ignores the range and answers 200 with the whole file (the connection is then closed,
not pooled); any other answer body at most :data:`MAX_OTHER_BODY` bytes. Transport failures are raised
as requests' own exceptions (ConnectTimeout/ReadTimeout, ConnectionError, ChunkedEncodingError), which
:meth:`hubvram.hub.HubClient._request` retries; a pooled connection the server closed meanwhile is
replaced once, before anything was received, as urllib3 does. No proxy support: the client uses this
adapter only when no proxy is configured.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from . import netenv

MAX_OTHER_BODY = 1 << 20  # a redirect's or an error's body
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d+)$")
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_Key = tuple[str, str, int]


def _failure(e: BaseException, request: requests.PreparedRequest) -> requests.RequestException:
    """A transport failure as the requests exception HubClient retries."""
    if isinstance(e, http.client.IncompleteRead):
        return requests.exceptions.ChunkedEncodingError(f"truncated answer: {len(e.partial)} bytes read",
                                                        request=request)
    if isinstance(e, (TimeoutError, socket.timeout)):
        return requests.exceptions.ReadTimeout(f"read timed out ({e})", request=request)
    return requests.ConnectionError(f"{type(e).__name__}: {e}", request=request)


class RangeAdapter(BaseAdapter):
    """``send`` for GETs with a ``Range`` header, over pooled http.client connections (thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    # -- BaseAdapter ----------------------------------------------------------------------------
    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        url = request.url or ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise requests.exceptions.InvalidURL(f"cannot send to {url!r}")
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connect_s, read_s = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        headers = dict(request.headers)
        headers.setdefault("Accept-Encoding", "identity")
        asked = _RANGE_RE.match(headers.get("Range", ""))
        for attempt in (1, 2):
            conn, reused = self._take(key, connect_s, read_s, verify)
            try:
                conn.request(request.method or "GET", target, headers=headers)
                r = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if isinstance(e, _STALE) and reused and attempt == 1:
                    continue  # the server closed an idle connection: once more on a new one
                raise _failure(e, request) from None
            break
        return self._response(request, r, conn, key, asked)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    # -- internals ------------------------------------------------------------------------------
    def _take(self, key: _Key, connect_s: Any, read_s: Any, verify: Any) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            pool = self._idle.get(key)
            if pool:
                return pool.pop(), True
        scheme, host, port = key
        try:
            if scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, port, timeout=connect_s, context=netenv.context(verify))
            else:
                conn = http.client.HTTPConnection(host, port, timeout=connect_s)
            conn.connect()
        except (TimeoutError, socket.timeout) as e:
            raise requests.exceptions.ConnectTimeout(f"connect to {host}:{port} timed out ({e})") from None
        except (OSError, http.client.HTTPException) as e:
            raise requests.ConnectionError(f"cannot connect to {host}:{port} ({type(e).__name__}: {e})") from None
        if conn.sock is not None:
            conn.sock.settimeout(read_s)
        return conn, False

    def _give_back(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def _response(self, request: requests.PreparedRequest, r: http.client.HTTPResponse,
                  conn: http.client.HTTPConnection, key: _Key, asked: re.Match | None) -> requests.Response:
        if asked and r.status in (200, 206):
            limit = int(asked[2]) - int(asked[1]) + 1 if r.status == 206 else int(asked[2]) + 1
        else:
            limit = MAX_OTHER_BODY
        try:
            body = r.read(limit + 1) if r.status not in (204, 304) and not 100 <= r.status < 200 else b""
            if r.status == 200 and asked and len(body) > limit:
                body = body[:limit]  # a whole file where a range was asked: only the part wanted
            complete = r.isclosed() or r.length == 0
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _failure(e, request) from None
        if complete and not r.will_close:
            self._give_back(key, conn)
        else:
            conn.close()  # unread bytes left (or the server closes): never reused
        return build_response(request.url or "", request, r.status, r.reason, r.getheaders(), body, r.version)


def build_response(url: str, request: Any, status: int, reason: str, headers: list[tuple[str, str]],
                   body: bytes, version: int) -> requests.Response:
    """A complete requests.Response (body read) for an answer received with http.client. ``request``: the
    PreparedRequest sent, or the headers sent (a PreparedRequest is made of them)."""
    if not isinstance(request, requests.PreparedRequest):
        sent = requests.PreparedRequest()
        sent.method, sent.url, sent.headers = "GET", url, CaseInsensitiveDict(request)
        sent.body, sent._cookies = None, None  # type: ignore[attr-defined]
        request = sent
    resp = requests.Response()
    resp.status_code, resp.reason = status, reason
    resp.headers = CaseInsensitiveDict(headers)
    resp._content, resp._content_consumed = body, True
    resp.url, resp.request, resp.encoding = url, request, None
    # what requests-cache reads from ``raw`` when it stores the answer (no file pointer: body from _content)
    resp.raw = SimpleNamespace(decode_content=False, headers=dict(resp.headers), reason=reason, status=status,
                               version=version, _request_url=url, _fp=None)
    return resp
