"""Ingest's encoding stage on Ray Data: texts flow through an actor pool of encoders; the driver writes.

Workers only compute vectors. The one process that holds the ingest's write lock commits each batch
that comes back to the embedding cache in one SQLite transaction, so a worker killed mid-batch leaves
no row at all (Ray restarts it and retries the batch), and a killed driver loses at most the batches
not yet committed; the next ingest encodes only those.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import ScenerecError, StoreError
from ..settings import EmbeddingSettings
from .embedding_cache import ENCODE_CHUNK, EmbeddingCache
from .embeddings import Encoder, cache_name, make_encoder

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
OBJECT_STORE_BYTES = 2 * 1024**3  # of a local Ray; the default (30% of RAM) is more than we need
EncoderFactory = Callable[[EmbeddingSettings], Encoder]


def start_ray(address: str | None = None) -> Any:
    """The `ray` module, connected: reuses an initialised Ray, else joins `address` or starts a local one."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ScenerecError("--engine ray needs Ray: pip install 'scenerec[scale]'") from exc
    if not ray.is_initialized():
        local = address in (None, "local") and not os.environ.get("RAY_ADDRESS")
        ray.init(
            address=address, include_dashboard=False, log_to_driver=False,
            object_store_memory=OBJECT_STORE_BYTES if local else None,
            runtime_env={"env_vars": dict(RAY_ENV)},
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray


def actor_count(ray: Any, cpus_per_actor: float) -> int:
    """As many actors as the cluster's CPUs hold."""
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))


class EncodingActor:
    """One Ray actor: loads the encoder once, turns batches of texts into rows of vectors."""

    def __init__(self, settings: dict[str, Any], factory: EncoderFactory | None, threads: int) -> None:
        embedding = EmbeddingSettings.model_validate({**settings, "threads": threads, "show_progress": False})
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        self.encoder = (factory or make_encoder)(embedding)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = np.asarray(self.encoder.encode([str(t) for t in batch["text"]]), dtype=np.float32)
        return {"content_hash": batch["content_hash"], "vector": vectors}


def encode_with_ray(
    settings: EmbeddingSettings,
    cache: EmbeddingCache,
    texts_by_hash: Mapping[str, str],
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    batch_size: int = ENCODE_CHUNK,
    factory: EncoderFactory | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors for every hash, the missing ones encoded on Ray; returns them and how many were encoded.

    `factory` builds each actor's encoder (default: `make_encoder`); `on_batch` is told how many new
    vectors are committed so far.
    """
    name = cache_name(settings)
    vectors = cache.get_many(name, list(texts_by_hash))
    missing = [h for h in texts_by_hash if h not in vectors]
    if not missing:
        return vectors, 0
    ray = start_ray(address)
    actors = actors or actor_count(ray, cpus_per_actor)
    blocks = max(1, min(-(-len(missing) // batch_size), actors * 8))
    dataset = ray.data.from_items(
        [{"content_hash": h, "text": texts_by_hash[h]} for h in missing], override_num_blocks=blocks
    ).map_batches(
        EncodingActor,
        fn_constructor_args=(settings.model_dump(mode="json"), factory, max(1, int(cpus_per_actor))),
        batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
    )
    wanted = set(missing)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        matrix = np.asarray(batch["vector"], dtype=np.float32)
        hashes = [str(h) for h in batch["content_hash"]]
        if matrix.ndim != 2 or matrix.shape[0] != len(hashes) or not wanted.issuperset(hashes):
            raise StoreError(f"a Ray encoder returned a malformed batch ({matrix.shape} for {len(hashes)} texts)")
        fresh = dict(zip(hashes, matrix))
        cache.put_many(name, fresh)  # one transaction: a batch is in the cache whole or not at all
        vectors.update(fresh)
        if on_batch is not None:
            on_batch(len(vectors) - (len(texts_by_hash) - len(missing)))
    lost = [h for h in missing if h not in vectors]
    if lost:
        raise StoreError(f"Ray returned no vectors for {len(lost)} texts")
    return vectors, len(missing)
