"""`scenerec train`: fit the cross-scene transfer model of a data directory and save its checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from ..recommend.recommender import Recommender
from ..settings import Settings
from ..stores.ingest import ingest_catalog
from .common import common_options, emit_json


@click.command("train")
@click.argument("catalog", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Most epochs (default: settings).")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Wall-clock budget in minutes (default: settings).",
)
@click.option("--seed", type=int, default=None, help="Training seed (default: settings).")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda (default: CUDA when present).")
@click.option(
    "--search/--no-search",
    default=True,
    show_default=True,
    help="Choose the configuration on valid by successive halving (transfer.search); --no-search "
    "trains the first configuration alone.",
)
@click.option(
    "--reship",
    is_flag=True,
    help="Keep the saved model's weights; choose again, on valid, what ships with it (the mix of model, "
    "co-occurrence, transitions and popularity, and the BM25 weight), e.g. after an upgrade.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@common_options
def train(
    settings: Settings,
    as_json: bool,
    catalog: Path | None,
    epochs: int | None,
    max_minutes: float | None,
    seed: int | None,
    device: str | None,
    search: bool,
    reship: bool,
    progress: bool,
) -> None:
    """Train the transfer model on the data directory's training users (ingesting CATALOG first if
    given), early-stopped on the valid cases, and save it under the data directory's checkpoints/.
    `recommend` uses it from then on."""
    from tqdm import tqdm

    from ..evaluation.tuning import reship as choose_again
    from ..evaluation.tuning import train_and_save

    if reship:
        with Recommender.open(settings=settings) as recommender:
            result = choose_again(recommender)
        if as_json:
            emit_json(result)
            return
        click.echo("\n".join([*result.shipped_lines, f"BM25 weight in the fusion: {result.lexical_weight}"]))
        click.echo(f"saved {result.checkpoint} (weights unchanged)")
        return
    overrides = {"max_epochs": epochs, "max_minutes": max_minutes, "seed": seed, "device": device}
    if not search:
        overrides["search"] = settings.transfer.search[:1]
    transfer = settings.transfer.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if catalog is not None:
        click.echo(f"ingesting {catalog} into {settings.data_dir} …", err=True)
        ingest_catalog(catalog, settings)
    bar = tqdm(desc="training", unit="step", disable=not progress, leave=False)
    lines: list[str] = []

    def report(stage: str, done: int, total: int, info: dict[str, float]) -> None:
        if stage == "train":
            if done == 1:
                bar.reset(total=total)
                config = f"{info['configuration']} " if "configuration" in info else ""
                bar.set_description(f"{config}epoch {int(info['epoch'])}")
            bar.update(1)
            bar.set_postfix(loss=f"{info['loss']:.3f}")
        else:
            config = f"[{info['configuration']}] " if "configuration" in info else ""
            line = (
                f"{config}epoch {done}: valid NDCG@10 mixed {info.get('ndcg10_mixed', 0):.4f}, "
                f"cold {info.get('ndcg10_cold', 0):.4f}"
            )
            lines.append(line)
            if progress:
                bar.write(line, file=None)

    try:
        with Recommender.open(settings=settings) as recommender:
            result = train_and_save(recommender, transfer, progress=report)
    finally:
        bar.close()
    if as_json:
        emit_json(result)
        return
    if not progress:
        click.echo("\n".join(lines))
    valid = ", ".join(f"{k} {v:.4f}" for k, v in result.valid.items() if k.startswith("ndcg10_"))
    click.echo(
        f"trained in {result.seconds:.0f} s on {result.device} ({result.steps} steps, "
        f"{result.train_users} training users); best validation {result.best_epoch} ({result.stopped})"
    )
    click.echo(f"valid ({result.valid_cases} cases): {valid}")
    if len(result.search) > 1:
        tried = "; ".join(
            f"{t['name']} {t['best_valid'] if t['best_valid'] is not None else float('nan'):.4f} "
            f"({t['steps']} steps, {t['rungs']} rung{'s' if t['rungs'] > 1 else ''})"
            for t in result.search
        )
        click.echo(f"configuration chosen on valid: {result.configuration} (best valid NDCG@10: {tried})")
    if result.still_improving:
        click.echo(
            f"warning: the {transfer.max_minutes:g}-minute budget stopped training while validation was "
            "still improving; a larger transfer.max_minutes (or SCENEREC_TRANSFER__MAX_MINUTES) would "
            "likely give a better model",
            err=True,
        )
    if result.lexical_weight is not None:
        tried = ", ".join(f"{w}: {v:.4f}" for w, v in result.lexical_weights_tried.items())
        click.echo(f"BM25 weight in the fusion: {result.lexical_weight} (valid NDCG@10 by weight: {tried})")
    for line in result.shipped_lines:
        click.echo(line)
    click.echo(f"saved {result.checkpoint}")
