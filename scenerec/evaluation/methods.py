"""What the evaluation harness ranks with: `EvalData`, the `RankingMethod` interface, the baselines, and
the name -> (module, class) table every method is found through.

A method sees only `EvalData` (arrays built once from the stores) and, per batch, histories as item ids;
it returns a score for every item of the target scene. The harness alone decides what is excluded, what
is sampled and how ranks are counted, so every method is measured the same way.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from scipy import sparse

from ..errors import ScenerecError, StoreError
from ..models import Case
from ..recommend.retrieval import (
    DenseIndex,
    fused_candidates,
    mean_query,
    recency_weights,
    recent_titles_query,
)
from ..settings import RetrievalSettings, Settings
from ..stores.item_store import read_histories
from ..stores.scene_index import normalise
from ..transfer.memory import TransitionMemory

if TYPE_CHECKING:
    from ..recommend.recommender import Recommender


class UnknownMethodError(ScenerecError):
    """No method of that name is registered."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown evaluation method '{name}' (known: {', '.join(METHODS)})")


class MethodUnavailableError(ScenerecError):
    """A registered method cannot run here: its module is not installed or it has nothing to load
    (e.g. no trained checkpoint). The harness skips it and says why in the report."""


# --- the data every method is fitted on ---


@dataclass
class EvalData:
    """Everything a method may use, as arrays, built once per evaluation run for one split."""

    scenes: list[str]
    scene_item_ids: dict[str, list[str]]  # sorted by item id; the column order of `score`
    scene_vectors: dict[str, np.ndarray]  # (n_scene, d) float32, L2-normalised, same order
    vector_of: Callable[[Sequence[str]], np.ndarray]  # (len(ids), d) vectors of any known items
    item_scene: dict[str, str]
    item_title: dict[str, str]
    train_histories: dict[str, list[str]]  # users without a case in `split`: ordered item ids
    split: str = "test"
    cases: list[Case] = field(default_factory=list)  # the cases of `split`
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    lexical_index: Callable[[str], Any] | None = None  # scene -> stored BM25 index (or None)
    settings: Settings | None = None  # the full settings (a method may read its own section)
    data_dir: Path | None = None  # where checkpoints of trained methods live

    @cached_property
    def scene_column(self) -> dict[str, dict[str, int]]:
        """scene -> item id -> column of that scene's score matrix."""
        return {s: {item_id: c for c, item_id in enumerate(ids)} for s, ids in self.scene_item_ids.items()}

    @cached_property
    def scene_popularity(self) -> dict[str, np.ndarray]:
        """scene -> interaction counts of the training histories, per column."""
        counts: dict[str, np.ndarray] = {s: np.zeros(len(ids)) for s, ids in self.scene_item_ids.items()}
        columns = self.scene_column
        for history in self.train_histories.values():
            for item_id in history:
                scene = self.item_scene.get(item_id)
                if scene is not None:
                    counts[scene][columns[scene][item_id]] += 1
        return counts

    @classmethod
    def from_recommender(cls, rec: Recommender, split: str = "test") -> EvalData:
        """Read items, vectors, cases and training histories from an open Recommender's stores."""
        scenes = rec.items.scenes()
        scene_item_ids: dict[str, list[str]] = {}
        scene_vectors: dict[str, np.ndarray] = {}
        item_scene: dict[str, str] = {}
        item_title: dict[str, str] = {}
        for scene in scenes:
            items = sorted(rec.items.items_in_scene(scene), key=lambda i: i.item_id)
            ids = [i.item_id for i in items]
            scene_item_ids[scene] = ids
            scene_vectors[scene] = normalise(rec.item_vectors(ids)) if ids else np.zeros((0, 0), np.float32)
            for item in items:
                item_scene[item.item_id] = scene
                item_title[item.item_id] = item.title
        cases = rec.items.cases(split)
        in_split = {c.user_id for c in cases}
        histories = read_histories(rec.items.path)
        return cls(
            scenes=scenes,
            scene_item_ids=scene_item_ids,
            scene_vectors=scene_vectors,
            vector_of=_vector_lookup(scene_item_ids, scene_vectors),
            item_scene=item_scene,
            item_title=item_title,
            train_histories={u: h for u, h in histories.items() if u not in in_split},
            split=split,
            cases=cases,
            retrieval=rec.settings.retrieval,
            lexical_index=rec.lexical.get,
            settings=rec.settings,
            data_dir=rec.paths.root,
        )


