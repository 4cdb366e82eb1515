"""The `Catalog` container every reader returns, and the bounded line reader they share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..errors import CatalogError
from ..models import Case, Interaction, Item

MAX_LINE_BYTES = 1024 * 1024
"""The longest line a reader accepts; a longer one fails before it is held in memory whole."""

_BOM = "\ufeff"


@dataclass(frozen=True)
class Catalog:
    """A parsed, fully validated catalog: what ingest writes to the stores."""

    source: Path
    items: list[Item]
    interactions: list[Interaction]
    cases: list[Case]

    @property
    def scenes(self) -> list[str]:
        """The scenes of this catalog's items, sorted."""
        return sorted({item.scene for item in self.items})


def read_lines(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without the line ending) of a UTF-8 file.

    Reads in binary with a bounded `readline`, so a huge line fails before it is read whole, and
    decodes line by line, so a bad byte is reported with its line. A BOM on line 1 is dropped.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise CatalogError(path, None, None, f"file not found: {path.name}") from None
    except OSError as exc:
        raise CatalogError(path, None, None, f"cannot read {path.name}: {exc.strerror or exc}") from None
    with handle:
        number = 0
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            number += 1
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if len(body) > max_line_bytes:
                raise CatalogError(
                    path, number, None, f"line is longer than the limit of {max_line_bytes:,} bytes"
                )
            if body.endswith(b"\r"):
                body = body[:-1]
            if b"\x00" in body:
                column = body.index(b"\x00") + 1
                raise CatalogError(path, number, None, f"NUL byte at byte {column}")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CatalogError(
                    path, number, None, f"not valid UTF-8 (byte {exc.start + 1}: {body[exc.start]:#04x})"
                ) from None
            if number == 1 and text.startswith(_BOM):
                text = text[1:]
            yield number, text


def shown(value: str, limit: int = 80) -> str:
    """An untrusted value (an id, a scene) as an error message may show it: escapes spelled out, short."""
    text = value if value.isprintable() else repr(value)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_error(path: Path, line: int | None, exc: ValidationError, prefix: str = "") -> CatalogError:
    """Turn the first problem of a pydantic ValidationError into a CatalogError naming its field."""
    first = exc.errors(include_url=False)[0]
    loc = first.get("loc") or ()
    field = str(loc[0]) if loc else None
    message = str(first.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    if len(loc) > 1:
        message = f"{message} (at {'.'.join(str(part) for part in loc[1:])})"
    return CatalogError(path, line, field, prefix + message[:1].lower() + message[1:])
