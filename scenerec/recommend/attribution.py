"""Attribution: which history items made the ranking put an item where it is.

Whatever ranks the list implements `ListScorer`: "score these candidate ids for these histories", with a
score whose order is the list's order. `leave_one_out` scores the full history and every history minus
one distinct item in one batch; an item's contribution is the score it loses without it. That is exact
for any scorer (no gradient, no linearisation) and cheap: one batch of at most `ATTRIBUTION_ITEMS` + 1
histories per list.

Implementations: `FusedScorer` is the list `recommend` ships — the dense list of a query (the trained
transfer model's, or the mean query's) fused by reciprocal rank with the BM25 list of the recent titles;
with a BM25 weight of 0 it is the dense list's reciprocal rank alone (the list's own score), so a
contribution is always a move in the list, never a raw score that fell for every item alike. `CooccurrenceScorer` scores by co-purchases
with the history. Evidence is then typed (`evidence.typed_evidence`) and the score made readable
(`scores.percentile`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..models import Evidence, Item, Recommendation, UserHistory
from .evidence import MIN_CO_PURCHASE, Interactions, typed_evidence
from .retrieval import Candidate
from .scores import percentile

TIE = 1e-7  # tanh(dense score) x TIE < 1e-7, the RRF gap between ranks 100 and 101 is 3.8e-5
# a fused delta above this moved the item in one of the lists; below it, only TIE's tie-break moved, and
# a history item whose removal moves no rank is not said to have put the item where it is
MOVES_RANK = 10 * TIE
MIN_SHARE = 0.01  # a contributor below 1% of the lift is not named (nor drawn as a bar)
ATTRIBUTION_ITEMS = 30  # most recent distinct history items tried; older ones weigh ~0.9^30 in the mean
JOINT_ITEMS = 5  # most history items cited together when no single one moves it (chosen on AO valid, cold: 3 -> 5 took faithful 87.2% -> 94.1%)


class ListScorer(Protocol):
    """What ranked a list, as a function of the history."""

    method: str
    min_delta: float  # a contribution must exceed this to be cited (0: any rise of the score)

    @property
    def has_prior(self) -> bool:
        """Whether an empty history has a ranking of its own (the transfer model's prior). Only then is
        "without the whole history it ranks lower" a claim that can fail."""
        ...

    def scores(self, histories: Sequence[UserHistory], item_ids: Sequence[str]) -> np.ndarray:
        """(len(histories), len(item_ids)) ranking scores; higher ranks first."""
        ...


def _ranks_within(
    scores: np.ndarray, columns: np.ndarray, depth: int, floor: float = -np.inf
) -> np.ndarray:
    """1-based ranks of some columns in every row of a (rows, n) score matrix, ties to the lower
    position (= lower id), exact up to `depth`; `depth + 1` for a column ranked beyond it, for a
    non-finite value, and for a value not above `floor` (a BM25 score of 0 is no hit).

    Only the ranks within the depth move a fused score, so each row is cut at its depth-th largest
    value (one partition for all rows) and a column is compared with the few values above the cut,
    not with the whole scene."""
    scores = np.atleast_2d(scores)
    rows, n = scores.shape
    columns = np.asarray(columns, dtype=np.int64)
    values = scores[:, columns]  # (rows, c)
    out = np.full(values.shape, depth + 1, dtype=np.int64)
    if rows == 0 or len(columns) == 0 or depth < 1:
        return out
    cut = np.partition(scores, n - depth, axis=1)[:, n - depth] if n > depth else np.full(rows, -np.inf)
    for r in range(rows):
        need = np.flatnonzero((values[r] >= cut[r]) & (values[r] > floor) & np.isfinite(values[r]))
        if not len(need):
            continue
        # every value above one at or over the cut is itself over the cut (or over the floor)
        top = np.flatnonzero(scores[r] >= cut[r]) if cut[r] > floor else np.flatnonzero(scores[r] > floor)
        s, v, c = scores[r, top][None, :], values[r, need][:, None], columns[need][:, None]
        rank = (s > v).sum(axis=1) + ((s == v) & (top[None, :] < c)).sum(axis=1) + 1
        out[r, need] = np.minimum(rank, depth + 1)
    return out


@dataclass
class FusedScorer:
    """The shipped list: reciprocal-rank fusion of a dense list and a BM25 list (the dense list's reciprocal
    rank alone when the BM25 weight is 0), computed exactly for any history, ranks over the whole scene.

    `scores` is a few matrix operations for the whole batch: one dense product for every history, one
    BM25 product for the distinct BM25 queries, one partition per score matrix for the ranks of every
    candidate in every row. Build one per scene and reuse it (its id maps are made once)."""

    method: str
    queries: Callable[[Sequence[UserHistory]], Sequence[np.ndarray | None]]
    full_scores: Callable[[np.ndarray], np.ndarray]  # (n, width) query rows -> (n, n_scene_items)
    dense_ids: Sequence[str]  # columns of full_scores, sorted by id
    lexical: object | None  # a BM25Index (`scores_many(queries)`, `ids`), or None
    lexical_query: Callable[[UserHistory], str]
    lexical_weight: float
    rrf_k: int
    dense_depth: int
    lexical_depth: int
    min_delta: float = MOVES_RANK

    def __post_init__(self) -> None:
        self._prior: bool | None = None
        self._column = {item_id: c for c, item_id in enumerate(self.dense_ids)}
        if self.lexical is not None:
            ids = self.lexical.ids  # type: ignore[attr-defined]
            self._lex_order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
            self._lex_pos = {ids[p]: q for q, p in enumerate(self._lex_order.tolist())}

    @property
    def has_prior(self) -> bool:
        if self._prior is None:
            self._prior = self.queries([UserHistory(user_id="", entries=[])])[0] is not None
        return self._prior

    def _dense(self, histories: Sequence[UserHistory]) -> tuple[np.ndarray, np.ndarray]:
        """Full float64 score rows (the history's own items -inf) of the histories that have a query,
        and which histories those are."""
        queries = list(self.queries(histories))
        rows = np.array([r for r, q in enumerate(queries) if q is not None], dtype=np.int64)
        if not len(rows):
            return np.zeros((0, len(self.dense_ids))), rows
        full = np.array(self.full_scores(np.stack([queries[r] for r in rows]).astype(np.float32)), dtype=np.float64)
        for at, r in enumerate(rows.tolist()):
            own = [self._column[i] for i in histories[r].item_ids if i in self._column]
            full[at, own] = -np.inf
        return full, rows

    def scores(self, histories: Sequence[UserHistory], item_ids: Sequence[str]) -> np.ndarray:
        dense, rows = self._dense(histories)
        cols = np.array([self._column.get(i, -1) for i in item_ids], dtype=np.int64)
        at = np.flatnonzero(cols >= 0)
        known = cols[at]
        # the dense part is rank-based even without BM25 (what retrieval's list score is): a raw score
        # that falls without a history item may fall for every item alike and move no rank
        out = np.zeros((len(histories), len(item_ids)))
        if len(rows) and len(at):
            ranks = _ranks_within(dense, known, self.dense_depth)
            values = dense[:, known]
            part = np.where(ranks <= self.dense_depth, 1.0 / (self.rrf_k + ranks), 0.0)
            # the dense score breaks ties between equal ranks (retrieval's order); TIE keeps it far below
            # the gap between two adjacent ranks' RRF scores, and `min_delta` keeps a removal that only
            # moved this tie-break from being cited
            part += TIE * np.where(np.isfinite(values), np.tanh(values), 0.0)
            out[np.ix_(rows, at)] = part
        if self.lexical is not None and self.lexical_weight > 0:
            self._add_lexical(out, histories, item_ids)
        return out

    def _add_lexical(self, out: np.ndarray, histories: Sequence[UserHistory], item_ids: Sequence[str]) -> None:
        """Add the BM25 list's weight / (rrf_k + rank) for the items within its depth, per history."""
        positions = np.array([self._lex_pos.get(i, -1) for i in item_ids], dtype=np.int64)
        at = np.flatnonzero(positions >= 0)
        if not len(at) or not histories:
            return
        queries = [self.lexical_query(h) for h in histories]
        distinct = list(dict.fromkeys(q for q in queries if q.strip()))
        base = np.zeros((len(distinct), len(self._lex_order)))
        if distinct:  # in id order, so ties go to the lower id
            base = self.lexical.scores_many(distinct)[:, self._lex_order]  # type: ignore[union-attr]
        row_of = {q: r for r, q in enumerate(distinct)}
        rows = np.zeros((len(histories), len(self._lex_order)))
        for r, (history, query) in enumerate(zip(histories, queries)):
            if query in row_of:
                rows[r] = base[row_of[query]]
                # each history's own items are dropped, as retrieval for that history excludes them
                rows[r, [self._lex_pos[i] for i in history.item_ids if i in self._lex_pos]] = 0.0
        values = rows[:, positions[at]]
        ranks = _ranks_within(rows, positions[at], self.lexical_depth, floor=0.0)
        hit = (values > 0) & (ranks <= self.lexical_depth)
        out[:, at] += np.where(hit, self.lexical_weight / (self.rrf_k + ranks), 0.0)


@dataclass
class CooccurrenceScorer:
    """Score = co-purchases of the item with every distinct history item (item-item co-occurrence)."""

    interactions: Interactions
    method: str = "co-occurrence"
    min_delta: float = 0.0
    has_prior: bool = False  # an empty history co-occurs with nothing

    def scores(self, histories: Sequence[UserHistory], item_ids: Sequence[str]) -> np.ndarray:
        return np.stack(
            [
                self.interactions.co_purchases(list(dict.fromkeys(h.item_ids)), item_ids).sum(axis=0)
                if h.entries
                else np.zeros(len(item_ids))
                for h in histories
            ]
        ).astype(np.float64)


@dataclass
class Attribution:
    """One item's score and what each history item (by id) added to it."""

    item_id: str
    score: float
    deltas: dict[str, float]  # history item id -> score - score without it
    min_delta: float = 0.0  # the scorer's: smaller rises are not a contribution
    # when no single item is a contributor: the fewest strongest items whose removal together moves
    # the item, and the score lost without them (see `joint_contributors`)
    joint: tuple[tuple[str, ...], float] | None = None
    # the score for an empty history (the scorer's no-history list), None where it was not scored
    without_history: float | None = None

    @property
    def held_by_prior(self) -> bool:
        """No history item moves it, alone or in a group, and removing the whole history does not lower
        its score either: what put it here is the scene's prior, not anything the user did."""
        if self.without_history is None or self.joint is not None or self.contributors(1):
            return False
        return self.without_history >= self.score - self.min_delta

    def contributors(self, n: int) -> list[tuple[str, float, float]]:
        """Up to n (history item id, share, delta) with a delta above `min_delta`, largest first."""
        rises = ((d, i) for i, d in self.deltas.items() if d > self.min_delta)
        positive = sorted(rises, key=lambda x: (-x[0], x[1]))
        total = sum(d for d, _ in positive)
        return [(i, d / total, d) for d, i in positive if d / total >= MIN_SHARE][:n]

    def cited(self, n: int) -> tuple[list[tuple[str, float, float]], bool]:
        """What to cite: up to n contributors, else the whole `joint` group (equal shares, the group's
        delta), and whether it is that group."""
        single = self.contributors(n)
        if single or self.joint is None:
            return single, False
        group, delta = self.joint
        return [(h, 1.0 / len(group), delta) for h in group], True


def without(history: UserHistory, *item_ids: str) -> UserHistory:
    """The history minus every occurrence of these items."""
    drop = set(item_ids)
    return UserHistory(user_id=history.user_id, entries=[e for e in history.entries if e.item_id not in drop])


def leave_one_out(
    scorer: ListScorer, history: UserHistory, item_ids: Sequence[str], max_items: int = ATTRIBUTION_ITEMS
) -> list[Attribution]:
    """Each item's score for the full history, its loss without each of the most recent distinct
    history items, and its score for an empty history (one batch through the scorer)."""
    tried = list(dict.fromkeys(reversed(history.item_ids)))[:max_items]
    empty = UserHistory(user_id=history.user_id, entries=[])
    scores = scorer.scores([history] + [without(history, i) for i in tried] + [empty], item_ids)
    return [
        Attribution(
            item_id,
            float(scores[0, c]),
            {h: float(scores[0, c] - scores[1 + r, c]) for r, h in enumerate(tried)},
            scorer.min_delta,
            without_history=float(scores[-1, c]),
        )
        for c, item_id in enumerate(item_ids)
    ]


def joint_contributors(
    scorer: ListScorer,
    history: UserHistory,
    attributions: Sequence[Attribution],
    max_items: int = JOINT_ITEMS,
) -> None:
    """Set `joint` on the attributions that have no single contributor: the smallest group of their
    strongest history items (those whose removal lowers the score at all, by their own delta, then
    recency; 2 up to `max_items`) whose removal together lowers the score by more than `min_delta`; and
    where none does, a history of at most `max_items` distinct items as a whole, when the scorer has a
    prior (removing the whole history is then a test that can fail; without a prior every item falls
    and the claim would say nothing). A longer history is never cited whole. Items that share a group
    share its rescoring; every rescoring is in one batch, and the whole history needs none (it is the
    empty history `leave_one_out` scored). An item no such group moves keeps `joint` None."""
    distinct = list(dict.fromkeys(reversed(history.item_ids)))  # most recent first
    whole = 2 <= len(distinct) <= max_items and scorer.has_prior
    most = min(max_items, len(distinct) - 1)
    need: list[tuple[Attribution, list[str]]] = []
    for a in attributions:
        if not a.contributors(1):
            lowering = [h for h in a.deltas if a.deltas[h] > 0]
            strongest = sorted(lowering, key=lambda h: -a.deltas[h])[:most]  # stable: ties stay recent first
            if len(strongest) >= 2 or whole:
                need.append((a, strongest))
    groups: dict[tuple[str, ...], int] = {}
    for _, strongest in need:
        for k in range(2, len(strongest) + 1):
            groups.setdefault(tuple(strongest[:k]), len(groups))
    ids = [a.item_id for a, _ in need]
    scores = scorer.scores([without(history, *g) for g in groups], ids) if groups else None
    for c, (a, strongest) in enumerate(need):
        for k in range(2, len(strongest) + 1):
            group = tuple(strongest[:k])
            delta = a.score - float(scores[groups[group], c])  # type: ignore[index]
            if delta > a.min_delta:
                a.joint = (group, delta)
                break
        else:
            # the history without all of its items is the empty one `leave_one_out` already scored
            if whole and a.without_history is not None and a.score - a.without_history > a.min_delta:
                said = tuple(sorted(distinct, key=lambda h: -a.deltas.get(h, 0.0)))  # strongest first
                a.joint = (said, a.score - a.without_history)


def attributed_recommendations(
    candidates: Sequence[Candidate],
    history: UserHistory,
    scene: str,
    *,
    scorer: ListScorer,
    items: Mapping[str, Item],
    cosine: np.ndarray,
    interactions: Interactions | None,
    n_scene_items: int,
    n_evidence: int,
    first_rank: int = 1,
) -> list[Recommendation]:
    """Candidates (best first) as recommendations whose evidence is the history items that raised their
    ranking score, typed; `cosine` is (candidates, history entries); `score` is the percentile."""
    if not candidates:
        return []
    ids = [c.item_id for c in candidates]
    attributions = leave_one_out(scorer, history, ids)
    joint_contributors(scorer, history, attributions)
    entry_of = {e.item_id: j for j, e in enumerate(history.entries)}  # last occurrence
    hist_ids = list(dict.fromkeys(history.item_ids))
    counts = interactions.co_purchases(hist_ids, ids) if interactions is not None else None
    peers, n_peers = (
        interactions.peers(history.user_id, hist_ids, ids) if interactions is not None else (None, 0)
    )
    buyers = interactions.buyers(ids) if interactions is not None else None
    out = []
    for row, (candidate, attribution) in enumerate(zip(candidates, attributions)):
        item = items[candidate.item_id]
        contributors, titles = [], set()
        cited, joint = attribution.cited(n_evidence + 2)
        limit = len(cited) if joint else n_evidence  # a group is said whole: together, not one by one
        for h, share, delta in cited:
            if h in items and items[h].title not in titles and len(contributors) < limit:
                titles.add(items[h].title)  # two listings of one product are said once
                contributors.append((items[h], share, delta, float(cosine[row, entry_of[h]])))
        pair_counts = (
            {c[0].item_id: int(counts[hist_ids.index(c[0].item_id), row]) for c in contributors}
            if counts is not None
            else {}
        )
        bought = [h for h, n in pair_counts.items() if n >= MIN_CO_PURCHASE]
        after = (
            dict(zip(bought, interactions.bought_after([(h, item.item_id) for h in bought])))
            if interactions is not None
            else {}
        )
        evidence = typed_evidence(item, contributors, pair_counts, joint=joint, after=after)
        prior = not evidence and attribution.held_by_prior
        out.append(
            Recommendation(
                item_id=item.item_id,
                title=item.title,
                scene=scene,
                score=percentile(first_rank + row, n_scene_items),
                raw_score=round(candidate.score, 6),
                method=scorer.method,
                source="personalized",
                # an item the scene's prior holds cites no history item: none of them is why it is here
                evidence=evidence or ([] if prior else _nearest(history, cosine[row], n_evidence)),
                peers=(int(peers[row]), n_peers) if peers is not None and n_peers > 0 else None,
                prior=prior,
                buyers=int(buyers[row]) if prior and buyers is not None else None,
            )
        )
    return out


def _nearest(history: UserHistory, cosine: np.ndarray, n: int) -> list[Evidence]:
    """When no history item, alone or in a small group, moved the item in the list but the history as a
    whole did (it came in on something many of them share), the nearest by cosine, labelled `nearest`
    with no share: said as closeness, not as the cause."""
    out: list[Evidence] = []
    for j in np.argsort(-cosine, kind="stable"):
        e = history.entries[j]
        if all(x.item_id != e.item_id for x in out):
            out.append(
                Evidence(
                    item_id=e.item_id, title=e.title, scene=e.scene, similarity=round(float(cosine[j]), 4)
                )
            )
        if len(out) == n:
            break
    return out
