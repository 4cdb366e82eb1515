"""Making untrusted text (item titles, user messages) safe to show in a terminal."""

from __future__ import annotations

import re
import unicodedata

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-_]")


def printable(text: str, max_length: int | None = None) -> str:
    """Text with escape sequences removed and control/format characters (incl. bidi overrides) dropped."""
    text = _ANSI.sub("", text)
    cleaned = "".join(
        " " if ch in "\t\n\r" else ch
        for ch in text
        if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
    )
    if max_length is not None and len(cleaned) > max_length:
        cleaned = cleaned[: max_length - 1] + "…"
    return cleaned
