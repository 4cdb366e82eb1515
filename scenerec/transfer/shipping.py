"""What ships per (scene, setting): the trained model, its blends with item co-occurrence and with
item transitions (what followed what), a baseline alone (co-occurrence, transitions, popularity),
chosen on the valid split.

A catalog whose texts do not transfer, or whose training users are too few for the model, must not
get a recommender worse than plain co-occurrence: the baselines are candidates of the choice. Where a
catalog is sequential (what a user buys next follows from what they bought last), the transition
memory adds what the order-free model and co-occurrence miss (measured on beauty-sports-toys, mixed:
valid 0.070 -> 0.083 in toys); where it is not (Arts–Office), the choice gives it little or no weight.
A cell of one scene and setting holds a few hundred valid cases and a handful of hits, so its argmax
fits noise (measured: cold beauty and toys picked popularity on valid, far below co-occurrence on
test). So each setting first gets one choice from its valid cases pooled over the scenes, and a
scene moves off it only to a candidate whose paired bootstrap interval over that scene's valid cases
lies above the pooled choice. Every candidate is one query-row mix of the same index
(`TransferScorer._ship`), so `recommend`, `score` and the evaluation's `shipped` method rank
identically; a mix's scores are linear in its weights, so each cell scores its three parts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .scorer import TransferScorer
from .train import CaseLike, target_ranks

BLEND_WEIGHTS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # co-occurrence weight beside the model's own score
POPULARITY_TIEBREAK = 1e-6  # orders the items no history item co-occurs with, as the baseline does
PARTS = ("model", "cooccurrence", "transitions", "popularity")
RESAMPLES = 1000
CONFIDENCE = 0.95


def candidates() -> dict[str, dict[str, float]]:
    """name -> mix (weights of the model's score, of the recency-weighted co-occurrence and
    transitions, of popularity), in the order of preference among equals: the model first."""

    def mix(
        model: float = 0.0, cooccurrence: float = 0.0, transitions: float = 0.0, popularity: float = 0.0
    ) -> dict[str, float]:
        return {"model": model, "cooccurrence": cooccurrence, "transitions": transitions, "popularity": popularity}

    mixes = {"model": mix(model=1.0)}
    for g in BLEND_WEIGHTS:
        mixes[f"model+cooccurrence×{g:g}"] = mix(model=1.0, cooccurrence=g)
    for g in BLEND_WEIGHTS:
        mixes[f"model+transitions×{g:g}"] = mix(model=1.0, transitions=g)
    for g in BLEND_WEIGHTS:
        mixes[f"model+(cooccurrence+transitions)×{g:g}"] = mix(model=1.0, cooccurrence=g, transitions=g)
    mixes["cooccurrence"] = mix(cooccurrence=1.0, popularity=POPULARITY_TIEBREAK)
    mixes["transitions"] = mix(transitions=1.0, popularity=POPULARITY_TIEBREAK)
    mixes["cooccurrence+transitions"] = mix(cooccurrence=1.0, transitions=1.0, popularity=POPULARITY_TIEBREAK)
    mixes["popularity"] = mix(popularity=1.0)
    return mixes


def case_gains(ranks: np.ndarray) -> np.ndarray:
    """Per-case NDCG@10 of 1-based target ranks (inf = a miss)."""
    return np.where(ranks <= 10, 1.0 / np.log2(np.minimum(ranks, 1e9) + 1.0), 0.0)


def paired_lower(better: np.ndarray, worse: np.ndarray, seed: int = 0) -> float:
    """Lower end of the bootstrap interval of mean(better - worse) over paired cases."""
    diff = np.asarray(better, dtype=np.float64) - np.asarray(worse, dtype=np.float64)
    if len(diff) == 0 or not diff.any():
        return 0.0
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(RESAMPLES, len(diff)))].mean(axis=1)
    return float(np.quantile(means, (1.0 - CONFIDENCE) / 2))


def cell_gains(
    scorer: TransferScorer, cases: Sequence[CaseLike], scene: str, cold: bool, decay: float
) -> dict[str, np.ndarray]:
    """Per candidate, the per-case NDCG@10 of `cases` in one (scene, setting) cell."""
    columns = {item_id: i for i, item_id in enumerate(scorer.item_ids(scene))}
    histories = [c.history for c in cases]
    parts = {}
    for part in PARTS:  # one probe per part; a mix is their weighted sum
        unit = {name: float(name == part) for name in PARTS}
        probe = TransferScorer(
            scorer.model, scorer.table, lexical_weight=scorer.lexical_weight,
            shipped={"decay": decay, "choice": {scene: {"mixed": unit, "cold": unit}}},
        )
        probe._indexes = scorer._indexes  # the same index: only the query rows differ
        parts[part] = probe.scores(histories, scene, cold=cold)
    return {
        name: case_gains(target_ranks(sum(mix[p] * parts[p] for p in PARTS), columns, cases))
        for name, mix in candidates().items()
    }


def choose_shipping(
    scorer: TransferScorer, valid_cases: Sequence[CaseLike], decay: float
) -> dict[str, Any]:
    """Per setting the candidate best on the valid cases of every scene pooled; per scene, another
    candidate only where its paired interval over the scene's cases lies above the pooled one.
    Returns the checkpoint's `shipped` record: the choice, the decay of the co-occurrence recency
    weights, and every candidate's valid NDCG@10 per cell and pooled."""
    gains: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # setting -> scene -> name -> gains
    for scene in scorer.table.scenes:
        cases = [c for c in valid_cases if c.target_scene == scene]
        if not cases or not scorer.covers(scene):
            continue
        for setting in ("mixed", "cold"):
            gains.setdefault(setting, {})[scene] = cell_gains(scorer, cases, scene, setting == "cold", decay)
    return {"decay": decay, **choose_from_gains(gains)}