def _vector_lookup(
    scene_item_ids: dict[str, list[str]], scene_vectors: dict[str, np.ndarray]
) -> Callable[[Sequence[str]], np.ndarray]:
    blocks = [v for v in scene_vectors.values() if v.size]
    dim = blocks[0].shape[1] if blocks else 0
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    row: dict[str, int] = {}
    for ids in scene_item_ids.values():
        for item_id in ids:
            row[item_id] = len(row)

    def vector_of(item_ids: Sequence[str]) -> np.ndarray:
        try:
            return matrix[np.fromiter((row[i] for i in item_ids), dtype=np.int64, count=len(item_ids))]
        except KeyError as exc:
            raise StoreError(f"unknown item id {exc.args[0]!r}") from None

    return vector_of


# --- the interface ---


class RankingMethod(ABC):
    """Scores every item of a scene for a batch of histories. Higher is better; the harness excludes
    history items and counts ranks, so a method never needs to."""

    name: ClassVar[str] = "method"

    def fit(self, data: EvalData) -> None:  # noqa: B027 - a no-op default is the point
        """Prepare from the evaluation data (training histories, vectors). Default: nothing."""

    @abstractmethod
    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        """(len(histories), n_scene_items) scores, columns in `data.scene_item_ids[scene]` order."""


class _DataMethod(RankingMethod):
    """A method that keeps the data it was fitted on."""

    data: EvalData

    def fit(self, data: EvalData) -> None:
        self.data = data

    def _n(self, scene: str) -> int:
        return len(self.data.scene_item_ids[scene])


# --- baselines ---


class PopularityMethod(_DataMethod):
    """The scene's items by how often training users interacted with them; the same list for everyone."""

    name = "popularity"

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        counts = self.data.scene_popularity[scene]
        return np.tile(counts, (len(histories), 1))


class CooccurrenceMethod(_DataMethod):
    """Item-to-item co-occurrence across scenes, from the training histories.

    Two items co-occur when one training user has both (any scenes, any order). Counts are cosine-
    normalised, c_ij / sqrt(n_i n_j), so that popular items do not co-occur with everything. A
    candidate's score is the recency-weighted sum over the history of its normalised co-occurrence with
    each history item (newest weighs 1, each older `decay` less); the scene's popularity, scaled far below
    any co-occurrence, orders the items no history item co-occurs with.
    """

    name = "cooccurrence"
    popularity_tiebreak: ClassVar[float] = 1e-9

    def __init__(self, decay: float | None = None) -> None:
        self.decay = decay

    def fit(self, data: EvalData) -> None:
        super().fit(data)
        if self.decay is None:
            self.decay = data.retrieval.recency_decay
        self._row: dict[str, int] = {}
        offsets: dict[str, slice] = {}
        for scene in data.scenes:
            start = len(self._row)
            for item_id in data.scene_item_ids[scene]:
                self._row[item_id] = len(self._row)
            offsets[scene] = slice(start, len(self._row))
        n = len(self._row)
        rows, cols = [], []
        for user, history in enumerate(data.train_histories.values()):
            known = {self._row[i] for i in history if i in self._row}
            rows += [user] * len(known)
            cols += sorted(known)
        users = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(data.train_histories), n)
        )
        counts = (users.T @ users).tocsr()
        occurrences = counts.diagonal()
        counts.setdiag(0)
        counts.eliminate_zeros()
        inv = 1.0 / np.sqrt(np.where(occurrences > 0, occurrences, 1.0))
        normalised = sparse.diags(inv) @ counts @ sparse.diags(inv)
        normalised = normalised.tocsc()
        self._scene_block = {s: normalised[:, sl].tocsr() for s, sl in offsets.items()}
        self._tiebreak = {}
        for scene, pop in data.scene_popularity.items():
            top = pop.max() if len(pop) else 0
            self._tiebreak[scene] = self.popularity_tiebreak * pop / top if top > 0 else np.zeros(len(pop))

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        rows, cols, weights = [], [], []
        for r, history in enumerate(histories):
            known = [self._row[i] for i in history if i in self._row]
            w = recency_weights(len(known), self.decay)
            rows += [r] * len(known)
            cols += known
            weights += list(w)
        queries = sparse.csr_matrix((weights, (rows, cols)), shape=(len(histories), len(self._row)))
        scores = (queries @ self._scene_block[scene]).toarray()
        return scores + self._tiebreak[scene][None, :]


