"""What ships per (scene, setting): the best on the valid split of the trained model, its blends with
item co-occurrence, co-occurrence alone and popularity alone.

A catalog whose texts do not transfer, or whose training users are too few for the model, must not
get a recommender worse than plain co-occurrence: the two baselines are candidates of the choice, so
what ships is never below them on valid (in the training code's NDCG@10: full ranking, history
excluded). Every candidate is one query-row mix of the same index (`TransferScorer._ship`), so
`recommend`, `score` and the evaluation's `shipped` method rank identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .scorer import TransferScorer
from .train import CaseLike, ndcg_at_10, target_ranks

BLEND_WEIGHTS = (0.3, 1.0, 3.0, 10.0)  # co-occurrence weight beside the model's own score
POPULARITY_TIEBREAK = 1e-6  # orders the items no history item co-occurs with, as the baseline does


def candidates() -> dict[str, dict[str, float]]:
    """name -> mix (weights of the model's score, of the recency-weighted co-occurrence, of popularity)."""
    mixes = {"model": {"model": 1.0, "cooccurrence": 0.0, "popularity": 0.0}}
    for g in BLEND_WEIGHTS:
        mixes[f"model+cooccurrence×{g:g}"] = {"model": 1.0, "cooccurrence": g, "popularity": 0.0}
    mixes["cooccurrence"] = {"model": 0.0, "cooccurrence": 1.0, "popularity": POPULARITY_TIEBREAK}
    mixes["popularity"] = {"model": 0.0, "cooccurrence": 0.0, "popularity": 1.0}
    return mixes


def choose_shipping(
    scorer: TransferScorer, valid_cases: Sequence[CaseLike], decay: float
) -> dict[str, Any]:
    """Per scene and setting, the candidate mix with the best valid NDCG@10 (ties: the earlier
    candidate, the model first). Returns the checkpoint's `shipped` record: the choice, the decay of
    the co-occurrence recency weights, and every candidate's valid NDCG@10."""
    mixes = candidates()
    choice: dict[str, dict[str, dict[str, Any]]] = {}
    tried: dict[str, dict[str, dict[str, float]]] = {}
    for scene in scorer.table.scenes:
        cases = [c for c in valid_cases if c.target_scene == scene]
        if not cases or not scorer.covers(scene):
            continue
        columns = {item_id: i for i, item_id in enumerate(scorer.item_ids(scene))}
        for setting in ("mixed", "cold"):
            values: dict[str, float] = {}
            for name, mix in mixes.items():
                probe = TransferScorer(
                    scorer.model, scorer.table, lexical_weight=scorer.lexical_weight,
                    shipped={"decay": decay, "choice": {scene: {"mixed": mix, "cold": mix}}},
                )
                probe._indexes = scorer._indexes  # the same index: only the query rows differ
                scores = probe.scores([c.history for c in cases], scene, cold=setting == "cold")
                values[name] = round(ndcg_at_10(target_ranks(scores, columns, cases)), 6)
            best = max(mixes, key=lambda n: values[n])  # first of equals: dict order
            choice.setdefault(scene, {})[setting] = {"method": best, **mixes[best]}
            tried.setdefault(scene, {})[setting] = values
    return {"decay": decay, "choice": choice, "valid_ndcg10": tried}


def describe(shipped: dict[str, Any]) -> list[str]:
    """One line per (scene, setting): what ships and its valid NDCG@10 beside the model's and the
    best baseline's."""
    lines = []
    for scene, by_setting in shipped.get("choice", {}).items():
        for setting, mix in by_setting.items():
            values = shipped.get("valid_ndcg10", {}).get(scene, {}).get(setting, {})
            baseline = max(values.get("cooccurrence", 0.0), values.get("popularity", 0.0))
            lines.append(
                f"{scene} {setting}: ships {mix['method']} (valid NDCG@10 {values.get(mix['method'], float('nan')):.4f}; "
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
