"""The Hugging Face token, read the way huggingface_hub reads it, without importing it when it is plain.

``huggingface_hub.get_token`` costs ~30 ms of imports (its utils, httpx) on every cold run. Most tokens
are plain: ``$HF_TOKEN`` or the token file ``hf auth login`` wrote. :func:`plain_token` reads those with
the standard library and answers None (ask huggingface_hub) for everything else: an OIDC exchange
(``$HF_OIDC_RESOURCE``), an OAuth token it may have to refresh (listed with a ``refresh_token`` in
``stored_tokens``), Colab's secret store, a file it cannot read.
"""

from __future__ import annotations

import os
from pathlib import Path


def hub_token() -> str | None:
    """What ``huggingface_hub.get_token()`` returns (None when there is no token)."""
    token = plain_token()
    if token is None:
        from huggingface_hub import get_token

        return get_token()
    return token or None


def plain_token() -> str | bool | None:
    """The token huggingface_hub would send, when it is a plain one: ``HF_TOKEN`` (or the older name), else
    the token file (``$HF_TOKEN_PATH``, ``$HF_HOME/token``); False when there is none; None when only
    huggingface_hub can tell (OIDC exchange, an OAuth token with a refresh token, a file it cannot read)."""
    if any(os.environ.get(v) for v in ("HF_OIDC_RESOURCE", "COLAB_RELEASE_TAG", "HUGGINGFACE_CO_STAGING")):
        return None  # an OIDC exchange; Colab's secret store; the staging Hub's own token file
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = _clean(os.environ.get(var))
        if value:
            return value
    home = os.path.expandvars(os.path.expanduser(os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")))
    path = Path(os.path.expandvars(os.path.expanduser(os.environ.get("HF_TOKEN_PATH")
                                                      or os.path.join(home, "token"))))
    try:
        value = _clean(path.read_text())
    except FileNotFoundError:
        return False
    except (OSError, UnicodeError):
        return None
    if not value:
        return False
    try:
        stored = (path.parent / "stored_tokens").read_text()
    except FileNotFoundError:
        return value
    except (OSError, UnicodeError):
        return None
    return None if "refresh_token" in stored else value


def _clean(token: str | None) -> str | None:
    return (token or "").replace("\r", "").replace("\n", "").strip() or None
