"""Scale-out benchmark: encoder backends (items/s, cosine to torch fp32) and Ray batch scoring vs one process.

    flock /tmp/scenerec-cpu.lock nice -n 0 python benchmarks/bench_scale.py --part encoding [--texts 2000]
    flock /tmp/scenerec-cpu.lock nice -n 0 python benchmarks/bench_scale.py --part scoring --data-dir DIR
    flock /tmp/scenerec-cpu.lock nice -n 0 python benchmarks/bench_scale.py --part scoring --data-dir DIR --rerank --users 40 --batch-size 10
    flock /tmp/scenerec-cpu.lock nice -n 0 python benchmarks/bench_scale.py --part saturation --actors 1

Encoding reads the first N items of the Arts-Office catalog (../shared/data; skipped when absent).
Scoring runs on an ingested data directory (`--data-dir`); Ray is started locally on every core.
Saturation (`ray_saturation.py`): a 1M-item synthetic scene, an actor pool of 1..4 actors.
Each part writes benchmarks/results/scale/<part>.json (the saturation part one file per actor count).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine

CATALOG = HERE.parent.parent / "shared" / "data" / "amazon-arts-office"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")


def bench_encoders(n_texts: int, cache_dir: Path, rounds: int = 2, threads: int | None = None,
                   on_round: Callable[[dict], None] | None = None) -> dict:
    """items/s of each backend on the same texts: one warm-up, then `rounds` timed passes, interleaved.

    The passes of the backends alternate (torch, onnx, ..., torch, onnx, ...) so that each backend sees
    the same background load; the best pass counts. CPU seconds of this process are recorded as well:
    on a shared machine items per CPU-second moves less with the load than items per wall second.
    `on_round` receives the summary so far after every round (a run cut short still leaves its numbers).
    """
    import torch

    from scenerec.settings import EmbeddingSettings
    from scenerec.stores.embeddings import make_encoder

    if threads is not None:
        torch.set_num_threads(threads)
    with open(CATALOG / "items.jsonl", encoding="utf-8") as lines:
        rows = [json.loads(line) for _, line in zip(range(n_texts), lines)]
    texts = [f"{r.get('title', '')}. {r.get('text', '')}" for r in rows]
    encoders, out = {}, {}
    for backend in BACKENDS:
        started = time.perf_counter()
        encoders[backend] = make_encoder(EmbeddingSettings(backend=backend, cache_dir=cache_dir,
                                                           show_progress=False, threads=threads))
        out[backend] = {"name": encoders[backend].name, "load_s": round(time.perf_counter() - started, 2),
                        "passes": []}
        encoders[backend].encode(texts[:128])
    vectors: dict = {}
    summary: dict = {}
    for done in range(1, rounds + 1):
        for backend, encoder in encoders.items():
            load_before = os.getloadavg()[0]
            cpu, started = time.process_time(), time.perf_counter()
            vectors[backend] = encoder.encode(texts)
            seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
            out[backend]["passes"].append({"seconds": round(seconds, 2), "cpu_s": round(cpu_s, 2),
                                           "load_average_1m_before": round(load_before, 2)})
            print(backend, out[backend]["passes"][-1], flush=True)
        summary = _summary(out, vectors, len(texts), done, threads or torch.get_num_threads())
        if on_round is not None:
            on_round(summary)
    return summary


def _summary(out: dict, vectors: dict, n_texts: int, rounds: int, threads: int) -> dict:
    """Best pass of each backend, its speed-up over torch, and its vectors' cosine to torch's."""
    reference = vectors["torch"]
    for backend, row in out.items():
        best = min(row["passes"], key=lambda p: p["seconds"])
        cosines = (vectors[backend] * reference).sum(axis=1)
        row.update(items_per_s=round(n_texts / best["seconds"], 1),
                   items_per_cpu_s=round(n_texts / min(p["cpu_s"] for p in row["passes"]), 1),
                   cos_mean=float(cosines.mean()), cos_min=float(cosines.min()))
    for row in out.values():
        row["speedup_vs_torch"] = round(row["items_per_s"] / out["torch"]["items_per_s"], 2)
        row["cpu_speedup_vs_torch"] = round(row["items_per_cpu_s"] / out["torch"]["items_per_cpu_s"], 2)
    return {"texts": n_texts, "rounds": rounds, "threads": threads,
            "load_average_1m_after": round(os.getloadavg()[0], 2), "backends": out}


def bench_scoring(
    data_dir: Path, scene: str, n_users: int, rerank: bool = False, batch_size: int = 1024
) -> dict:
    """users/s of one-process score_batch vs engine='ray' (local Ray on every core), same users.

    With `rerank`, both runs put the LLM stage in (the configured backend, label scores at weight 0.3):
    one backend for the one-process run, one per Ray actor, each built and loaded inside the timing."""
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    llm = {"rerank_weight": 0.3} if rerank else {}
    settings = load_settings(data_dir=data_dir, embedding={"show_progress": False}, llm=llm)
    with Recommender.open(settings=settings) as rec:
        users = rec.items.users()[:n_users]
        # builds the scene index once (and converts the LLM once), as a warm run would
        rec.score_batch(users[:2 if rerank else 16], scene, 10, rerank=rerank)
        started = time.perf_counter()
        local = rec.score_batch(users, scene, 10, rerank=rerank, batch_size=batch_size)
        local_s = time.perf_counter() - started
        from scenerec.stores.ray_encoding import start_ray

        started = time.perf_counter()
        ray = start_ray()
        init_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            distributed = rec.score_batch(users, scene, 10, out=Path(tmp) / "parts", engine="ray",
                                          rerank=rerank, batch_size=batch_size)
            ray_s = time.perf_counter() - started
        cpus = ray.cluster_resources().get("CPU")
        ray.shutdown()
    same = distributed.item_ids == local.item_ids
    return {"data_dir": str(data_dir), "scene": scene, "users": len(users), "ray_cpus": cpus,
            "rerank": rerank, "llm_backend": settings.llm.backend if rerank else None, "batch_size": batch_size,
            "local_s": round(local_s, 2), "local_users_per_s": round(len(users) / local_s, 1),
            "ray_init_s": round(init_s, 2), "ray_s": round(ray_s, 2),
            "ray_users_per_s": round(len(users) / ray_s, 1), "ray_equals_local": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("encoding", "scoring", "saturation"), required=True)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="encoding: timed passes per backend")
    parser.add_argument("--threads", type=int, help="encoding: threads of every backend (default: all cores)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--scene", default="office")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--model-cache", type=Path, default=HERE / "out" / "model-cache")
    parser.add_argument("--actors", type=int, default=1, help="saturation: actors in the pool (on 2 cores)")
    parser.add_argument("--items", type=int, default=1_000_000, help="saturation: synthetic catalog size")
    parser.add_argument("--rerank", action="store_true", help="scoring: with the LLM stage (configured backend)")
    parser.add_argument("--batch-size", type=int, default=1024, help="scoring: users per batch")
    args = parser.parse_args()
    result: dict = {"machine": machine(), "part": args.part}
    name = args.part

    def write(partial: dict | None = None) -> Path:
        if partial is not None:
            result[args.part] = partial
        target = HERE / "results" / "scale" / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")
        return target

    if args.part == "encoding":
        if not CATALOG.is_dir():
            raise SystemExit(f"{CATALOG} is not here: the encoding part needs the Arts-Office catalog")
        name = f"encoding-{args.threads or len(os.sched_getaffinity(0))}threads"
        bench_encoders(args.texts, args.model_cache, args.rounds, args.threads, on_round=write)
    elif args.part == "scoring":
        if args.data_dir is None:
            raise SystemExit("--part scoring needs --data-dir (an ingested data directory)")
        name = "scoring-rerank" if args.rerank else "scoring"
        result["scoring"] = bench_scoring(args.data_dir, args.scene, args.users, args.rerank, args.batch_size)
        print(result["scoring"], flush=True)
    else:
        from ray_saturation import bench_saturation

        name = f"saturation-{args.items // 1000}k-{args.actors}actors"
        result["saturation"] = bench_saturation(args.items, args.users, args.actors)
    print(f"wrote {write()}")


if __name__ == "__main__":
    main()
