"""Read a scene catalog: `items.jsonl`, `interactions.csv` and an optional `cases.jsonl`.

The whole directory is parsed and validated before anything is returned; the first problem raises
one `CatalogError` naming the file, the 1-based line and the field.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import CatalogError
from ..models import Case, Interaction, Item, validate_scene_name
from .catalog import MAX_LINE_BYTES, Catalog, read_lines, shown, validation_error

ITEMS_FILE = "items.jsonl"
INTERACTIONS_FILE = "interactions.csv"
CASES_FILE = "cases.jsonl"

MAX_JSON_DEPTH = 16
"""Catalog lines are flat records; nesting deeper than this is rejected."""

ITEM_KEYS = ("item_id", "scene", "title")
INTERACTION_COLUMNS = ("user_id", "item_id", "scene", "position")
CASE_KEYS = ("case_id", "split", "user_id", "target_scene", "target_item", "history")

_NON_NEGATIVE_INT = re.compile(r"^[0-9]+$")


def read_scene_catalog(
    directory: Path,
    known_items: Mapping[str, str] | None = None,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Catalog:
    """Parse and validate a scene-catalog directory; `known_items` maps already stored ids to scenes."""
    directory = Path(directory)
    known = dict(known_items or {})
    items = _read_items(directory / ITEMS_FILE, known, max_line_bytes)
    item_scenes = dict(known)
    item_scenes.update({item.item_id: item.scene for item in items})
    scenes = set(item_scenes.values())
    interactions = _read_interactions(directory / INTERACTIONS_FILE, item_scenes, scenes, max_line_bytes)
    cases_path = directory / CASES_FILE
    cases = _read_cases(cases_path, item_scenes, scenes, max_line_bytes) if cases_path.exists() else []
    return Catalog(source=directory, items=items, interactions=interactions, cases=cases)


def json_records(path: Path, max_line_bytes: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, object) for each non-blank line of a JSON-lines file."""
    for number, text in read_lines(path, max_line_bytes):
        if not text.strip():
            continue
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise CatalogError(path, number, None, "JSON is nested too deeply") from None
        except ValueError as exc:
            raise CatalogError(path, number, None, f"invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise CatalogError(path, number, None, f"expected a JSON object, found {_json_kind(value)}")
        if _depth(value) > MAX_JSON_DEPTH:
            raise CatalogError(path, number, None, f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
        yield number, value


def _read_items(path: Path, known: Mapping[str, str], max_line_bytes: int) -> list[Item]:
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for number, record in json_records(path, max_line_bytes):
        _require_keys(path, number, record, ITEM_KEYS)
        for key in ("item_id", "scene", "title"):
            _require_string(path, number, record, key)
        text = record.get("text")
        if text is None:
            text = ""
        elif not isinstance(text, str):
            raise CatalogError(path, number, "text", f"expected a string, found {_json_kind(text)}")
        _require_unicode(path, number, "text", text)
        try:
            # HTML entities (&amp; &quot;) are decoded here, once: every store and view keeps the decoded text
            item = Item(
                item_id=record["item_id"], scene=record["scene"], title=html.unescape(record["title"]),
                text=html.unescape(text),
            )
        except ValidationError as exc:
            raise validation_error(path, number, exc) from None
        if item.item_id in first_line:
            raise CatalogError(
                path,
                number,
                "item_id",
                f"duplicate item id '{shown(item.item_id)}' (first on line {first_line[item.item_id]})",
            )
        stored_scene = known.get(item.item_id)
        if stored_scene is not None and stored_scene != item.scene:
            raise CatalogError(
                path,
                number,
                "scene",
                f"item '{shown(item.item_id)}' is already stored in scene '{shown(stored_scene)}', not '{shown(item.scene)}'",
            )
        first_line[item.item_id] = number
        items.append(item)
    if not items:
        raise CatalogError(path, None, None, f"{path.name} has no items")
    return items


def _read_interactions(
    path: Path, item_scenes: Mapping[str, str], scenes: set[str], max_line_bytes: int
) -> list[Interaction]:
    lines = read_lines(path, max_line_bytes)
    reader = csv.reader(_csv_text(lines))
    interactions: list[Interaction] = []
    first_line: dict[tuple[str, int], int] = {}
    try:
        header = next(reader, None)
        if header is None:
            raise CatalogError(path, 1, None, f"{path.name} is empty (expected a header line)")
        columns = {name.strip(): index for index, name in reversed(list(enumerate(header)))}
        for name in INTERACTION_COLUMNS:
            if name not in columns:
                raise CatalogError(path, 1, name, f"missing column '{name}' in the header")
        for row in reader:
            number = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            values = {}
            for name in INTERACTION_COLUMNS:
                index = columns[name]
                if index >= len(row):
                    raise CatalogError(path, number, name, f"missing value for column '{name}'")
                values[name] = row[index].strip()
            interactions.append(_interaction(path, number, values, item_scenes, scenes, first_line))
    except csv.Error as exc:
        raise CatalogError(path, reader.line_num or None, None, f"malformed CSV: {exc}") from None
    return interactions


def _interaction(
    path: Path,
    number: int,
    values: dict[str, str],
    item_scenes: Mapping[str, str],
    scenes: set[str],
    first_line: dict[tuple[str, int], int],
) -> Interaction:
    position = values["position"]
    if not _NON_NEGATIVE_INT.match(position):
        raise CatalogError(
            path, number, "position", f"position must be a non-negative integer, got {position!r}"
        )
    _check_scene(path, number, "scene", values["scene"], scenes)
    try:
        interaction = Interaction(
            user_id=values["user_id"],
            item_id=values["item_id"],
            scene=values["scene"],
            position=int(position),
        )
    except ValidationError as exc:
        raise validation_error(path, number, exc) from None
    _check_item_scene(
        path, number, item_scenes, interaction.item_id, interaction.scene, ("item_id", "scene")
    )
    key = (interaction.user_id, interaction.position)
    if key in first_line:
        raise CatalogError(
            path,
            number,
            "position",
            f"user '{shown(interaction.user_id)}' already has position {interaction.position} "
            f"(line {first_line[key]})",
        )
    first_line[key] = number
    return interaction


def _read_cases(
    path: Path, item_scenes: Mapping[str, str], scenes: set[str], max_line_bytes: int
) -> list[Case]:
    cases: list[Case] = []
    first_line: dict[str, int] = {}
    for number, record in json_records(path, max_line_bytes):
        _require_keys(path, number, record, CASE_KEYS)
        for key in ("case_id", "split", "user_id", "target_scene", "target_item"):
            _require_string(path, number, record, key)
        history = record["history"]
        if not isinstance(history, list) or not all(isinstance(entry, str) for entry in history):
            raise CatalogError(path, number, "history", "history must be a list of item id strings")
        _check_scene(path, number, "target_scene", record["target_scene"], scenes)
        try:
            case = Case(**{key: record[key] for key in CASE_KEYS})
        except ValidationError as exc:
            raise validation_error(path, number, exc) from None
        if case.case_id in first_line:
            raise CatalogError(
                path,
                number,
                "case_id",
                f"duplicate case id '{shown(case.case_id)}' (first on line {first_line[case.case_id]})",
            )
        _check_item_scene(
            path, number, item_scenes, case.target_item, case.target_scene, ("target_item", "target_item")
        )
        for index, item_id in enumerate(case.history):
            if item_id not in item_scenes:
                raise CatalogError(
                    path, number, "history", f"unknown item '{shown(item_id)}' (entry {index})"
                )
        first_line[case.case_id] = number
        cases.append(case)
    return cases


def _csv_text(lines: Iterator[tuple[int, str]]) -> Iterator[str]:
    for _, text in lines:
        yield text + "\n"


def _check_scene(path: Path, number: int, field: str, scene: str, scenes: set[str]) -> None:
    try:
        validate_scene_name(scene)
    except ValueError as exc:
        raise CatalogError(path, number, field, str(exc)) from None
    if scene not in scenes:
        known = ", ".join(sorted(scenes)) or "none"
        raise CatalogError(path, number, field, f"unknown scene '{shown(scene)}' (known scenes: {known})")


def _check_item_scene(
    path: Path,
    number: int,
    item_scenes: Mapping[str, str],
    item_id: str,
    scene: str,
    fields: tuple[str, str],
) -> None:
    """The item exists and belongs to `scene`; `fields` name the field blamed for each failure."""
    item_scene = item_scenes.get(item_id)
    if item_scene is None:
        raise CatalogError(path, number, fields[0], f"unknown item '{shown(item_id)}'")
    if item_scene != scene:
        problem = f"item '{shown(item_id)}' is in scene '{shown(item_scene)}', not '{shown(scene)}'"
        raise CatalogError(path, number, fields[1], problem)


def _require_keys(path: Path, number: int, record: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in record:
            raise CatalogError(path, number, key, f"missing key '{key}'")


def _require_string(path: Path, number: int, record: Mapping[str, Any], key: str) -> None:
    value = record[key]
    if not isinstance(value, str):
        raise CatalogError(path, number, key, f"expected a string, found {_json_kind(value)}")
    _require_unicode(path, number, key, value)


def _require_unicode(path: Path, number: int, key: str, value: str) -> None:
    # a JSON escape like "\ud800" decodes to half a surrogate pair, which no UTF-8 store can hold
    for index, ch in enumerate(value):
        if "\ud800" <= ch <= "\udfff":
            raise CatalogError(
                path,
                number,
                key,
                f"lone surrogate {ord(ch):#06x} at character {index + 1} (not valid Unicode)",
            )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest
