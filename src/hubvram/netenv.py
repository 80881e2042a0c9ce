"""Network settings as requests reads them, for the connections hubvram makes itself: proxies and TLS.

:func:`proxies_configured`: whether requests would send through a proxy (the environment's ``*_proxy``
variables; on macOS and Windows also the system settings). HubClient then keeps requests' own handling,
and the direct http.client requests (:mod:`hubvram.early`, :mod:`hubvram.fastpath`) are not made.

:func:`context`: requests verifies TLS against ``verify``: a CA bundle path, False (no checks), or True:
``$REQUESTS_CA_BUNDLE`` or ``$CURL_CA_BUNDLE`` when set, else certifi's bundle. This is the same choice as
an :class:`ssl.SSLContext` (one per choice, reused), without importing requests.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
from typing import Any

_CONTEXTS: dict[Any, ssl.SSLContext] = {}
_LOCK = threading.Lock()


def proxies_configured() -> bool:
    """Whether a proxy is configured for any scheme (``no_proxy`` alone proxies nothing), as
    ``urllib.request.getproxies`` (which requests uses) sees it."""
    if sys.platform in ("darwin", "win32"):  # system settings too: only urllib.request reads them
        import urllib.request

        return any(scheme != "no" for scheme in urllib.request.getproxies())
    # = urllib.request.getproxies_environment, without importing urllib.request (~15 ms)
    return any(value and name.lower().endswith("_proxy") and name.lower() != "no_proxy"
               for name, value in os.environ.items())


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
