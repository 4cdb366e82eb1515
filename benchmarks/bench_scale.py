"""Scale-out benchmark: encoder backends (items/s, cosine to torch fp32) and Ray batch scoring vs one process.

    nice -n 10 python benchmarks/bench_scale.py [--texts 2000] [--data-dir DIR] [--scene S] [--users N]

Encoding reads the first N items of the Arts-Office catalog (../shared/data; skipped when absent).
Scoring runs on an ingested data directory (`--data-dir`); Ray is started locally on every core.
Writes benchmarks/results/scale/scale.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine

CATALOG = HERE.parent.parent / "shared" / "data" / "amazon-arts-office"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")


def bench_encoders(n_texts: int, cache_dir: Path) -> dict:
    """items/s of each backend on the same texts (one warm-up pass, then one timed pass)."""
    from scenerec.settings import EmbeddingSettings
    from scenerec.stores.embeddings import make_encoder

    with open(CATALOG / "items.jsonl", encoding="utf-8") as lines:
        rows = [json.loads(line) for _, line in zip(range(n_texts), lines)]
    texts = [f"{r.get('title', '')}. {r.get('text', '')}" for r in rows]
    out, reference = {}, None
    for backend in BACKENDS:
        started = time.perf_counter()
        encoder = make_encoder(EmbeddingSettings(backend=backend, cache_dir=cache_dir, show_progress=False))
        load_s = time.perf_counter() - started
        encoder.encode(texts[:128])
        started = time.perf_counter()
        vectors = encoder.encode(texts)
        seconds = time.perf_counter() - started
        reference = vectors if reference is None else reference
        cosines = (vectors * reference).sum(axis=1)
        out[backend] = {"name": encoder.name, "items_per_s": round(len(texts) / seconds, 1),
                        "load_s": round(load_s, 2), "cos_mean": float(cosines.mean()),
                        "cos_min": float(cosines.min())}
        print(backend, out[backend], flush=True)
    torch_rate = out["torch"]["items_per_s"]
    for row in out.values():
        row["speedup_vs_torch"] = round(row["items_per_s"] / torch_rate, 2)
    return {"texts": len(texts), "backends": out}


def bench_scoring(data_dir: Path, scene: str, n_users: int) -> dict:
    """users/s of one-process score_batch vs engine='ray' (local Ray on every core), same users."""
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    settings = load_settings(data_dir=data_dir, embedding={"show_progress": False})
    with Recommender.open(settings=settings) as rec:
        users = rec.items.users()[:n_users]
        rec.score_batch(users[:16], scene, 10)  # builds the scene index once, as a warm run would
        started = time.perf_counter()
        local = rec.score_batch(users, scene, 10)
        local_s = time.perf_counter() - started
        from scenerec.stores.ray_encoding import start_ray

        started = time.perf_counter()
        ray = start_ray()
        init_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            distributed = rec.score_batch(users, scene, 10, out=Path(tmp) / "parts", engine="ray")
            ray_s = time.perf_counter() - started
        cpus = ray.cluster_resources().get("CPU")
        ray.shutdown()
    same = distributed.item_ids == local.item_ids
    return {"data_dir": str(data_dir), "scene": scene, "users": len(users), "ray_cpus": cpus,
            "local_s": round(local_s, 2), "local_users_per_s": round(len(users) / local_s, 1),
            "ray_init_s": round(init_s, 2), "ray_s": round(ray_s, 2),
            "ray_users_per_s": round(len(users) / ray_s, 1), "ray_equals_local": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--scene", default="office")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--model-cache", type=Path, default=HERE / "out" / "model-cache")
    args = parser.parse_args()
    result: dict = {"machine": machine()}
    if CATALOG.is_dir():
        result["encoding"] = bench_encoders(args.texts, args.model_cache)
    if args.data_dir is not None:
        result["scoring"] = bench_scoring(args.data_dir, args.scene, args.users)
        print(result["scoring"], flush=True)
    target = HERE / "results" / "scale" / "scale.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
