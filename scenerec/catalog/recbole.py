"""Read RecBole atomic files (`NAME.item`, `NAME.inter`) into a catalog of one scene.

Headers name each column with its type (`item_id:token`, `title:token_seq`, `timestamp:float`).
Every item goes to the scene the caller names; ids are kept as they are. Each user's interactions
are ordered by `timestamp` when there is one (stable, so ties keep file order) and numbered 0..n-1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..errors import CatalogError
from ..models import Interaction, Item, validate_scene_name
from .catalog import MAX_LINE_BYTES, Catalog, read_lines, shown, validation_error

TITLE_FIELDS = ("title", "movie_title", "name")
TEXT_TYPES = ("token", "token_seq")
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str
    index: int


def recbole_files(path: Path) -> tuple[Path, Path] | None:
    """The (`.item`, `.inter`) pair at `path` (a dataset folder or a `folder/NAME` prefix), if any."""
    path = Path(path)
    if path.is_dir():
        named = path / f"{path.name}.inter"
        if named.is_file():
            return named.with_suffix(".item"), named
        inters = sorted(path.glob("*.inter"))
        if len(inters) == 1:
            return inters[0].with_suffix(".item"), inters[0]
        items = sorted(path.glob("*.item"))
        if not inters and len(items) == 1:
            return items[0], items[0].with_suffix(".inter")
        if len(inters) > 1:
            names = ", ".join(p.name for p in inters)
            raise CatalogError(
                path, None, None, f"several RecBole datasets here ({names}); name one as DIR/NAME"
            )
        return None
    for suffix in (".inter", ".item"):
        if path.suffix == suffix and path.is_file():
            return path.with_suffix(".item"), path.with_suffix(".inter")
    prefix_item = path.parent / f"{path.name}.item"
    prefix_inter = path.parent / f"{path.name}.inter"
    if prefix_item.is_file() or prefix_inter.is_file():
        return prefix_item, prefix_inter
    return None


def read_recbole(
    directory: Path,
    scene: str,
    known_items: Mapping[str, str] | None = None,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Catalog:
    """Parse and validate a RecBole dataset (folder or `folder/NAME` prefix) as scene `scene`."""
    directory = Path(directory)
    try:
        validate_scene_name(scene)
    except ValueError as exc:
        raise CatalogError(directory, None, "scene", str(exc)) from None
    files = recbole_files(directory)
    if files is None:
        raise CatalogError(directory, None, None, "no RecBole .item/.inter files found")
    item_path, inter_path = files
    known = dict(known_items or {})
    items = _read_items(item_path, scene, known, max_line_bytes)
    item_scenes = dict(known)
    item_scenes.update({item.item_id: item.scene for item in items})
    interactions = _read_interactions(inter_path, item_scenes, max_line_bytes)
    return Catalog(source=directory, items=items, interactions=interactions, cases=[])


def _rows(path: Path, max_line_bytes: int) -> tuple[list[_Column], Iterator[tuple[int, list[str]]]]:
    lines = read_lines(path, max_line_bytes)
    header = next(lines, None)
    if header is None or not header[1].strip():
        raise CatalogError(path, 1, None, f"{path.name} has no header line")
    columns: list[_Column] = []
    for index, cell in enumerate(header[1].split("\t")):
        name, sep, kind = cell.strip().partition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise CatalogError(
                path,
                1,
                shown(name) or None,
                f"header field {cell.strip()!r} is not NAME:TYPE with TYPE in {FIELD_TYPES}",
            )
        columns.append(_Column(name, kind, index))

    def rows() -> Iterator[tuple[int, list[str]]]:
        for number, text in lines:
            if not text.strip():
                continue
            cells = text.split("\t")
            if len(cells) != len(columns):
                raise CatalogError(
                    path, number, None, f"expected {len(columns)} tab-separated values, found {len(cells)}"
                )
            yield number, cells

    return columns, rows()


def _column(path: Path, columns: list[_Column], name: str) -> _Column:
    for column in columns:
        if column.name == name:
            return column
    raise CatalogError(path, 1, name, f"missing column '{name}' (expected a '{name}:token' header field)")


def _read_items(path: Path, scene: str, known: Mapping[str, str], max_line_bytes: int) -> list[Item]:
    columns, rows = _rows(path, max_line_bytes)
    id_column = _column(path, columns, "item_id")
    title_column = next((c for name in TITLE_FIELDS for c in columns if c.name == name), None)
    if title_column is None:
        raise CatalogError(path, 1, "title", f"no title column (expected one of {', '.join(TITLE_FIELDS)})")
    text_columns = [
        c for c in columns if c.kind in TEXT_TYPES and c.index not in (id_column.index, title_column.index)
    ]
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for number, cells in rows:
        item_id = cells[id_column.index].strip()
        text = " ".join(part for c in text_columns if (part := " ".join(cells[c.index].split())))
        try:
            item = Item(item_id=item_id, scene=scene, title=cells[title_column.index].strip(), text=text)
        except ValidationError as exc:
            error = validation_error(path, number, exc)
            field = title_column.name if error.field == "title" else error.field
            raise CatalogError(path, number, field, error.problem) from None
        if item_id in first_line:
            raise CatalogError(
                path,
                number,
                "item_id",
                f"duplicate item id '{shown(item_id)}' (first on line {first_line[item_id]})",
            )
        stored_scene = known.get(item_id)
        if stored_scene is not None and stored_scene != scene:
            raise CatalogError(
                path,
                number,
                "item_id",
                f"item '{shown(item_id)}' is already stored in scene '{shown(stored_scene)}', not '{shown(scene)}'",
            )
        first_line[item_id] = number
        items.append(item)
    if not items:
        raise CatalogError(path, None, None, f"{path.name} has no items")
    return items


def _read_interactions(path: Path, item_scenes: Mapping[str, str], max_line_bytes: int) -> list[Interaction]:
    columns, rows = _rows(path, max_line_bytes)
    user_column = _column(path, columns, "user_id")
    item_column = _column(path, columns, "item_id")
    time_column = next((c for c in columns if c.name == "timestamp"), None)
    by_user: dict[str, list[tuple[float, str, int]]] = {}
    for number, cells in rows:
        user_id = cells[user_column.index].strip()
        item_id = cells[item_column.index].strip()
        if not user_id:
            raise CatalogError(path, number, "user_id", "user id is empty")
        if len(user_id) > 256:
            raise CatalogError(path, number, "user_id", "user id is longer than 256 characters")
        if item_id not in item_scenes:
            raise CatalogError(path, number, "item_id", f"unknown item '{shown(item_id)}'")
        timestamp = 0.0
        if time_column is not None:
            raw = cells[time_column.index].strip()
            try:
                timestamp = float(raw)
            except ValueError:
                raise CatalogError(
                    path, number, "timestamp", f"timestamp must be a number, got {raw!r}"
                ) from None
            if not math.isfinite(timestamp):
                raise CatalogError(path, number, "timestamp", f"timestamp must be finite, got {raw!r}")
        by_user.setdefault(user_id, []).append((timestamp, item_id, number))
    interactions: list[Interaction] = []
    for user_id, rows_of_user in by_user.items():
        rows_of_user.sort(key=lambda row: row[0])
        for position, (_, item_id, _) in enumerate(rows_of_user):
            interactions.append(
                Interaction(user_id=user_id, item_id=item_id, scene=item_scenes[item_id], position=position)
            )
    return interactions
