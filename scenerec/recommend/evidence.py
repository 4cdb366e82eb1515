"""Typed evidence: why a history item supports a recommended item, said with facts from the stores.

Each attributed history item (see `attribution.py`) gets one kind, the most specific that holds:

- `co_purchase`: N training users bought both (counted from the stored interactions only), `after` of
  them the recommended item later than the history item (what the transition memory reads);
- `shared_attributes`: words both titles carry (brand, category and material words of the item text);
- `text_nearness`: the descriptions are close (cosine) and share these words;
- `model`: none of the above holds; the model's score still dropped without it.

An item that no single history item moves may be moved by a few of them together (`joint`, see
`attribution.joint_contributors`): each of the group is typed the same way and marked `joint`.

An item that nothing in the history moves, not even all of it removed, is one the scene's prior (the
model's learned popularity) put there: it cites no history item (`Recommendation.prior`, with its
`buyers`). Besides, `peers` counts how many users who share at least one history item with this user bought the
recommended item (popularity among users like this one). The interaction matrix is read once per data
directory and store version and kept as an .npz next to the stores, so a request slices it in microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import sparse

from ..models import Evidence, Item
from ..stores.item_store import read_histories

CACHE_NAME = "interactions.npz"
CACHE_FORMAT = "order-1"  # cells hold the 1-based position in the user's history (was: all ones)
MIN_CO_PURCHASE = 2  # one shared buyer may be the user's own neighbour by chance: not said as a fact
MIN_NEARNESS = 0.35  # below this cosine, "close in description" would not be true
STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "from",
        "that",
        "this",
        "you",
        "your",
        "are",
        "was",
        "its",
        "into",
        "over",
        "under",
        "per",
        "pack",
        "set",
        "sets",
        "piece",
        "pieces",
        "inch",
        "inches",
        "size",
        "color",
        "colors",
        "assorted",
        "new",
        "use",
        "used",
        "each",
        "other",
        "more",
        "most",
        "all",
        "any",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "ten",
        "count",
        "pcs",
        "pc",
        "pack",
        "of",
        "to",
        "in",
        "on",
        "by",
        "a",
        "an",
        "or",
        "is",
        "it",
        "as",
        "at",
        "be",
        "products",
        "product",
        "quality",
        "premium",
        "high",
        "great",
        "perfect",
        "ideal",
        "supplies",
    ]
)
WORD = re.compile(r"[a-z][a-z'-]{2,}")


def content_words(text: str) -> list[str]:
    """Lowercase words of 3+ letters that say something (no stopwords), in order, once each."""
    return list(_content_words(text))


@lru_cache(maxsize=16384)  # the same history texts are compared with every candidate of a list
def _content_words(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(w.strip("'-") for w in WORD.findall(text.lower()) if w not in STOPWORDS))


def shared_words(a: str, b: str, limit: int = 3) -> list[str]:
    """Content words of `a` that `b` also has, in `a`'s order."""
    other = set(content_words(b))
    return [w for w in content_words(a) if w in other][:limit]


