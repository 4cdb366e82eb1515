"""`scenerec eval`: every method on the same held-out cases, written as JSON, markdown and a plot."""

from __future__ import annotations

from pathlib import Path

import click

from ..paths import DataPaths
from ..recommend.recommender import Recommender
from ..settings import Settings
from ..stores.ingest import ingest_catalog
from .common import common_options, emit_json

DEFAULT_METHODS = "popularity,cooccurrence,bm25,dense,fused,transfer,fused-transfer,shipped"


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("eval")
@click.argument("source", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Which cases to evaluate.")
@click.option("--methods", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated method names; unavailable ones (no checkpoint) are skipped with a note.")
@click.option("--protocol", "protocols", default="full,sampled", show_default=True,
              help="full (every item of the target scene) and/or sampled (target + 999 sampled items).")
@click.option("--setting", "settings_", default="mixed,cold", show_default=True,
              help="mixed (whole history) and/or cold (only history outside the target scene).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("scenerec-eval"),
              show_default=True, help="Folder for report.json, report.md and report.png.")
@click.option("--max-cases", type=click.IntRange(min=1), default=None,
              help="Evaluate a seeded subset of cases.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the sampled protocol and the bootstrap.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@common_options
def eval_command(
    settings: Settings, as_json: bool, source: Path | None, split: str, methods: str, protocols: str,
    settings_: str, out_dir: Path, max_cases: int | None, seed: int, n_bootstrap: int, progress: bool,
) -> None:
    """Evaluate ranking methods on the held-out cases of a data directory or catalog.

    SOURCE is a data directory (holding catalog.sqlite) or a catalog folder (items.jsonl, cases.jsonl…),
    which is ingested into --data-dir first. Without SOURCE, --data-dir is evaluated.
    """
    from ..evaluation.harness import evaluate
    from ..evaluation.methods import EvalData
    from ..evaluation.report import markdown_report, write_report

    if source is not None:
        if DataPaths(source).catalog_db.exists():
            settings = settings.model_copy(update={"data_dir": source})
        else:
            click.echo(f"ingesting {source} into {settings.data_dir} …", err=True)
            ingest_catalog(source, settings)
    with Recommender.open(settings=settings) as recommender:
        report = evaluate(
            EvalData.from_recommender(recommender, split), _split_list(methods), split=split, settings=_split_list(settings_),
            protocols=_split_list(protocols), seed=seed, n_bootstrap=n_bootstrap, max_cases=max_cases,
            progress=progress,
        )
    paths = write_report(report, out_dir)
    if as_json:
        emit_json(report)
        return
    click.echo(markdown_report(report))
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
