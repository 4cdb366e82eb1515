"""Explanations: faithfulness, specificity, variety, LLM rephrasing acceptance, latency added to recommend.

    python benchmarks/bench_explanations.py --data-dir DIR --name demo [--users 200] [--llm-sample 20]

Cases are the data directory's test cases (else its users); each is run in both settings: mixed (the whole
history) and cold (the target scene's items dropped). Per shown item (k = 10):

- faithfulness: drop the cited (first) evidence item from the history, re-run the same retrieval, and see
  whether the item's rank drops (an item pushed beyond the candidate depth counts as dropped, rank 101);
  the same for the nearest-by-cosine history item, today's evidence, as the baseline in the same run;
- specificity: the sentence names a co-purchase count, shared attribute words or peer count;
- variety: distinct sentence shapes (templates) per list of 10;
- latency: `recommend_for_history` with attribution and typed evidence against the same retrieval with
  the old nearest-cosine evidence, same cases, interleaved.

With --llm-sample N, N items go through the LLM stage (the configured backend; the embedded SmolLM2 by
default) and the share of its rephrasings that pass the evidence check is reported with the pairs.
Results: benchmarks/results/explanations/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEPTH = 100


def rank_in(recommender, history, scene: str, item_id: str) -> int:
    """1-based rank of an item in the retrieval list for a history (DEPTH + 1 when beyond DEPTH)."""
    found = recommender.candidates([history], scene, DEPTH, [set(history.item_ids)])[0]
    return next((n for n, c in enumerate(found, start=1) if c.item_id == item_id), DEPTH + 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--llm-sample", type=int, default=0)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    from machine import machine

    from scenerec.models import HistoryEntry, UserHistory
    from scenerec.recommend.attribution import without
    from scenerec.recommend.recommender import Recommender
    from scenerec.recommend.retrieval import with_nearest_evidence
    from scenerec.rerank.rephrase import evidence_sentence, is_specific, sentence_shape

    rec = Recommender.open(args.data_dir)
    cases = rec.items.cases(args.split)[: args.users]
    histories = []
    for case in cases:
        items = rec.items.get_items(case.history)
        entries = [
            HistoryEntry(item_id=i, scene=items[i].scene, title=items[i].title, position=p)
            for p, i in enumerate(case.history)
            if i in items
        ]
        histories.append(
            (case.case_id, case.target_scene, UserHistory(user_id=case.user_id, entries=entries))
        )
    if not histories:
        histories = [
            (u, s, rec.history(u)) for u in rec.items.users(args.users) for s in rec.items.scenes()[:1]
        ]
    rec.recommend_for_history(histories[0][2], histories[0][1], 10)  # warm: indexes, interaction matrix
    out: dict = {
        "machine": machine(),
        "data_dir": str(args.data_dir),
        "cases": len(histories),
        "settings": {},
    }
    samples = []
    for setting in ("mixed", "cold"):
        ours_t, base_t, faithful, base_faithful, drops, base_drops = [], [], [], [], [], []
        specific, variety, shapes_all, methods, shown = [], [], {}, set(), 0
        for case_id, scene, history in histories:
            if setting == "cold":
                history = UserHistory(user_id=history.user_id, entries=history.outside_scene(scene))
            if not history.entries:
                continue
            t = time.perf_counter()
            recs = rec.recommend_for_history(history, scene, 10)
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            candidates = rec.candidates([history], scene, 10, [set(history.item_ids)])[0]
            ids = [c.item_id for c in candidates]
            baseline = with_nearest_evidence(
                candidates,
                history,
                rec.item_vectors(ids),
                rec.item_vectors(history.item_ids),
                rec.items.get_items(ids),
                scene,
                rec.settings.retrieval.evidence_items,
            )
            base_t.append(time.perf_counter() - t)
            shapes = set()
            for rank, (r, b) in enumerate(zip(recs, baseline), start=1):
                shown += 1
                methods.add(r.method)
                shape = sentence_shape(r)
                shapes.add(shape)
                shapes_all[shape] = shapes_all.get(shape, 0) + 1
                specific.append(is_specific(r))
                if r.evidence:
                    new = rank_in(rec, without(history, r.evidence[0].item_id), scene, r.item_id)
                    faithful.append(new > rank)
                    drops.append(new - rank)
                if b.evidence:
                    new = rank_in(rec, without(history, b.evidence[0].item_id), scene, b.item_id)
                    base_faithful.append(new > rank)
                    base_drops.append(new - rank)
                if len(samples) < 12 and setting == "mixed" and rank <= 2:
                    samples.append(
                        {
                            "case": case_id,
                            "item": r.title,
                            "sentence": evidence_sentence(r),
                            "baseline_evidence": b.evidence[0].title if b.evidence else None,
                        }
                    )
            variety.append(len(shapes))
        ms = lambda xs, q: round(1000 * statistics.quantiles(xs, n=20)[q], 2) if len(xs) > 1 else None
        out["settings"][setting] = {
            "lists": len(variety),
            "shown_items": shown,
            "methods": sorted(m for m in methods if m),
            "faithfulness": round(sum(faithful) / max(len(faithful), 1), 4),
            "faithfulness_items": len(faithful),
            "median_rank_drop": statistics.median(drops) if drops else None,
            "mean_rank_drop": round(statistics.mean(drops), 2) if drops else None,
            "baseline_faithfulness": round(sum(base_faithful) / max(len(base_faithful), 1), 4),
            "baseline_median_rank_drop": statistics.median(base_drops) if base_drops else None,
            "baseline_mean_rank_drop": round(statistics.mean(base_drops), 2) if base_drops else None,
            "specificity": round(sum(specific) / max(len(specific), 1), 4),
            "variety_mean_shapes_per_list": round(statistics.mean(variety), 2) if variety else None,
            "shapes": shapes_all,
            "latency_ms": {
                "explained_p50": ms(ours_t, 9),
                "explained_p95": ms(ours_t, 18),
                "nearest_baseline_p50": ms(base_t, 9),
                "nearest_baseline_p95": ms(base_t, 18),
                "added_p50": round(ms(ours_t, 9) - ms(base_t, 9), 2) if len(ours_t) > 1 else None,
            },
        }
        print(setting, json.dumps(out["settings"][setting], indent=1), flush=True)
    out["samples"] = samples
    if args.llm_sample:
        out["llm"] = llm_sample(rec, histories, args.llm_sample)
    results = HERE / "results" / "explanations"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(out, indent=2, ensure_ascii=False))
    print("wrote", results / f"{args.name}.json")


def llm_sample(rec, histories, n: int) -> dict:
    """n shown items through the LLM stage: accepted rephrasings, rejections by cause, the pairs."""
    from scenerec.llm import make_backend
    from scenerec.rerank.rephrase import evidence_sentence
    from scenerec.rerank.reranker import RerankCounters

    settings = rec.settings.llm.model_copy(update={"use_profile": False, "explain_items": 5})
    backend = make_backend(settings)
    counters, pairs, done = RerankCounters(), [], 0
    started = time.perf_counter()
    try:
        for _, scene, history in histories:
            if done >= n:
                break
            candidates = rec.recommend_for_history(history, scene, settings.candidates)
            result = rec.rerank_batch([history], scene, [candidates], backend, k=5, settings=settings)[0]
            counters = counters.merge(result.counters)
            for r in result.recommendations[: n - done]:
                pairs.append(
                    {
                        "item": r.title,
                        "evidence": evidence_sentence(r, scene),
                        "shown": r.explanation,
                        "llm_kept": r.explanation != evidence_sentence(r, scene),
                    }
                )
                done += 1
    finally:
        backend.close()
    asked = counters.explanation_calls - counters.regenerated
    return {
        "backend": backend.name,
        "model": backend.model_name,
        "items": done,
        "seconds": round(time.perf_counter() - started, 1),
        "accepted": counters.llm_explanations,
        "templated": counters.template_explanations,
        "accepted_share": round(counters.llm_explanations / max(done, 1), 4),
        "asked": asked,
        "counters": counters.nonzero(),
        "pairs": pairs,
    }


if __name__ == "__main__":
    main()
