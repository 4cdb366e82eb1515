"""Ingest benchmark (issue 2): encode throughput, ingest wall time, `recommend` latency.

    python benchmarks/bench_ingest.py                      # ../shared/data/amazon-arts-office, cold cache
    python benchmarks/bench_ingest.py --catalog DIR --sample 1000 --users 100

In one process, on one catalog:
1. encode throughput: scenerec's encoder against raw `SentenceTransformer.encode` (same folder, same
   batch size) on the same `--sample` item documents, alternating, best of `--repeat`;
2. `ingest` into a fresh data directory with an empty embedding cache (wall time, items/s), then the
   same ingest again (nothing must be re-encoded);
3. `recommend` latency (k=10) over `--users` users drawn with a fixed seed, each in the scene where their
   history is thinnest: the first call (cold) separately, then p50/p95 of the rest.
Writes ingest.json and ingest.md to benchmarks/results/ingest/ (or --out) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

from machine import machine

HERE = Path(__file__).resolve().parent
DEFAULT_CATALOG = HERE.parent.parent / "shared" / "data" / "amazon-arts-office"


def encode_throughput(documents: list[str], batch_size: int, repeat: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from scenerec.settings import EmbeddingSettings
    from scenerec.stores.embeddings import make_encoder

    settings = EmbeddingSettings(batch_size=batch_size, show_progress=False)
    ours = make_encoder(settings)
    raw = SentenceTransformer(str(ours.folder), device=ours.device, local_files_only=True)
    ours.encode(documents[:batch_size])  # warm both: first calls pay for lazy initialisation
    raw.encode(documents[:batch_size], batch_size=batch_size)
    ours_s, raw_s = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        ours.encode(documents)
        ours_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        raw.encode(documents, batch_size=batch_size, normalize_embeddings=True)
        raw_s.append(time.perf_counter() - started)
    n = len(documents)
    return {
        "texts": n,
        "batch_size": batch_size,
        "scenerec_items_per_s": round(n / min(ours_s), 1),
        "raw_items_per_s": round(n / min(raw_s), 1),
        "ratio": round(min(raw_s) / min(ours_s), 3),
        "scenerec_seconds": [round(s, 2) for s in ours_s],
        "raw_seconds": [round(s, 2) for s in raw_s],
    }


def recommend_latency(data_dir: Path, users: int, seed: int) -> dict:
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    with Recommender.open(settings=settings) as rec:
        scenes = [s.scene for s in rec.scenes()]
        everyone = rec.items.users()
        picked = random.Random(seed).sample(everyone, min(users, len(everyone)))
        times, transfer = [], rec.transfer is not None
        for user_id in picked:
            history = rec.history(user_id)
            scene = min(scenes, key=lambda s: (len(history.in_scene(s)), s))
            started = time.perf_counter()
            results = rec.recommend(user_id, scene, k=10)
            times.append(time.perf_counter() - started)
            assert len(results) == 10 and all(r.scene == scene for r in results)
    rest = sorted(times[1:])
    return {
        "users": len(times),
        "first_call_ms": round(times[0] * 1000, 1),
        "p50_ms": round(statistics.median(rest) * 1000, 1),
        "p95_ms": round(rest[int(0.95 * (len(rest) - 1))] * 1000, 1),
        "transfer_model": transfer,
    }


def timed_ingest(catalog: Path, data_dir: Path) -> dict:
    from scenerec.settings import load_settings
    from scenerec.stores.ingest import ingest_catalog

    started = time.perf_counter()
    report = ingest_catalog(catalog, load_settings(data_dir=data_dir))
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "items": report.items,
        "interactions": report.interactions,
        "encoded": report.encoded,
        "items_per_s": round(report.items / seconds, 1),
    }


def markdown(result: dict) -> str:
    m, enc, first, again, rec = (result[k] for k in ("machine", "encode", "ingest", "reingest", "recommend"))
    return "\n".join(
        [
            "# Ingest benchmark",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
            f"sentence-transformers {m['sentence_transformers']}, chromadb {m['chromadb']}; load average "
            f"at start {m['load_average_at_start']} (the cores may be shared). Catalog: `{result['catalog']}`.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| encode, scenerec encoder ({enc['texts']} item documents, batch {enc['batch_size']}) | "
            f"{enc['scenerec_items_per_s']} items/s |",
            f"| encode, raw SentenceTransformer.encode, same texts, same run | {enc['raw_items_per_s']} items/s |",
            f"| scenerec / raw | {enc['ratio']} |",
            f"| ingest, fresh data dir, empty cache ({first['items']} items, {first['interactions']} "
            f"interactions, {first['encoded']} encoded) | {first['seconds']} s ({first['items_per_s']} items/s) |",
            f"| ingest again, unchanged catalog ({again['encoded']} encoded) | {again['seconds']} s |",
            f"| recommend k=10, first call | {rec['first_call_ms']} ms |",
            f"| recommend k=10, p50 / p95 over {rec['users'] - 1} more users | {rec['p50_ms']} / {rec['p95_ms']} ms |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--work-dir", type=Path, default=HERE / "out" / "bench-ingest-data")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ingest")
    parser.add_argument("--sample", type=int, default=2000, help="Item documents for the encode comparison.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.catalog.is_dir():
        print(f"no catalog at {args.catalog} (../shared/data is not part of the project)", file=sys.stderr)
        return 2

    from scenerec.catalog import load_catalog

    result: dict = {"machine": machine(), "catalog": str(args.catalog), "command": " ".join(sys.argv)}
    documents = [i.document for i in load_catalog(args.catalog).items]
    sample = random.Random(args.seed).sample(documents, min(args.sample, len(documents)))
    result["encode"] = encode_throughput(sample, args.batch_size, args.repeat)
    print(f"encode: {result['encode']}", file=sys.stderr)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    result["ingest"] = timed_ingest(args.catalog, args.work_dir)
    print(f"ingest: {result['ingest']}", file=sys.stderr)
    result["reingest"] = timed_ingest(args.catalog, args.work_dir)
    result["recommend"] = recommend_latency(args.work_dir, args.users, args.seed)
    result["load_average_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown(result)
    (args.out / "ingest.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
