"""Refuse hostile JSON nesting before ``json.loads`` recurses into it. Pure.

CPython's JSON decoder recurses once per nesting level and stops at the interpreter's recursion limit
(~1000) with a RecursionError. That error is caught, but a parse that deep leaves no stack for anything else
that runs meanwhile (a weakref callback or a garbage collection in that thread then fails as an
"unraisable" exception). Every file hubvram parses is shallow (a safetensors header nests 3 deep, a
config.json about 5), so anything deeper than :data:`MAX_DEPTH` is refused up front.
"""

from __future__ import annotations

import re

MAX_DEPTH = 64
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True when brackets nest more than ``limit`` deep (brackets inside strings count too: a real file
    has none that matter, and a hostile one only gets refused sooner)."""
    if text.count("{") + text.count("[") <= limit:  # every small file: nothing to scan
        return False
    depth = 0
    for ch in _NOT_BRACKETS.sub("", text):
        if ch in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
