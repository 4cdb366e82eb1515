"""Explanations: faithfulness, specificity, variety (and, optionally, LLM rephrasing acceptance).

    nice -n 19 python benchmarks/bench_explanations.py --data-dir DIR --name NAME [--users 200] \
        [--llm-sample 20]

Cases are the data directory's test cases, one per user (the first of each user's two), else its
users; each is run in both settings of the data README: mixed (the whole history) and cold (the target
scene's items dropped). Which path ranked the lists (the mean query + BM25, or the trained transfer
model when the data directory has a checkpoint) is named in the result. Per shown item (k = 10):

- faithfulness: drop the cited (first) evidence item from the history, re-run the same retrieval, and
  see whether the item's rank drops (an item pushed beyond the candidate depth counts as rank 101); the
  same for the nearest-by-cosine history item, today's evidence, as the baseline in the same run;
  also over the items whose evidence claims a cause (a leave-one-out contributor, not the `nearest`
  fallback said as "close to"), with their share of the shown items and the baseline on the same items;
  an item that no single history item moves may be cited by a group that moves it together (`joint`):
  the whole group is removed, and those items are also reported on their own; an item that nothing in
  the history moves, not even all of it, cites no history item but the scene's prior (`prior`): it
  holds when the item ranks at least as high for an empty history (`prior_holds`), and
  `claims_faithful` is the share of shown items whose stated reason checks out either way;
- specificity: the sentence names a co-purchase count, shared attribute words or a peer count;
- variety: distinct sentence shapes (templates) per list of 10.

A quality run (nice -n 19, no lock); latency is measured by bench_explanation_latency.py under the lock.
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
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEPTH = 100


def new_ranks(rec, variants, scene: str, item_ids: list[str]) -> list[int]:
    """Per (history, item): the item's 1-based rank in the retrieval list for that history (DEPTH + 1
    when beyond DEPTH), all histories retrieved in one batch."""
    if not variants:
        return []
    found = rec.candidates(variants, scene, DEPTH, [set(h.item_ids) for h in variants])
    out = []
    for listed, item_id in zip(found, item_ids):
        out.append(next((n for n, c in enumerate(listed, start=1) if c.item_id == item_id), DEPTH + 1))
    return out


def summary(flags: list[bool], drops: list[int]) -> dict:
    """Share of items whose rank dropped, and the drop's median and mean (in ranks)."""
    return {
        "share_dropped": round(sum(flags) / max(len(flags), 1), 4),
        "items": len(flags),
        "median_rank_drop": statistics.median(drops) if drops else None,
        "mean_rank_drop": round(statistics.mean(drops), 2) if drops else None,
    }