def choose_from_gains(gains: dict[str, dict[str, dict[str, np.ndarray]]]) -> dict[str, Any]:
    """The choice rule on per-case valid gains (setting -> scene -> candidate -> gains): the pooled
    best per setting; a scene's own best only where its paired lower bound over the pooled one is > 0."""
    mixes = candidates()
    choice: dict[str, dict[str, dict[str, Any]]] = {}
    tried: dict[str, dict[str, dict[str, float]]] = {}
    pooled_record: dict[str, dict[str, Any]] = {}
    for setting, by_scene in gains.items():
        pooled = {n: np.concatenate([by_scene[s][n] for s in by_scene]) for n in mixes}
        default = max(mixes, key=lambda n: pooled[n].mean())  # first of equals: dict order
        pooled_record[setting] = {
            "method": default, "valid_ndcg10": {n: round(float(v.mean()), 6) for n, v in pooled.items()}
        }
        for scene, values in by_scene.items():
            best = max(mixes, key=lambda n: values[n].mean())
            lower = paired_lower(values[best], values[default]) if best != default else 0.0
            chosen, why = (best, "scene") if lower > 0 else (default, "pooled")
            choice.setdefault(scene, {})[setting] = {"method": chosen, "by": why, **mixes[chosen]}
            tried.setdefault(scene, {})[setting] = {n: round(float(v.mean()), 6) for n, v in values.items()}
    return {"choice": choice, "valid_ndcg10": tried, "pooled": pooled_record}


def describe(shipped: dict[str, Any]) -> list[str]:
    """One line per (scene, setting): what ships and its valid NDCG@10 beside the model's and the
    best baseline's."""
    lines = []
    for scene, by_setting in shipped.get("choice", {}).items():
        for setting, mix in by_setting.items():
            values = shipped.get("valid_ndcg10", {}).get(scene, {}).get(setting, {})
            baseline = max(values.get(n, 0.0) for n in ("cooccurrence", "transitions", "popularity"))
            lines.append(
                f"{scene} {setting}: ships {mix['method']} ({mix.get('by', 'scene')} choice; valid NDCG@10 {values.get(mix['method'], float('nan')):.4f}; "
                f"model {values.get('model', float('nan')):.4f}, best baseline {baseline:.4f})"
            )
    return lines


def shipped_of(meta: dict) -> dict[str, Any] | None:
    """The shipped record a checkpoint's metadata carries (None: ship the model as it is)."""
    value = meta.get("metrics", {}).get("shipped")
    return value if isinstance(value, dict) and value.get("choice") else None


def mean_valid(shipped: dict[str, Any]) -> float:
    """Mean over the cells of the shipped mix's valid NDCG@10 (for logs)."""
    values = [
        shipped["valid_ndcg10"][scene][setting][mix["method"]]
        for scene, by_setting in shipped.get("choice", {}).items()
        for setting, mix in by_setting.items()
    ]
    return float(np.mean(values)) if values else 0.0
