"""`why`: the full breakdown of one recommended item — which method ranked it, every history item that
raised its score with its share (a bar each), the evidence kinds, the readable and the raw score.

`recommend --why ITEM`, the agent's `why` (the TUI's `w`) and the benchmark call `breakdown`; the
contributors come from the same leave-one-out through the list's scorer as the cards' evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ..errors import ScenerecError
from ..models import Evidence, Recommendation, UserHistory
from ..rerank.rephrase import evidence_sentence, sentence_shape
from .attribution import joint_contributors, leave_one_out
from .evidence import typed_evidence
from .scores import top_share

if TYPE_CHECKING:
    from .recommender import Recommender

BAR_WIDTH = 20
WHY_DEPTH = 50  # an item shown anywhere in the top 50 gets its rank and readable score


class Breakdown(BaseModel):
    """Why one item was recommended to one history."""

    item_id: str
    title: str
    scene: str
    method: str
    rank: int | None = None  # in the list `recommend` returns (None: beyond WHY_DEPTH)
    score: float | None = None  # the readable score (percentile in the scene)
    raw_score: float
    contributors: list[Evidence] = Field(default_factory=list)  # every positive one, largest first
    lowering: int = 0  # history items whose removal would raise the score
    prior: bool = False  # nothing in the history moves it, not even all of it: the scene's prior does
    buyers: int | None = None  # with `prior`: training users who bought it
    peers: tuple[int, int] | None = None
    sentence: str
    shape: str


def breakdown(recommender: Recommender, history: UserHistory, scene: str, item_id: str) -> Breakdown:
    """The breakdown of `item_id` (an item of `scene`) for `history`."""
    recommender.check_scene(scene)
    item = recommender.items.get_items([item_id]).get(item_id)
    if item is None or item.scene != scene:
        raise ScenerecError(f"no item '{item_id}' in scene '{scene}'")
    listed = recommender.recommend_for_history(
        history, scene, min(WHY_DEPTH, recommender.settings.retrieval.max_k)
    )
    rank = next((n for n, r in enumerate(listed, start=1) if r.item_id == item_id), None)
    shown: Recommendation | None = listed[rank - 1] if rank else None
    if not history.entries:
        method = "popularity"
        sentence = evidence_sentence(shown) if shown else f"Not among the popular items of {scene}."
        return Breakdown(
            item_id=item_id,
            title=item.title,
            scene=scene,
            method=method,
            rank=rank,
            score=shown.score if shown else None,
            raw_score=shown.raw_score or 0.0 if shown else 0.0,
            sentence=sentence,
            shape="popular",
        )
    scorer = recommender.list_scorer(scene)
    attribution = leave_one_out(scorer, history, [item_id])[0]
    joint_contributors(scorer, history, [attribution])
    positive, joint = attribution.cited(len(attribution.deltas))
    items = recommender.items.get_items([h for h, _, _ in positive])
    vectors = recommender.item_vectors([item_id] + [h for h, _, _ in positive])
    cosines = vectors[1:] @ vectors[0] if positive else []
    ids = [h for h, _, _ in positive]
    counts = recommender.interactions().co_purchases(ids, [item_id])[:, 0] if ids else []
    contributors = typed_evidence(
        item,
        [(items[h], share, delta, float(c)) for (h, share, delta), c in zip(positive, cosines)],
        {h: int(n) for h, n in zip(ids, counts)},
        joint=joint,
    )
    rec = shown or Recommendation(
        item_id=item_id,
        title=item.title,
        scene=scene,
        score=0.0,
        raw_score=attribution.score,
        method=scorer.method,
        evidence=contributors[:2],
    )
    bought, similar = recommender.interactions().peers(history.user_id, history.item_ids, [item_id])
    peers = (int(bought[0]), similar) if similar else None
    prior = not contributors and attribution.held_by_prior
    buyers = int(recommender.interactions().buyers([item_id])[0]) if prior else None
    rec = rec.model_copy(
        update={
            "evidence": contributors[: max(2, len(rec.evidence))] if not prior else [],
            "peers": peers,
            "prior": prior,
            "buyers": buyers,
        }
    )
    return Breakdown(
        item_id=item_id,
        title=item.title,
        scene=scene,
        method=scorer.method,
        rank=rank,
        score=shown.score if shown else None,
        raw_score=attribution.score,
        contributors=contributors,
        lowering=sum(1 for d in attribution.deltas.values() if d < 0),
        peers=peers,
        prior=prior,
        buyers=buyers,
        sentence=evidence_sentence(rec),
        shape=sentence_shape(rec),
    )


def bar(share: float, width: int = BAR_WIDTH) -> str:
    """A share in [0, 1] as a bar of `width` cells (eighths for the last one)."""
    cells = max(0.0, min(1.0, share)) * width
    full, part = int(cells), int((cells - int(cells)) * 8)
    return ("█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")).ljust(width)


KIND_WORDS = {
    "co_purchase": "bought together",
    "shared_attributes": "shared words",
    "text_nearness": "close description",
    "model": "model only",
    "nearest": "nearest text",
}


def breakdown_lines(b: Breakdown, title_chars: int = 48) -> list[str]:
    """The breakdown as text: a header, one bar per contributing history item, the sentence."""
    where = (
        f"#{b.rank}, {top_share(b.score)} of {b.scene}"
        if b.rank and b.score is not None
        else "not in the top list"
    )
    lines = [f"«{b.title}» — ranked by {b.method} ({where}; raw score {b.raw_score:.6g})"]
    if b.prior:
        bought = f", {b.buyers} {'shopper' if b.buyers == 1 else 'shoppers'} bought it" if b.buyers else ""
        lines.append(
            f"No history item moves it, nor does your whole history: it is here on its popularity in "
            f"{b.scene} (the scene's prior{bought})."
        )
    elif not b.contributors:
        lines.append(
            "No history item raised its score." if b.method != "popularity" else "Popular in the scene."
        )
    elif b.contributors[0].joint:
        lines.append(f"No one history item moves it; these {len(b.contributors)} together do:")
    for e in b.contributors[:10]:
        detail = KIND_WORDS.get(e.kind, e.kind)
        if e.kind == "co_purchase":
            detail += f": {e.count} shoppers" + (f", {e.after} bought it later" if e.after else "")
        elif e.words:
            detail += ": " + ", ".join(e.words)
        title = e.title if len(e.title) <= title_chars else e.title[: title_chars - 1] + "…"
        lines.append(
            f"  {bar(e.share or 0.0)} {100 * (e.share or 0):4.0f}%  «{title}» ({e.scene}) — {detail}"
        )
    if len(b.contributors) > 10:
        lines.append(f"  … and {len(b.contributors) - 10} more with smaller shares")
    if b.lowering:
        lines.append(f"  {b.lowering} history item(s) pulled it down a little.")
    if b.peers is not None:
        lines.append(f"  Bought by {b.peers[0]} of {b.peers[1]} shoppers who share a history item with you.")
    lines.append(b.sentence)
    return lines
