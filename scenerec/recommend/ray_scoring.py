"""Batch scoring on Ray Data: user ids flow through an actor pool; each actor opens the data directory once.

Ray is imported only here (the `scale` extra). Without an address a private local Ray is started;
`address="auto"` or "ray://host:10001" joins a running cluster, whose workers must see the same data
directory (a shared filesystem) and have scenerec installed. An already initialised Ray is reused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ScenerecError
from ..settings import Settings
from ..stores.ray_encoding import actor_count, start_ray
from .batch_output import BatchScores, read_scores


class ScoringActor:
    """One Ray actor: the stores of the data directory, opened once, score every batch it is given."""

    def __init__(self, opener: Callable[[Settings], Any], settings: dict[str, Any], scene: str, k: int,
                 rerank: bool) -> None:
        # `opener` is the Recommender class, passed in (by reference) so this module need not import it
        self.recommender = opener(Settings.model_validate(settings))
        self.scene, self.k, self.rerank = scene, k, rerank
        self.backend = None
        if rerank:  # one LLM backend per actor (a vLLM engine on a GPU actor), built once
            from ..llm.registry import make_backend

            self.backend = make_backend(self.recommender.settings.llm)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        users = [str(u) for u in batch["user_id"]]
        scores = self.recommender.score_batch(
            users, self.scene, self.k, batch_size=len(users), rerank=self.rerank, backend=self.backend
        )
        columns = scores.columns()
        return {
            "user_id": np.array(columns["user_id"], dtype=object),
            "rank": np.array(columns["rank"], dtype=np.int32),
            "item_id": np.array(columns["item_id"], dtype=object),
            "score": np.array(columns["score"], dtype=np.float64),
            "raw_score": np.array(columns["raw_score"], dtype=np.float64),
        }


def score_with_ray(
    opener: Callable[[Settings], Any],
    settings: Settings,
    user_ids: Sequence[str],
    scene: str,
    k: int,
    out: Path,
    *,
    batch_size: int = 1024,
    rerank: bool = False,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
) -> BatchScores:
    """Score `user_ids` on Ray, write parquet parts into the folder `out`, return them in input order.

    Each actor opens the stores once with `opener(settings)` (the Recommender class) and scores its batches.
    `actors` defaults to the cluster's CPUs divided by `cpus_per_actor`. The part files hold the
    columns `user_id, rank, item_id, score, raw_score` (batch_output.COLUMNS); Ray writes them
    unordered, so the result is re-sorted here.
    """
    out = Path(out)
    if out.suffix.lower() == ".csv":
        raise ScenerecError(f"--engine ray writes a folder of parquet parts, not {out}")
    if out.exists() and any(out.iterdir() if out.is_dir() else [out]):
        raise ScenerecError(f"{out} already exists: Ray writes a fresh folder of parts")
    ray = start_ray(address)
    if actors is None:
        actors = actor_count(ray, cpus_per_actor)
    users = list(dict.fromkeys(user_ids))
    blocks = max(1, min(len(users), actors * 4))
    dataset = ray.data.from_items([{"user_id": u} for u in users], override_num_blocks=blocks)
    scored = dataset.map_batches(
        ScoringActor,
        fn_constructor_args=(opener, settings.model_dump(mode="json"), scene, k, rerank),
        batch_size=min(batch_size, max(1, -(-len(users) // blocks))),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )
    scored.write_parquet(str(out))
    found = read_scores(out, scene=scene, k=k)
    by_user = {u: row for u, *row in zip(found.user_ids, found.item_ids, found.scores, found.raw_scores)}
    result = BatchScores(scene=scene, k=k)
    for user in user_ids:
        items, values, raws = by_user.get(user, ([], [], []))
        result.user_ids.append(user)
        result.item_ids.append(list(items))
        result.scores.append(list(values))
        result.raw_scores.append(list(raws))
    return result
