"""Benchmarks of the LLM stage: latency on the demo catalog, and NDCG with and without it on real data.

    python benchmarks/bench_llm.py latency                 # demo catalog, embedded model, 2 threads
    python benchmarks/bench_llm.py eval --data-dir DIR     # an ingested amazon-arts-office data dir

`latency` reports model load time, rerank+explain seconds for 20 candidates (p50/p95; cold = the text
profile is written, warm = it is reused from the store), and decoding tokens/s, for rerank_weight 0 (the
default: explanations only) and 0.3 (per-item yes/no scores too).

`eval` wraps a harness method (default `fused`, the recommender's own scorer) so its top-20 are reranked
by the fused score, scores every case's top-20 with the LLM once, and evaluates several weights from that
cache: the weight is chosen on the valid split and reported on the test split, with the repair counters.
Results go to benchmarks/results/llm/ (JSON + Markdown).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "llm"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


# --- latency ---


def latency(args: argparse.Namespace) -> dict:
    from scenerec.llm import make_backend
    from scenerec.paths import demo_catalog_dir
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings
    from scenerec.stores.ingest import ingest_catalog

    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    settings = load_settings(data_dir=work / "data")
    settings = settings.model_copy(
        update={"embedding": settings.embedding.model_copy(update={"show_progress": False})}
    )
    ingest_catalog(demo_catalog_dir(), settings)
    llm = settings.llm.model_copy(update={"options": {"threads": args.threads}, "cache_dir": args.cache_dir})
    start = time.perf_counter()
    backend = make_backend(llm)
    backend.load()  # type: ignore[attr-defined]
    load_seconds = time.perf_counter() - start
    report: dict = {
        "load_seconds": round(load_seconds, 2),
        "threads": args.threads,
        "model": backend.model_name,
        "runs": {},
    }
    with Recommender(settings) as recommender:
        scenes = recommender.items.scenes()
        users = []
        for user_id in recommender.items.users():
            counts = recommender.history(user_id).scene_counts()
            scene = min(scenes, key=lambda s: counts.get(s, 0))
            if sum(counts.values()) >= 6:
                users.append((user_id, scene))
        users = users[: args.users]
        for weight in (0.0, 0.3):
            cfg = llm.model_copy(update={"rerank_weight": weight})
            for phase in ("cold", "warm"):
                seconds, tokens, decode_s = [], 0, 0.0
                counters = None
                for user_id, scene in users:
                    backend.stats.update(calls=0, prompt_tokens=0, generated_tokens=0, seconds=0.0)
                    t = time.perf_counter()
                    result = recommender.recommend_explained(user_id, scene, 5, backend, cfg)
                    seconds.append(time.perf_counter() - t)
                    tokens += int(backend.stats["generated_tokens"])
                    decode_s += backend.stats["seconds"]
                    counters = result.counters if counters is None else counters.merge(result.counters)
                key = f"weight={weight} {phase}"
                report["runs"][key] = {
                    "users": len(seconds),
                    "p50_s": round(statistics.median(seconds), 2),
                    "p95_s": round(percentile(seconds, 95), 2),
                    "max_s": round(max(seconds), 2),
                    "generated_tokens": tokens,
                    "tokens_per_s": round(tokens / decode_s, 1) if decode_s else None,
                    "counters": counters.nonzero() if counters else {},
                }
                print(key, report["runs"][key], file=sys.stderr)
    return report


# --- NDCG with and without the LLM stage ---


class LLMScoreCache:
    """Per (history, scene): the LLM's P(yes) for the base method's top-N, computed once for all weights."""

    def __init__(self, backend: object, n: int, settings: object) -> None:
        from scenerec.rerank.reranker import RerankCounters

        self.backend = backend
        self.n = n
        self.settings = settings
        self.support: dict[tuple[tuple[str, ...], str], dict[str, float]] = {}
        self.counters = RerankCounters()
        self.seconds = 0.0
        self.lookup = None  # item ids -> Items (their text goes into the prompts)

    def fill(
        self,
        data: object,
        histories: Sequence[Sequence[str]],
        scene: str,
        tops: list[list[str]],
        base_scores: list[list[float]],
    ) -> None:
        from scenerec.models import HistoryEntry, Recommendation, UserHistory
        from scenerec.rerank.reranker import Reranker, RerankRequest

        requests, keys = [], []
        for history, top, scores in zip(histories, tops, base_scores):
            key = (tuple(history), scene)
            if key in self.support or not top:
                continue
            entries = [
                HistoryEntry(item_id=i, scene=data.item_scene[i], title=data.item_title[i], position=p)
                for p, i in enumerate(history)
            ]
            recs = [
                Recommendation(item_id=i, title=data.item_title[i], scene=scene, score=float(s))
                for i, s in zip(top, scores)
            ]
            items = self.lookup(top) if self.lookup is not None else {}
            requests.append(
                RerankRequest(
                    subject="eval",
                    history=UserHistory(user_id="eval", entries=entries),
                    scene=scene,
                    candidates=recs,
                    k=len(recs),
                    items=items,
                )
            )
            keys.append(key)
        if not requests:
            return
        start = time.perf_counter()
        reranker = Reranker(self.backend, self.settings)  # type: ignore[arg-type]
        for key, result in zip(keys, reranker.rerank_many(requests, explain=False)):
            self.counters = self.counters.merge(result.counters)
            raw = result.llm_scores or {}
            self.support[key] = {i: 1.0 / (1.0 + math.exp(-m)) for i, m in raw.items()}
        self.seconds += time.perf_counter() - start
        done = len(self.support)
        print(f"  llm-scored {done} histories, {self.seconds:.0f} s", file=sys.stderr)


def make_llm_method(base_name: str, weight: float, cache: LLMScoreCache, shared_base: dict) -> object:
    from scenerec.evaluation.methods import RankingMethod, make_method
    from scenerec.rerank.reranker import fuse_scores

    class LLMRerankMethod(RankingMethod):
        name = f"{base_name}+llm w={weight}"

        def fit(self, data: object) -> None:
            self.data = data
            if shared_base.get("data") is not data:
                shared_base["method"] = make_method(base_name)
                shared_base["method"].fit(data)
                shared_base["data"] = data
            self.base = shared_base["method"]

        def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
            scores = np.array(self.base.score(histories, scene), dtype=np.float64)
            if weight == 0:
                return scores
            ids = self.data.scene_item_ids[scene]
            columns = self.data.scene_column[scene]
            tops, top_scores, top_cols = [], [], []
            for row, history in enumerate(histories):
                masked = scores[row].copy()
                owned = [columns[i] for i in history if i in columns]
                masked[owned] = -np.inf
                cols = [c for c in np.argsort(-masked, kind="stable")[: cache.n] if np.isfinite(masked[c])]
                top_cols.append(cols)
                tops.append([ids[c] for c in cols])
                top_scores.append([float(masked[c]) for c in cols])
            cache.fill(self.data, histories, scene, tops, top_scores)
            for row, history in enumerate(histories):
                support = cache.support.get((tuple(history), scene))
                if not support or not top_cols[row]:
                    continue
                fused = fuse_scores(top_scores[row], [support.get(i, 0.0) for i in tops[row]], weight)
                ceiling = np.nanmax(np.where(np.isfinite(scores[row]), scores[row], np.nan))
                for c, f in zip(top_cols[row], fused):
                    scores[row, c] = ceiling + 1.0 + f  # the top-N stay on top, in fused order
            return scores

    return LLMRerankMethod()


def run_eval(args: argparse.Namespace) -> dict:
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData
    from scenerec.llm import make_backend
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    settings = load_settings(data_dir=args.data_dir)
    llm = settings.llm.model_copy(
        update={
            "rerank_weight": 1.0,
            "use_profile": False,
            "options": {"threads": args.threads},
            "cache_dir": args.cache_dir,
            "rerank_method": "labels",
        }
    )
    backend = make_backend(llm)
    weights = [float(w) for w in args.weights.split(",")]
    report: dict = {"base": args.base, "setting": args.setting, "weights": weights, "splits": {}}
    with Recommender(settings) as recommender:
        for split, max_cases in (("valid", args.valid_cases), ("test", args.test_cases)):
            if max_cases == 0:
                continue
            cache = LLMScoreCache(backend, args.candidates, llm)
            cache.lookup = recommender.items.get_items
            shared: dict = {}
            methods = [make_llm_method(args.base, w, cache, shared) for w in weights]
            result = evaluate(
                EvalData.from_recommender(recommender, split),
                methods,
                split=split,
                settings=[args.setting],
                protocols=["full"],
                seed=args.seed,
                n_bootstrap=1000,
                max_cases=max_cases,
                batch_size=64,
            )
            rows = {}
            for w, method in zip(weights, methods):
                overall = result.result(method.name, args.setting, "full").scenes["overall"]
                rows[str(w)] = {m: overall.metrics[m].model_dump() for m in ("ndcg@10", "hr@10")}
            report["splits"][split] = {
                "cases": result.n_cases,
                "ndcg@10": rows,
                "counters": cache.counters.nonzero(),
                "llm_seconds": round(cache.seconds, 1),
                "histories_scored": len(cache.support),
            }
            print(split, json.dumps(report["splits"][split], indent=1), file=sys.stderr)
    if "valid" not in report["splits"]:
        return report
    valid = report["splits"]["valid"]["ndcg@10"]
    # a weight is chosen only when its valid NDCG@10 clears the upper bound of the interval without the LLM
    ceiling = valid[str(0.0)]["ndcg@10"]["high"] if str(0.0) in valid else -1.0
    helping = [w for w in weights if w > 0 and valid[str(w)]["ndcg@10"]["mean"] > ceiling]
    report["chosen_weight"] = max(helping, key=lambda w: valid[str(w)]["ndcg@10"]["mean"]) if helping else 0.0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--users", type=int, default=12)
    ev = sub.add_parser("eval")
    ev.add_argument("--data-dir", type=Path, required=True)
    ev.add_argument("--base", default="fused")
    ev.add_argument("--setting", default="mixed")
    ev.add_argument("--weights", default="0,0.1,0.2,0.3,0.5")
    ev.add_argument("--valid-cases", type=int, default=200)
    ev.add_argument("--test-cases", type=int, default=300)
    ev.add_argument("--candidates", type=int, default=20)
    ev.add_argument("--seed", type=int, default=0)
    for p in (lat, ev):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument(
            "--cache-dir", type=Path, default=None, help="Where the GGUF is converted (default: user cache)."
        )
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report = latency(args) if args.command == "latency" else run_eval(args)
    out = args.out or RESULTS / f"{args.command}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
