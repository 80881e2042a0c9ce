"""Every error hubvram raises on purpose, with its exit code.

A user sees one line: ``hubvram: <model>: <file>: <what went wrong>[ (<what to do>)]``. The CLI prints
``str(error)`` and exits with ``error.exit_code``; a traceback appears only with ``--debug``.

Exit codes (documented in the README):

====  ==========================================================
 0    success
 1    a ``--require-fit`` check failed
 2    usage or input error (bad model id, malformed config/header, unsupported model)
 3    network or Hub error (unknown repo, gated, bad revision, offline and not cached)
 4    partial failure in ``compare`` (some models failed, the others were answered)
====  ==========================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REQUIRE_FIT = 1
EXIT_INPUT = 2
EXIT_HUB = 3
EXIT_PARTIAL = 4


class HubvramError(Exception):
    """Base class. ``model`` and ``file`` name what the error is about; ``hint`` says what to do."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, *, model: str | None = None, file: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.file = file
        self.hint = hint

    def __str__(self) -> str:
        parts = [p for p in (self.model, self.file) if p]
        parts.append(self.message)
        text = ": ".join(parts)
        if self.hint:
            text += f" ({self.hint})"
        # one line, and printable whatever a repository put in its names (lone surrogates are escaped)
        return text.replace("\n", " ").encode("utf-8", "backslashreplace").decode("utf-8")


# --- input errors (exit 2) -------------------------------------------------------------------------
class InputError(HubvramError):
    """Something the user or a repository gave us is malformed."""


class ModelRefError(InputError):
    """The model reference is not ``org/name``, ``org/name@revision`` or an existing folder."""


class ConfigError(InputError):
    """config.json is missing, not JSON, not an object, or has absurd values."""


class HeaderError(InputError):
    """A safetensors header (or index file) fails validation."""


class UnsupportedModelError(InputError):
    """The architecture cannot be described from the metadata at hand."""


class CacheError(InputError):
    """An export archive or snapshot file fails validation."""


# --- Hub / network errors (exit 3) -----------------------------------------------------------------
class HubError(HubvramError):
    exit_code = EXIT_HUB


class RepoNotFoundError(HubError):
    pass


class GatedRepoError(HubError):
    pass


class RevisionNotFoundError(HubError):
    pass


class EntryNotFoundError(HubError):
    pass


class NetworkError(HubError):
    pass


class OfflineMissError(HubError):
    """Offline, and neither the HTTP cache nor the bundled snapshot holds the model."""