class Interactions:
    """The stored users x items matrix, column-sliceable, for counting co-purchases; a cell holds the
    item's 1-based position in that user's history (first purchase), so order can be read too. A matrix
    of ones (no order known) counts co-purchases the same and no purchase as later than another."""

    def __init__(self, item_ids: list[str], users: sparse.csc_matrix, user_ids: list[str]) -> None:
        self.item_ids = item_ids
        self.row = {user_id: r for r, user_id in enumerate(user_ids)}
        self.column = {item_id: c for c, item_id in enumerate(item_ids)}
        self.users = users  # (n_users, n_items) csc

    @classmethod
    def build(cls, catalog_db: Path) -> Interactions:
        """Read every stored history into the matrix."""
        histories = read_histories(catalog_db)
        column: dict[str, int] = {}
        rows, cols, positions = [], [], []
        for row, items in enumerate(histories.values()):
            for position, item_id in enumerate(dict.fromkeys(items), start=1):
                rows.append(row)
                cols.append(column.setdefault(item_id, len(column)))
                positions.append(position)
        matrix = sparse.csc_matrix(
            (np.array(positions, dtype=np.float32), (rows, cols)), shape=(len(histories), len(column))
        )
        return cls(list(column), matrix, list(histories))

    @classmethod
    def cached(cls, catalog_db: Path, cache_dir: Path, stamp: Sequence[str]) -> Interactions:
        """The matrix from `cache_dir` when it was built for this store stamp, else built and saved."""
        path = Path(cache_dir) / CACHE_NAME
        key = "/".join([CACHE_FORMAT, *stamp])
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    if str(data["stamp"]) == key:
                        matrix = sparse.csc_matrix(
                            (data["data"], data["indices"], data["indptr"]), shape=tuple(data["shape"])
                        )
                        return cls([str(i) for i in data["ids"]], matrix, [str(u) for u in data["users"]])
            except (OSError, KeyError, ValueError):
                pass  # a damaged or foreign cache file is rebuilt below
        built = cls.build(catalog_db)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            stamp=np.array(key),
            ids=np.array(built.item_ids),
            users=np.array(list(built.row)),
            data=built.users.data,
            indices=built.users.indices,
            indptr=built.users.indptr,
            shape=np.array(built.users.shape),
        )
        tmp.replace(path)
        return built

    def _users(self, item_id: str) -> np.ndarray:
        """Sorted row numbers of the users who bought an item (empty for an item nobody bought)."""
        c = self.column.get(item_id)
        if c is None:
            return np.zeros(0, dtype=np.int32)
        return self.users.indices[self.users.indptr[c] : self.users.indptr[c + 1]]

    def _buyers(self, item_ids: Sequence[str]) -> sparse.csc_matrix:
        """(n_users, len(item_ids)) binary columns of the given items (all zero for an unknown item),
        assembled from the stored columns' index slices (no sparse fancy indexing)."""
        parts = [self._users(i) for i in item_ids]
        pointers = np.zeros(len(parts) + 1, dtype=np.int64)
        pointers[1:] = np.cumsum([len(p) for p in parts])
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return sparse.csc_matrix(
            (np.ones(len(rows), dtype=np.float32), rows, pointers), shape=(self.users.shape[0], len(parts))
        )

    def _positions(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The users who bought an item (sorted rows) and where it sits in each one's history."""
        c = self.column.get(item_id)
        if c is None:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        span = slice(self.users.indptr[c], self.users.indptr[c + 1])
        return self.users.indices[span], self.users.data[span]

    def bought_after(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Per (earlier, later) pair of item ids, how many users bought `later` after `earlier`."""
        out = []
        for earlier, later in pairs:
            users_a, at_a = self._positions(earlier)
            users_b, at_b = self._positions(later)
            _, ia, ib = np.intersect1d(users_a, users_b, assume_unique=True, return_indices=True)
            out.append(int((at_b[ib] > at_a[ia]).sum()))
        return out

    def buyers(self, item_ids: Sequence[str]) -> np.ndarray:
        """Per item, how many stored users bought it (0 for an item nobody bought)."""
        return np.array([len(self._users(i)) for i in item_ids], dtype=np.int64)

    def co_purchases(self, history_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """(len(history_ids), len(item_ids)) counts of users who bought both (one sparse product)."""
        if not len(history_ids) or not len(item_ids):
            return np.zeros((len(history_ids), len(item_ids)), dtype=np.int64)
        both = (self._buyers(history_ids).T @ self._buyers(item_ids)).toarray()
        return np.rint(both).astype(np.int64)  # sums of ones in float32: exact below 2**24 users

    def peers(
        self, user_id: str, history_ids: Sequence[str], item_ids: Sequence[str]
    ) -> tuple[np.ndarray, int]:
        """Per item, how many other users sharing a history item with this user bought it, and how many
        such users there are (the user themself left out)."""
        lists = [self._users(h) for h in dict.fromkeys(history_ids)]
        if not lists:
            return np.zeros(len(item_ids), dtype=np.int64), 0
        others = np.unique(np.concatenate(lists))
        own = self.row.get(user_id)
        if own is not None:
            others = others[others != own]
        mask = np.zeros(self.users.shape[0], dtype=np.float32)
        mask[others] = 1.0
        counts = np.rint(self._buyers(item_ids).T @ mask) if len(item_ids) else np.zeros(0)
        return counts.astype(np.int64), len(others)


def typed_evidence(
    candidate: Item,
    contributors: Sequence[tuple[Item, float, float, float]],
    counts: Mapping[str, int],
    joint: bool = False,
    after: Mapping[str, int] | None = None,
) -> list[Evidence]:
    """Evidence pieces for one candidate: per contributor (history item, share, delta, cosine) the most
    specific kind that holds; `counts` maps history item id -> co-purchases with the candidate, `after`
    -> how many of those bought the candidate later. `joint`: the contributors moved it only together
    (each carries the group's delta and an equal share)."""
    out = []
    after = after or {}
    for item, share, delta, cosine in contributors:
        count = counts.get(item.item_id, 0)
        title_words = shared_words(item.title, candidate.title)
        text_words = shared_words(item.document, candidate.document)
        if count >= MIN_CO_PURCHASE:
            kind, words = "co_purchase", title_words
        elif title_words:
            kind, words = "shared_attributes", title_words
        elif cosine >= MIN_NEARNESS and text_words:
            kind, words = "text_nearness", text_words
        else:
            kind, words = "model", []
        out.append(
            Evidence(
                item_id=item.item_id,
                title=item.title,
                scene=item.scene,
                similarity=round(cosine, 4),
                kind=kind,
                share=round(share, 4),
                delta=float(f"{delta:.6g}"),
                count=count,
                after=after.get(item.item_id) if kind == "co_purchase" else None,
                words=words,
                joint=joint,
            )
        )
    return out
