"""`scenerec score`: batch scoring to parquet or CSV, in this process or on Ray Data (one machine or a cluster)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from ..errors import ScenerecError
from ..recommend.batch_output import COLUMNS, FORMATS
from ..recommend.recommender import BATCH_ENGINES, Recommender
from ..settings import Settings
from .common import common_options, emit_json

SCORE_MEANING = (
    "score = the percentile within the scene that `recommend` shows (1.0 = the scene's first item), "
    "raw_score = the ranking model's own score"
)


def read_user_file(path: Path) -> list[str]:
    """One user id per line; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ScenerecError(f"cannot read users file {path}: {exc.strerror}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@click.command()
@click.option("--scene", required=True, help="Scene to score.")
@click.option("--users", "users_file", type=click.Path(path_type=Path, dir_okay=False),
              help="File with one user id per line.")
@click.option("--all", "all_users", is_flag=True, help="Score every stored user.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Items per user.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="A .parquet or .csv file; with --engine ray, a new folder that receives parquet parts.")
@click.option("--engine", type=click.Choice(BATCH_ENGINES), default="local", show_default=True,
              help="local: this process; ray: Ray Data, an actor pool that each opens the data directory once.")
@click.option("--address", help="With --engine ray: the Ray cluster to join (auto, ray://HOST:10001); "
              "default: RAY_ADDRESS, else a local Ray started for this run.")
@click.option("--batch-size", type=int, default=1024, show_default=True, help="Users per batch.")
@click.option("--rerank", is_flag=True,
              help="Rerank each user's top llm.candidates with the configured LLM (batched where it can).")
@common_options
def score(
    settings: Settings, as_json: bool, scene: str, users_file: Path | None, all_users: bool, k: int,
    out: Path, engine: str, address: str | None, batch_size: int, rerank: bool,
) -> None:
    """Write the top-K items of SCENE for many users (what `recommend` gives each) to parquet or CSV.

    `--engine ray` runs the same scoring on Ray Data: locally on every core, or on a cluster whose
    workers share the data directory; the folder of parts it writes equals one local run.
    """
    if bool(users_file) == all_users:
        raise click.UsageError("give exactly one of --users FILE or --all")
    if engine == "local" and out.suffix.lower() not in FORMATS:
        raise click.BadParameter("must end in .parquet or .csv (or use --engine ray to write a folder)",
                                 param_hint="--out")
    started = time.perf_counter()
    with Recommender.open(settings=settings) as recommender:
        recommender.check_scene(scene)
        if all_users:
            user_ids = recommender.items.users()
        else:
            assert users_file is not None
            user_ids = sorted(set(read_user_file(users_file)))
        with tqdm(total=len(user_ids), unit="user", desc=f"scoring {scene}",
                  disable=engine != "local" or not sys.stderr.isatty(), file=sys.stderr) as bar:
            result = recommender.score_batch(
                user_ids, scene, k, out=out, batch_size=batch_size,
                progress=lambda done: bar.update(done - bar.n), rerank=rerank, engine=engine, address=address,
            )
    seconds = time.perf_counter() - started
    summary = {
        "scene": scene, "k": k, "users": len(result), "engine": engine,
        "out": str(out), "seconds": round(seconds, 3),
        "users_per_second": round(len(result) / seconds, 1) if seconds > 0 else None,
        "columns": list(COLUMNS), "score": SCORE_MEANING,
        "first_user": (
            {"user_id": result.user_ids[0], "items": [
                {"item_id": i, "score": s, "raw_score": r}
                for i, s, r in zip(result.item_ids[0], result.scores[0], result.raw_scores[0])
            ]} if len(result) else None
        ),
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"scored {len(result)} users in '{scene}' ({engine}, k={k}) in {seconds:.1f} s -> {out}\n"
            f"columns: {', '.join(COLUMNS)}; {SCORE_MEANING}"
        )
