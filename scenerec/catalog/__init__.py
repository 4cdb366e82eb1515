"""Catalog readers: every source format becomes a validated `Catalog` here, at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import CatalogError
from .catalog import MAX_LINE_BYTES, Catalog
from .recbole import read_recbole, recbole_files
from .scene_catalog import ITEMS_FILE, read_scene_catalog

__all__ = [
    "MAX_LINE_BYTES",
    "Catalog",
    "load_catalog",
    "read_recbole",
    "read_scene_catalog",
]


def load_catalog(
    path: Path, scene: str | None = None, known_items: Mapping[str, str] | None = None
) -> Catalog:
    """Read a catalog of either format.

    A folder with `items.jsonl` is a scene catalog (its items name their scenes, so `scene` must be
    omitted or match); a folder with `*.item`/`*.inter` files, or a `folder/NAME` prefix of them, is a
    RecBole dataset, which needs `scene`.
    """
    path = Path(path)
    if path.is_dir() and (path / ITEMS_FILE).is_file():
        catalog = read_scene_catalog(path, known_items)
        if scene is not None and catalog.scenes != [scene]:
            raise CatalogError(
                path / ITEMS_FILE,
                None,
                "scene",
                f"--scene {scene} given, but this scene catalog holds scenes {', '.join(catalog.scenes)}",
            )
        return catalog
    if recbole_files(path) is not None:
        if scene is None:
            raise CatalogError(path, None, "scene", "a RecBole dataset needs a scene name (--scene)")
        return read_recbole(path, scene, known_items)
    if not path.exists():
        raise CatalogError(path, None, None, "no such file or directory")
    raise CatalogError(
        path,
        None,
        None,
        f"not a catalog: expected {ITEMS_FILE} (scene catalog) or NAME.item/NAME.inter (RecBole)",
    )
