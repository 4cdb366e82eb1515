"""`scenerec check`: the derived stores (chroma, BM25) against the item table, and their repair."""

from __future__ import annotations

import sys

import click

from ..settings import Settings
from ..stores.integrity import check_data_dir
from .common import common_options, emit_json


@click.command()
@click.option("--repair", is_flag=True, help="Rebuild what disagrees from the item table and embedding cache.")
@common_options
def check(settings: Settings, as_json: bool, repair: bool) -> None:
    """Check every chroma collection and BM25 file against the item table (exit 1 on a problem left)."""
    report = check_data_dir(settings.data_dir, settings.stores, settings.embedding, repair=repair)
    if as_json:
        emit_json(report.model_dump(mode="json") | {"ok": report.ok})
    else:
        for line in report.repaired:
            click.echo(f"repaired: {line}")
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        if report.ok:
            click.echo(f"ok: stores agree with the item table ({report.seconds:.1f} s)")
        elif not repair:
            click.echo("run `scenerec check --repair` to rebuild them from the item table")
    if not report.ok:
        sys.exit(1)