@dataclass
class Accumulator:
    """What one setting has measured so far."""

    ours_flags: list[bool] = field(default_factory=list)
    ours_drops: list[int] = field(default_factory=list)
    base_flags: list[bool] = field(default_factory=list)
    base_drops: list[int] = field(default_factory=list)
    causal_flags: list[bool] = field(default_factory=list)  # items whose evidence claims a cause
    causal_drops: list[int] = field(default_factory=list)
    causal_base_flags: list[bool] = field(default_factory=list)  # the baseline on those same items
    causal_base_drops: list[int] = field(default_factory=list)
    same_cited: list[bool] = field(default_factory=list)
    specific: list[bool] = field(default_factory=list)
    variety: list[int] = field(default_factory=list)
    shapes: dict[str, int] = field(default_factory=dict)
    methods: set[str] = field(default_factory=set)
    shown: int = 0
    joint_flags: list[bool] = field(default_factory=list)  # items cited by a group (no single contributor)
    joint_sizes: list[int] = field(default_factory=list)
    # items said to be here on the scene's prior (no history item cited): does the claim hold, i.e. is
    # the item ranked at least as high with the history emptied
    prior_flags: list[bool] = field(default_factory=list)

    def report(self) -> dict:
        return {
            "lists": len(self.variety),
            "shown_items": self.shown,
            "methods": sorted(m for m in self.methods if m),
            "faithfulness": summary(self.ours_flags, self.ours_drops),
            "baseline_nearest_cosine_faithfulness": summary(self.base_flags, self.base_drops),
            # items whose first evidence is a contributor (not the `nearest` closeness fallback, said as
            # "close to", which claims no cause), and the baseline's evidence on exactly those items
            "causal_share": round(len(self.causal_flags) / max(self.shown, 1), 4),
            "faithfulness_causal": summary(self.causal_flags, self.causal_drops),
            "baseline_on_causal_items": summary(self.causal_base_flags, self.causal_base_drops),
            # of those, the ones cited as a group whose removal together moves them (all of it removed)
            "joint_share": round(len(self.joint_flags) / max(self.shown, 1), 4),
            "joint_faithfulness": round(sum(self.joint_flags) / max(len(self.joint_flags), 1), 4),
            "joint_mean_group_size": (
                round(statistics.mean(self.joint_sizes), 2) if self.joint_sizes else None
            ),
            # items that cite no history item because the scene's prior holds them (`prior`), and the
            # share whose rank with an empty history is no worse (what that sentence claims)
            "prior_share": round(len(self.prior_flags) / max(self.shown, 1), 4),
            "prior_holds": round(sum(self.prior_flags) / max(len(self.prior_flags), 1), 4),
            # every shown item whose stated reason checks out: a cited history item (or group) whose
            # removal drops it, or the prior, with which it ranks as high without any history
            "claims_faithful": round(
                (sum(self.ours_flags) + sum(self.prior_flags)) / max(self.shown, 1), 4
            ),
            "cited_same_as_baseline": round(sum(self.same_cited) / max(len(self.same_cited), 1), 4),
            "specificity": round(sum(self.specific) / max(len(self.specific), 1), 4),
            "variety_mean_shapes_per_list": round(statistics.mean(self.variety), 2) if self.variety else None,
            "shapes": dict(sorted(self.shapes.items(), key=lambda kv: -kv[1])),
        }


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

    started = time.perf_counter()
    rec = Recommender.open(args.data_dir)
    cases = list({c.user_id: c for c in reversed(rec.items.cases(args.split))}.values())[::-1][: args.users]
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
    transfer = rec.transfer
    out: dict = {
        "machine": machine(),
        "data_dir": str(args.data_dir),
        "split": args.split,
        "cases": len(histories),
        "users": len({h.user_id for _, _, h in histories}),
        "path": "transfer model" if transfer is not None else "mean query + BM25 (no transfer checkpoint)",
        "k": 10,
        "rescoring": f"the same retrieval rerun without the cited item, depth {DEPTH} (beyond: rank {DEPTH + 1})",
        "settings": {},
    }
    samples: list[dict] = []
    acc = {setting: Accumulator() for setting in ("mixed", "cold")}
    for done, (case_id, scene, full_history) in enumerate(histories, start=1):
        for setting, a in acc.items():  # both settings per case, so a partial run still has both
            history = full_history
            if setting == "cold":
                history = UserHistory(user_id=history.user_id, entries=history.outside_scene(scene))
            if not history.entries:
                continue
            recs = rec.recommend_for_history(history, scene, 10)
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
            shapes = set()
            ours_v, ours_at, base_v, base_at = [], [], [], []
            causal: set[int] = set()
            joint: set[int] = set()
            prior_at: list[tuple[str, int]] = []
            for rank, (r, b) in enumerate(zip(recs, baseline), start=1):
                a.shown += 1
                a.methods.add(r.method)
                shape = sentence_shape(r)
                shapes.add(shape)
                a.shapes[shape] = a.shapes.get(shape, 0) + 1
                a.specific.append(is_specific(r))
                if r.evidence:
                    # a group cited together (`joint`) is removed together: that is what it claims
                    cited = [e.item_id for e in r.evidence if e.joint] or [r.evidence[0].item_id]
                    ours_v.append(without(history, *cited))
                    ours_at.append((r.item_id, rank))
                    if r.evidence[0].kind != "nearest":
                        causal.add(rank)
                    if r.evidence[0].joint:
                        joint.add(rank)
                        a.joint_sizes.append(len(cited))
                elif r.prior:
                    prior_at.append((r.item_id, rank))
                if b.evidence:
                    base_v.append(without(history, b.evidence[0].item_id))
                    base_at.append((b.item_id, rank))
                if r.evidence and b.evidence:
                    a.same_cited.append(r.evidence[0].item_id == b.evidence[0].item_id)
                if len(samples) < 12 and setting == "mixed" and rank <= 2:
                    samples.append(
                        {
                            "case": case_id,
                            "item": r.title,
                            "sentence": evidence_sentence(r),
                            "baseline_evidence": b.evidence[0].title if b.evidence else None,
                        }
                    )
            for variants, at, flags, drops, causal_flags, causal_drops in (
                (ours_v, ours_at, a.ours_flags, a.ours_drops, a.causal_flags, a.causal_drops),
                (base_v, base_at, a.base_flags, a.base_drops, a.causal_base_flags, a.causal_base_drops),
            ):
                for (item_id, rank), new in zip(at, new_ranks(rec, variants, scene, [i for i, _ in at])):
                    flags.append(new > rank)
                    drops.append(new - rank)
                    if rank in causal:
                        causal_flags.append(new > rank)
                        causal_drops.append(new - rank)
                    if rank in joint and flags is a.ours_flags:
                        a.joint_flags.append(new > rank)
            empty = UserHistory(user_id=history.user_id, entries=[])
            ranks = new_ranks(rec, [empty] * len(prior_at), scene, [i for i, _ in prior_at])
            a.prior_flags += [new <= rank for (_, rank), new in zip(prior_at, ranks)]
            a.variety.append(len(shapes))
        if done % 5 == 0 or done == len(histories):
            out["cases_done"] = done
            out["settings"] = {setting: a.report() for setting, a in acc.items()}
            out["samples"] = samples
            out["seconds"] = round(time.perf_counter() - started, 1)
            write(out, args.name)
            print(done, json.dumps({k: v["faithfulness"] for k, v in out["settings"].items()}), flush=True)
    if args.llm_sample:
        out["llm"] = llm_sample(rec, histories, args.llm_sample)
    out["seconds"] = round(time.perf_counter() - started, 1)
    print("wrote", write(out, args.name))


def write(out: dict, name: str) -> Path:
    """The result so far (rewritten every 5 cases, so a stopped run keeps what it measured)."""
    results = HERE / "results" / "explanations"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    return path


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
                        "rejected": result.rejected.get(r.item_id),  # why not used, and the sentence
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
