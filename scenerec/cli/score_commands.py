"""`scenerec score`: batch scoring to parquet or CSV, sharded by user ranges across processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from ..errors import ScenerecError
from ..recommend.batch_output import FORMATS, part_name, shard_range
from ..recommend.recommender import Recommender
from ..settings import Settings
from .common import common_options, emit_json


def parse_shard(value: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); None -> (0, 1)."""
    if value is None:
        return 0, 1
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected i/n such as 0/4, got {value!r}", param_hint="--shard") from None
    if n < 1 or not 0 <= i < n:
        raise click.BadParameter(f"need 0 <= i < n, got {value!r}", param_hint="--shard")
    return i, n


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
              help="A .parquet or .csv file; with --shard, a directory that receives part files.")
@click.option("--shard", help="i/n: score only the i-th of n contiguous ranges of the sorted users.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True,
              help="Format of the part files written with --shard.")
@click.option("--batch-size", type=int, default=1024, show_default=True, help="Users per batch.")
@click.option("--rerank", is_flag=True,
              help="Rerank each user's top llm.candidates with the configured LLM (batched where it can).")
@common_options
def score(
    settings: Settings, as_json: bool, scene: str, users_file: Path | None, all_users: bool, k: int,
    out: Path, shard: str | None, fmt: str, batch_size: int, rerank: bool,
) -> None:
    """Write the top-K items of SCENE for many users (what `recommend` gives each) to parquet or CSV.

    Users are sorted; `--shard i/n` takes the i-th contiguous range, so n processes (or machines
    sharing a chroma server and the data directory) write n parts that together equal one run.
    """
    if bool(users_file) == all_users:
        raise click.UsageError("give exactly one of --users FILE or --all")
    index, n_shards = parse_shard(shard)
    if shard is None and out.suffix.lower() not in FORMATS:
        raise click.BadParameter("must end in .parquet or .csv (or pass --shard to write a part)",
                                 param_hint="--out")
    target = out / part_name(index, n_shards, f".{fmt}") if shard is not None else out
    started = time.perf_counter()
    with Recommender.open(settings=settings) as recommender:
        recommender.check_scene(scene)
        if all_users:
            user_ids = recommender.items.users()
        else:
            assert users_file is not None
            user_ids = sorted(set(read_user_file(users_file)))
        span = shard_range(len(user_ids), index, n_shards)
        mine = user_ids[span.start : span.stop]
        with tqdm(total=len(mine), unit="user", desc=f"scoring {scene}", disable=not sys.stderr.isatty(),
                  file=sys.stderr) as bar:
            result = recommender.score_batch(
                mine, scene, k, out=target, batch_size=batch_size,
                progress=lambda done: bar.update(done - bar.n), rerank=rerank,
            )
    seconds = time.perf_counter() - started
    summary = {
        "scene": scene, "k": k, "users": len(result), "shard": f"{index}/{n_shards}",
        "out": str(target), "seconds": round(seconds, 3),
        "users_per_second": round(len(result) / seconds, 1) if seconds > 0 else None,
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"scored {len(result)} users in '{scene}' (shard {index}/{n_shards}, k={k}) "
            f"in {seconds:.1f} s -> {target}"
        )