class TransitionsMethod(CooccurrenceMethod):
    """Item-to-item transitions, from the training histories in their order: item k follows item j
    when a training user had k at most `transition_window` positions after j (weight 1 / gap).
    Cosine-normalised and scored like co-occurrence (recency-weighted over the history, popularity
    far below as the tiebreak); the order-aware baseline a sequential catalog needs beside it."""

    name = "transitions"

    def __init__(self, decay: float | None = None, window: int | None = None) -> None:
        super().__init__(decay)
        self.window = window

    def fit(self, data: EvalData) -> None:
        super().fit(data)
        if self.window is None:
            self.window = data.retrieval.transition_window
        offsets = {}
        for scene in data.scenes:
            ids = data.scene_item_ids[scene]
            offsets[scene] = np.array([self._row[i] + 1 for i in ids], dtype=np.int64)  # row 0 = unknown
        histories = [
            [self._row[i] + 1 for i in history if i in self._row] for history in data.train_histories.values()
        ]
        memory = TransitionMemory.build(histories, len(self._row) + 1, self.window)
        later = memory.normalised[1:]  # rows as `_row` (the query's columns), no unknown row
        self._scene_block = {s: later[:, cols].tocsr() for s, cols in offsets.items()}


class BM25Method(_DataMethod):
    """BM25 over the scene's item documents, the query being the titles of the last N history items
    (N = `retrieval.lexical_history_items`), scored by the stored per-scene index."""

    name = "bm25"

    def __init__(self, history_items: int | None = None) -> None:
        self.history_items = history_items

    def fit(self, data: EvalData) -> None:
        super().fit(data)
        if self.history_items is None:
            self.history_items = data.retrieval.lexical_history_items
        self._index: dict[str, Any] = {}
        self._order: dict[str, np.ndarray] = {}
        for scene in data.scenes:
            index = data.lexical_index(scene) if data.lexical_index else None
            if index is None:
                index = _build_bm25(data, scene)
            columns = data.scene_column[scene]
            self._index[scene] = index
            # the index's own id order -> our columns (the same order when both sort by id)
            self._order[scene] = np.array([columns[i] for i in index.ids], dtype=np.int64)

    def index(self, scene: str) -> Any:
        """The BM25 index this method scores `scene` with."""
        return self._index[scene]

    def query(self, history: Sequence[str]) -> str:
        assert self.history_items is not None
        titles = [self.data.item_title[i] for i in history if i in self.data.item_title]
        return recent_titles_query(titles, self.history_items)

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        out = np.zeros((len(histories), self._n(scene)))
        index, order = self._index[scene], self._order[scene]
        for r, history in enumerate(histories):
            query = self.query(history)
            if query.strip():
                out[r, order] = np.asarray(index.scores(query), dtype=np.float64)
        return out


def _build_bm25(data: EvalData, scene: str) -> Any:
    """A BM25 index over titles when the data directory has none stored."""
    from ..stores.lexical import BM25Index

    ids = data.scene_item_ids[scene]
    return BM25Index.build(ids, [data.item_title[i] for i in ids])


class DenseMethod(_DataMethod):
    """The foundation's mean profile: recency-weighted mean of the history's item vectors, dotted with
    the scene's item vectors. An empty history scores every item 0 (the random baseline)."""

    name = "dense"

    def __init__(self, decay: float | None = None) -> None:
        self.decay = decay

    def fit(self, data: EvalData) -> None:
        super().fit(data)
        if self.decay is None:
            self.decay = data.retrieval.recency_decay

    def query_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """The mean query of each history (zeros where it has no known item)."""
        dim = next((v.shape[1] for v in self.data.scene_vectors.values() if v.size), 0)
        out = np.zeros((len(histories), dim), dtype=np.float32)
        for r, history in enumerate(histories):
            known = [i for i in history if i in self.data.item_scene]
            query = mean_query(self.data.vector_of(known), self.decay) if known else None
            if query is not None:
                out[r] = query
        return out

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        items = self.data.scene_vectors[scene].astype(np.float64)
        return self.query_vectors(histories).astype(np.float64) @ items.T


