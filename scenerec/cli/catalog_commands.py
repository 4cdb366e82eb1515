"""Commands about the catalog: ingest, scenes, items, path."""

from __future__ import annotations

from pathlib import Path

import click

from ..paths import DataPaths, default_config_file
from ..recommend.recommender import Recommender
from ..settings import Settings
from ..stores.ingest import INGEST_ENGINES, ingest_catalog
from ..text_safety import printable
from .common import common_options, emit_json


@click.command()
@click.argument("catalog_dir", type=click.Path(path_type=Path))
@click.option("--scene", help="Scene name for RecBole atomic files (.item/.inter).")
@click.option("--engine", type=click.Choice(INGEST_ENGINES), default="local", show_default=True,
              help="Where items are encoded: this process, or Ray Data (this process still writes).")
@click.option("--address", help="With --engine ray: the Ray cluster to join; default: a local Ray.")
@common_options
def ingest(
    settings: Settings, as_json: bool, catalog_dir: Path, scene: str | None, engine: str, address: str | None
) -> None:
    """Validate CATALOG_DIR, embed its items and write every store (all or nothing)."""
    report = ingest_catalog(catalog_dir, settings, scene=scene, engine=engine, address=address)
    if as_json:
        emit_json(report)
        return
    click.echo(
        f"ingested {report.items} items, {report.interactions} interactions, {report.cases} cases "
        f"into {settings.data_dir} (scenes: {', '.join(report.scenes)}; encoded {report.encoded} new texts; "
        f"{report.seconds:.1f} s)"
    )


@click.command()
@common_options
def scenes(settings: Settings, as_json: bool) -> None:
    """List the scenes with their item, user and interaction counts."""
    with Recommender.open(settings=settings) as recommender:
        infos = recommender.scenes()
    if as_json:
        emit_json(infos)
        return
    for info in infos:
        click.echo(f"{info.scene:<20} {info.items:>8} items {info.users:>8} users {info.interactions:>9} interactions")


@click.group()
def items() -> None:
    """Look up catalog items."""


@items.command("search")
@click.argument("text")
@click.option("--scene", help="Search only this scene.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of results.")
@common_options
def items_search(settings: Settings, as_json: bool, text: str, scene: str | None, k: int) -> None:
    """Items matching TEXT (dense and BM25, fused)."""
    with Recommender.open(settings=settings) as recommender:
        hits = recommender.search_items(text, scene=scene, k=k)
    if as_json:
        emit_json(hits)
        return
    for hit in hits:
        click.echo(f"{hit.item_id:<16} [{hit.scene}] {printable(hit.title, 90)}")


@click.command()
@common_options
def path(settings: Settings, as_json: bool) -> None:
    """Print where scenerec keeps its data and reads its config."""
    paths = DataPaths(settings.data_dir)
    where = {"data_dir": str(paths.root), "config_file": str(default_config_file()),
             "catalog_db": str(paths.catalog_db), "chroma_dir": str(paths.chroma_dir)}
    if as_json:
        emit_json(where)
        return
    for key, value in where.items():
        click.echo(f"{key}: {value}")
