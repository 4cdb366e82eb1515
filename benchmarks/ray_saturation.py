"""Where Ray's actor pool saturates on a 1M-item scene: the retrieval step of batch scoring, synthetic data.

Called by `bench_scale.py --part saturation --actors N` (N = 0: the same search in this process, no Ray).
The catalog is synthetic, as in bench_retrieval.py: vectors drawn from the mean and covariance of real
item vectors (the first 2,000 Arts-Office items, encoded once with the openvino backend, exact to torch's;
cached under benchmarks/out/) and normalised; one query vector per user from the same distribution.
The item matrix is put in Ray's object store once; every actor maps it (no copy) and builds the exact
CPU scene index on it (whose oneDNN-packed copy is per actor). Each actor searches top-10 for its
batches of users. What this leaves out of `score_batch`: the per-user history read and transfer query
(small next to a 1M-item search) and the history exclusion.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
from bench_retrieval import synthetic  # the same generator as the retrieval benchmark

HERE = Path(__file__).resolve().parent
FIT = HERE / "out" / "synthetic-fit-ao2000.npz"
CATALOG = HERE.parent.parent / "shared" / "data" / "amazon-arts-office"
K = 10
BATCH = 512


def _fit() -> tuple[np.ndarray, np.ndarray]:
    """Mean and Cholesky factor of 2,000 real Arts-Office item vectors (computed once, then cached)."""
    if not FIT.exists():
        from scenerec.settings import EmbeddingSettings
        from scenerec.stores.embeddings import make_encoder

        with open(CATALOG / "items.jsonl", encoding="utf-8") as lines:
            rows = [json.loads(line) for _, line in zip(range(2000), lines)]
        texts = [f"{r.get('title', '')}. {r.get('text', '')}" for r in rows]
        encoder = make_encoder(EmbeddingSettings(backend="openvino", cache_dir=HERE / "out" / "model-cache",
                                                 show_progress=False))
        vectors = encoder.encode(texts).astype(np.float64)
        cov = np.cov(vectors, rowvar=False) + 1e-6 * np.eye(vectors.shape[1])  # 2,000 rows: keep it definite
        FIT.parent.mkdir(parents=True, exist_ok=True)
        np.savez(FIT, mean=vectors.mean(axis=0), chol=np.linalg.cholesky(cov))
    fit = np.load(FIT)
    return fit["mean"].astype(np.float32), fit["chol"].astype(np.float32)


def _rss_mb() -> dict:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_anon_mb": round(int(status.get("RssAnon", "0 kB").split()[0]) / 1024),
            "rss_shmem_mb": round(int(status.get("RssShmem", "0 kB").split()[0]) / 1024)}


class SearchActor:
    """Maps the shared item matrix, builds the exact index once, answers top-10 for batches of users."""

    def __init__(self, refs: list, threads: int) -> None:
        import ray
        import torch

        from scenerec.stores.scene_index import CPUSceneIndex

        torch.set_num_threads(threads)
        started = time.perf_counter()
        vectors, self.queries = ray.get(refs)  # zero-copy views of the object store
        self.index = CPUSceneIndex([f"s{j:07d}" for j in range(len(vectors))], vectors)
        self.index.search(self.queries[:BATCH], K)  # packs the index once, as a warm scoring actor would
        self.startup_s = time.perf_counter() - started
        self.pid, self.threads = os.getpid(), threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = np.asarray(batch["data"], dtype=np.int64)
        began = time.time()
        found = self.index.search(self.queries[rows], K)
        n = len(rows)
        return {"id": rows, "items": found.indices, "scores": found.scores,
                "began": np.full(n, began), "ended": np.full(n, time.time()),
                "pid": np.full(n, self.pid), "startup_s": np.full(n, self.startup_s),
                "threads": np.full(n, self.threads),
                **{key: np.full(n, value) for key, value in _rss_mb().items()}}


def _in_process(vectors: np.ndarray, queries: np.ndarray) -> dict:
    """The same search in this process (2 threads): the baseline the pool is compared with."""
    import torch

    from scenerec.stores.scene_index import CPUSceneIndex

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    started = time.perf_counter()
    index = CPUSceneIndex([f"s{j:07d}" for j in range(len(vectors))], vectors)
    index.search(queries[:BATCH], K)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(queries), BATCH):
        index.search(queries[start : start + BATCH], K)
    seconds = time.perf_counter() - started
    return {"engine": "one process", "threads": torch.get_num_threads(), "index_build_and_pack_s": round(startup, 2),
            "search_s": round(seconds, 2), "users_per_s": round(len(queries) / seconds, 1), **_rss_mb()}


def bench_saturation(n_items: int, n_users: int, actors: int) -> dict:
    """users/s of a pool of `actors` search actors on all local cores (0: in this process, no Ray)."""
    mean, chol = _fit()
    started = time.perf_counter()
    vectors = synthetic(mean, chol, n_items, seed=1)
    queries = synthetic(mean, chol, n_users, seed=2)
    out: dict = {"items": n_items, "users": n_users, "k": K, "batch_size": BATCH,
                 "make_vectors_s": round(time.perf_counter() - started, 2)}
    if actors == 0:
        out.update(_in_process(vectors, queries))
        return out
    from scenerec.stores.ray_encoding import RAY_ENV

    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray
    import ray.data

    cores = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
             object_store_memory=int(vectors.nbytes * 1.5 + queries.nbytes + 2**29),
             runtime_env={"env_vars": dict(RAY_ENV)})
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    out["ray_init_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    refs = [ray.put(vectors), ray.put(queries)]
    out["put_s"] = round(time.perf_counter() - started, 2)
    del vectors
    threads = max(1, cores // actors)
    started = time.perf_counter()
    # blocks from the driver's memory (from_numpy): no read tasks that would wait for the pool's CPUs
    blocks = np.array_split(np.arange(n_users), max(actors * 4, -(-n_users // BATCH)))
    dataset = ray.data.from_numpy(blocks).map_batches(
        SearchActor, fn_constructor_args=(refs, threads), batch_size=BATCH, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cores / actors,
    )
    rows, per_actor, began, ended = [], {}, [], []
    wall_start = time.time()
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        rows.append(batch["id"])
        began.append(float(batch["began"].min()))
        ended.append(float(batch["ended"].max()))
        for i, pid in enumerate(batch["pid"]):
            per_actor.setdefault(int(pid), {"users": 0})["users"] += 1
            per_actor[int(pid)].update(startup_s=round(float(batch["startup_s"][i]), 2),
                                       threads=int(batch["threads"][i]),
                                       peak_rss_mb=int(batch["peak_rss_mb"][i]),
                                       rss_anon_mb=int(batch["rss_anon_mb"][i]),
                                       rss_shmem_mb=int(batch["rss_shmem_mb"][i]))
    total = time.perf_counter() - started
    ray.shutdown()
    ids = np.sort(np.concatenate(rows))
    window = max(ended) - min(began)  # first search started .. last search ended, clocks of one machine
    out.update(
        engine="ray", actors=actors, threads_per_actor=threads, cpus_per_actor=round(cores / actors, 3),
        cores=cores, all_users_once=bool(np.array_equal(ids, np.arange(n_users))),
        pipeline_s=round(total, 2), users_per_s=round(n_users / total, 1),
        first_search_after_s=round(min(began) - wall_start, 2), search_window_s=round(window, 2),
        users_per_s_searching=round(n_users / window, 1), actors_that_searched=len(per_actor),
        per_actor=list(per_actor.values()),
    )
    return out