class FusedMethod(_DataMethod):
    """What `Recommender.recommend` ships, through the same function (`retrieval.fused_candidates`): the
    exact dense top-N and the BM25 top-N (the history the method sees excluded first) fused by
    reciprocal rank with the retrieval settings' rrf_k, lexical_weight and candidate counts; an empty
    history falls back to popularity, as the Recommender does.

    The whole fused list is scored (its first 10 are what `recommend(k=10)` returns); items in neither
    list score 0, below every fused item (the harness counts them as tied). Popularity here counts the
    training histories only, where the Recommender counts every stored interaction.
    """

    name = "fused"
    k: ClassVar[int] = 10  # the list length the harness measures (HR/NDCG@10)

    def fit(self, data: EvalData) -> None:
        from ..stores.scene_index import index_class, make_index

        super().fit(data)
        self._dense = DenseMethod()
        self._dense.fit(data)
        self._bm25 = BM25Method()
        self._bm25.fit(data)
        self._index = {}
        for scene in data.scenes:
            ids, vectors = data.scene_item_ids[scene], data.scene_vectors[scene]
            if data.settings is not None:
                self._index[scene] = make_index(data.settings, ids, vectors)
            else:
                self._index[scene] = index_class(None)(ids, vectors)

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        settings = self.data.retrieval.model_copy(update={"lexical_weight": self.lexical_weight})
        known = [[i for i in h if i in self.data.item_scene] for h in histories]
        fused = fused_candidates(
            self.dense_index(scene), self._bm25.index(scene), self.query_vectors(known, scene),
            [self._bm25.query(h) for h in known], [set(h) for h in known], self.k, settings,
            keep=self._n(scene),
        )
        columns = self.data.scene_column[scene]
        out = np.zeros((len(histories), self._n(scene)))
        popular = self.data.scene_popularity[scene]
        for r, candidates in enumerate(fused):
            if not known[r]:
                out[r] = popular
                continue
            for candidate in candidates:
                out[r, columns[candidate.item_id]] = candidate.score
        return out

    @property
    def lexical_weight(self) -> float:
        return self.data.retrieval.lexical_weight

    def dense_index(self, scene: str) -> DenseIndex:
        """The exact index the query vectors are matched against."""
        return self._index[scene]

    def query_vectors(self, histories: Sequence[Sequence[str]], scene: str) -> list[np.ndarray | None]:
        """The mean query of each (non-empty) history; None for an empty one."""
        vectors = self._dense.query_vectors(histories)
        return [v if h else None for v, h in zip(vectors, histories)]


# --- the registry ---

METHODS: dict[str, tuple[str, str]] = {
    "popularity": ("scenerec.evaluation.methods", "PopularityMethod"),
    "cooccurrence": ("scenerec.evaluation.methods", "CooccurrenceMethod"),
    "transitions": ("scenerec.evaluation.methods", "TransitionsMethod"),
    "bm25": ("scenerec.evaluation.methods", "BM25Method"),
    "dense": ("scenerec.evaluation.methods", "DenseMethod"),
    "fused": ("scenerec.evaluation.methods", "FusedMethod"),
    "transfer": ("scenerec.evaluation.transfer_methods", "TransferMethod"),
    "fused-transfer": ("scenerec.evaluation.transfer_methods", "FusedTransferMethod"),
    "shipped": ("scenerec.evaluation.transfer_methods", "ShippedMethod"),
    "sasrec": ("scenerec.evaluation.peers", "SASRecMethod"),  # RecBole's SASRec (recbole installed)
}

BASELINES: tuple[str, ...] = ("popularity", "cooccurrence", "transitions", "bm25", "dense", "fused")


def make_method(name: str) -> RankingMethod:
    """A fresh, unfitted method by its registered name.

    Raises UnknownMethodError for a name not in METHODS and MethodUnavailableError when its module is
    not there (a method whose `fit` finds nothing to load raises MethodUnavailableError itself).
    """
    if name not in METHODS:
        raise UnknownMethodError(name)
    module_name, class_name = METHODS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise MethodUnavailableError(f"{name}: module {module_name} is not available") from exc
        raise
    cls = getattr(module, class_name, None)
    if cls is None:
        raise MethodUnavailableError(f"{name}: {module_name} has no class {class_name}")
    return cls()
