"""TLS contexts that verify as requests does, for the connections hubvram makes with http.client.

requests verifies against ``verify``: a CA bundle path, False (no checks), or True: ``$REQUESTS_CA_BUNDLE``
or ``$CURL_CA_BUNDLE`` when set, else certifi's bundle. :func:`context` gives the same choice as an
:class:`ssl.SSLContext` (one per choice, reused), without importing requests.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

_CONTEXTS: dict[Any, ssl.SSLContext] = {}
_LOCK = threading.Lock()


def context(verify: Any = True) -> ssl.SSLContext:
    """An SSLContext for ``verify`` (True, False or a CA bundle path)."""
    with _LOCK:
        ctx = _CONTEXTS.get(verify)
        if ctx is None:
            if verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else _default_bundle())
            _CONTEXTS[verify] = ctx
        return ctx


def _default_bundle() -> str | None:
    found = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if found:
        return found
    try:
        import certifi
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None
    return certifi.where()
