"""What a Recommender keeps between requests while the store version stays the same.

One `recommend` reads the history's vectors three times (the query, the cosine of the evidence, the
leave-one-out queries), asks for the scene names twice, encodes the history with the transfer model for
retrieval and again inside the attribution batch, and builds a list scorer whose id maps cover the whole
scene. `StoreMemo` keeps those, bounded, and forgets all of it when the store stamp changes (an ingest
or a repair elsewhere), so nothing stale outlives new data.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

V = TypeVar("V")

VECTOR_MEMO = 4096  # item vectors (~6 MiB of 384-d float32)
QUERY_MEMO = 256  # transfer query rows (a request and its leave-one-out variants: <= 31)


class LRU(Generic[V]):
    """A bounded map that forgets the least recently used keys first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def missing(self, keys: Iterable[Hashable]) -> list[Hashable]:
        """The distinct keys not held, in first-seen order."""
        return [k for k in dict.fromkeys(keys) if k not in self._data]

    def put(self, pairs: Iterable[tuple[Hashable, V]]) -> None:
        """Hold these values (the oldest are dropped past `size`)."""
        for key, value in pairs:
            self._data[key] = value
            self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def fetch(
        self, keys: Sequence[Hashable], compute: Callable[[list[Hashable]], Iterable[V]]
    ) -> list[V]:
        """The values of `keys`, computing the missing ones (`compute(missing)`, in order) and holding
        them. The answer is built before anything new goes in: putting may evict held keys this same
        request asked for (an old key, like the empty history's, is the first to go)."""
        todo = self.missing(keys)
        fresh = dict(zip(todo, compute(todo))) if todo else {}
        out = [fresh[k] if k in fresh else self._data[k] for k in keys]
        for key in dict.fromkeys(keys):
            if key in self._data:
                self._data.move_to_end(key)
        self.put(fresh.items())
        return out

    def clear(self) -> None:
        self._data.clear()


class StoreMemo:
    """Per store stamp: scene names, item vectors, transfer query rows and the scenes' list scorers."""

    def __init__(self) -> None:
        self.stamp: object = None
        self.scene_names: list[str] | None = None
        self.vectors: LRU[Any] = LRU(VECTOR_MEMO)
        self.queries: LRU[Any] = LRU(QUERY_MEMO)
        self.scorers: dict[str, tuple[Hashable, Any]] = {}  # scene -> (what it was built for, scorer)

    def check(self, stamp: object) -> StoreMemo:
        """Forget everything when the stamp differs from the one it was filled under; returns self."""
        if stamp != self.stamp:
            self.stamp = stamp
            self.scene_names = None
            self.vectors.clear()
            self.queries.clear()
            self.scorers.clear()
        return self
