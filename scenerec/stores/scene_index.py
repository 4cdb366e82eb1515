"""An in-memory exact top-k index per scene: the scene's vectors as one torch tensor.

chroma stays the durable index (and serves ad-hoc single queries); this index answers the batched and
the ranking-critical queries exactly. Search is two passes:

1. selection: one matrix product per chunk of items (memory stays bounded by `queries x chunk`),
   a per-chunk top-(k + margin) merged into a running top-(k + margin);
2. exact ranking: the few selected candidates are rescored in float64 and ordered by (score desc,
   item id asc). A row whose selection cannot be certified (near-ties wider than the margin, e.g.
   many duplicate vectors) is rescored in full in float64.

Because float32 matrix products round differently with the batch size, pass 2 is what makes one query
alone and the same query inside a batch of 1,000 return the same ids in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from ..errors import StoreError
from ..settings import Settings

NEG_INF = float("-inf")


@dataclass
class TopK:
    """Result of a search: per query row, item positions (-1 = none) and exact scores, best first."""

    indices: np.ndarray  # (queries, k) int64; -1 pads rows with fewer than k items
    scores: np.ndarray  # (queries, k) float64; -inf where indices is -1

    def rows(self, ids: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Per query, (item_id, score) pairs, padding dropped."""
        return [
            [(ids[i], float(s)) for i, s in zip(ix, sc) if i >= 0]
            for ix, sc in zip(self.indices.tolist(), self.scores.tolist())
        ]


class SceneIndex:
    """Exact top-k by inner product over one scene's vectors; ids are kept sorted, ties go to the lower id.

    Subclasses fix the device and the storage dtype (float32 on CPU, float16 on CUDA). On the CPU the
    index shares memory with a float32, already id-sorted `vectors` array: do not modify it afterwards.
    """

    device: ClassVar[str] = "cpu"
    dtype: ClassVar[torch.dtype] = torch.float32
    default_chunk: ClassVar[int] = 65536  # scores of 1,000 queries x one chunk: 256 MiB
    rescore_margin: ClassVar[int] = 16  # extra candidates selected beyond k, rescored exactly

    def __init__(
        self, ids: Sequence[str], vectors: np.ndarray, *, chunk_size: int | None = None, version: int = 0
    ) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise StoreError(f"scene index: {len(ids)} ids but {len(vectors)} vectors")
        ids = list(ids)
        if any(a >= b for a, b in zip(ids, ids[1:])):  # not strictly increasing: sort (copies vectors)
            order = sorted(range(len(ids)), key=ids.__getitem__)
            ids, vectors = [ids[i] for i in order], vectors[order]
        self.ids: list[str] = ids
        self.position: dict[str, int] = {item_id: p for p, item_id in enumerate(self.ids)}
        if len(self.position) != len(self.ids):
            raise StoreError("scene index: duplicate item ids")
        self.dim = vectors.shape[1] if vectors.ndim == 2 else 0
        self.version = version
        self.chunk_size = chunk_size or self.default_chunk
        matrix = torch.from_numpy(np.ascontiguousarray(vectors))
        self.matrix = matrix.to(device=self.device, dtype=self.dtype).contiguous()
        self._max_norm = float(self.matrix.float().norm(dim=1).max()) if len(self.ids) else 0.0

    def __len__(self) -> int:
        return len(self.ids)

    def selection_error(self) -> float:
        """Bound on |selection score - exact score| per unit of |query| x |item|.

        float32 products summed in any order: d roundings of relative size 2^-24, doubled for margin.
        """
        return 2 * self.dim * 2.0**-24

    # --- search ---

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> TopK:
        """Exact top-k items for each query row, none of `exclude[row]`; k beyond the scene gives all."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n_queries, n_items = len(queries), len(self.ids)
        kk = max(0, min(k, n_items))
        if n_queries == 0 or kk == 0:
            return TopK(np.full((n_queries, 0), -1, np.int64), np.zeros((n_queries, 0), np.float64))
        if queries.shape[1] != self.dim:
            raise StoreError(f"scene index: query dimension {queries.shape[1]} != index dimension {self.dim}")
        query = torch.from_numpy(np.ascontiguousarray(queries)).to(self.device)
        excluded = self._excluded_pairs(exclude, n_queries)
        select = min(kk + self.rescore_margin, n_items)
        values, candidates = self._select(query, select, excluded)
        return self._rank(query, values, candidates, kk, excluded)

    def query(self, vectors: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
        """The VectorStore-shaped answer: per vector, up to n (item_id, score) pairs, best first."""
        return self.search(vectors, n).rows(self.ids)

    def _excluded_pairs(
        self, exclude: Sequence[Collection[str]] | None, n_queries: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows, cols) of excluded items, sorted by column so each chunk takes one slice."""
        if not exclude:
            return None
        if len(exclude) != n_queries:
            raise ValueError(f"exclude has {len(exclude)} sets for {n_queries} queries")
        rows, cols = [], []
        for row, ids in enumerate(exclude):
            for item_id in ids:
                col = self.position.get(item_id)
                if col is not None:
                    rows.append(row)
                    cols.append(col)
        if not rows:
            return None
        order = np.argsort(np.asarray(cols), kind="stable")
        return (
            torch.as_tensor(np.asarray(rows)[order], device=self.device),
            torch.as_tensor(np.asarray(cols)[order], device=self.device),
        )

    def _prepare(self, query: torch.Tensor) -> object:
        """The query in whatever form `_scores` wants (a device tensor, a oneDNN tensor)."""
        return query

    def _scores(self, query: object, start: int, stop: int) -> torch.Tensor:
        """Selection scores (queries x items [start, stop)), a fresh tensor the caller may modify."""
        assert isinstance(query, torch.Tensor)
        return query @ self.matrix[start:stop].T

    def _chunk_topk(self, scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Some m largest of each row (values, column positions), in any order."""
        return torch.topk(scores, m, dim=1, sorted=False)

    def _select(
        self, query: torch.Tensor, select: int, excluded: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Running top-`select` over item chunks: (selection scores, item positions), unordered."""
        best_values: torch.Tensor | None = None
        best_index: torch.Tensor | None = None
        n_items = len(self.ids)
        prepared = self._prepare(query)
        for start in range(0, n_items, self.chunk_size):
            stop = min(start + self.chunk_size, n_items)
            scores = self._scores(prepared, start, stop)
            if excluded is not None:
                rows, cols = excluded
                lo, hi = torch.searchsorted(cols, torch.tensor([start, stop], device=cols.device)).tolist()
                if hi > lo:
                    scores[rows[lo:hi], cols[lo:hi] - start] = NEG_INF
            values, index = self._chunk_topk(scores, min(select, stop - start))
            index += start
            if best_values is None:
                best_values, best_index = values, index
                continue
            values = torch.cat([best_values, values], dim=1)
            index = torch.cat([best_index, index], dim=1)
            best_values, keep = torch.topk(values, min(select, values.shape[1]), dim=1, sorted=False)
            best_index = torch.gather(index, 1, keep)
        assert best_values is not None and best_index is not None
        return best_values.float(), best_index

    def _exact(self, query64: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """float64 inner products of each query row with the items at `index` (rows x m)."""
        out = torch.empty(index.shape, dtype=torch.float64, device=self.device)
        step = max(1, 2_000_000 // max(1, index.shape[1] * self.dim))  # bounded temporary
        for start in range(0, len(index), step):
            vectors = self.matrix[index[start : start + step]].to(torch.float64)
            out[start : start + step] = (vectors * query64[start : start + step, None, :]).sum(-1)
        return out

    def _rank(
        self,
        query: torch.Tensor,
        values: torch.Tensor,
        candidates: torch.Tensor,
        k: int,
        excluded: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> TopK:
        query64 = query.to(torch.float64)
        valid = values != NEG_INF
        exact = torch.where(valid, self._exact(query64, candidates), NEG_INF)
        exact, candidates = _order(exact, candidates)
        exact, candidates = exact[:, :k].contiguous(), candidates[:, :k].contiguous()
        # certify: every item left out scored at most min(selected) in pass 1, so at most that plus the
        # rounding bound exactly; it cannot displace the k-th exact score if that bound is strictly lower
        if values.shape[1] < len(self.ids):
            floor = values.min(dim=1).values.to(torch.float64)
            bound = self.selection_error() * query64.norm(dim=1) * self._max_norm
            kth = exact[:, -1]
            uncertain = (floor != NEG_INF) & ~(floor + bound < kth)
            for row in torch.nonzero(uncertain).flatten().tolist():
                exact[row], candidates[row] = self._rank_row_fully(query64[row], row, k, excluded)
        index = torch.where(exact == NEG_INF, -1, candidates)
        return TopK(index.cpu().numpy().astype(np.int64), exact.cpu().numpy())

    def _rank_row_fully(
        self, query64: torch.Tensor, row: int, k: int, excluded: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ranking of one query over every item (the rare fallback for wide ties)."""
        n_items, step = len(self.ids), 4096
        everything = torch.arange(n_items, device=self.device)
        exact = torch.cat(
            [
                self._exact(query64[None, :], everything[None, start : start + step])[0]
                for start in range(0, n_items, step)
            ]
        )
        if excluded is not None:
            rows, cols = excluded
            exact[cols[rows == row]] = NEG_INF
        scores, index = _order(exact[None, :], everything[None, :])
        return scores[0, :k], index[0, :k]


def _linear(query: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """query @ vectors.T through oneDNN, with vectors prepacked by `mkldnn._reorder_linear_weight`."""
    return torch.ops.mkldnn._linear_pointwise(query, packed, None, "none", [None], "")


def _order(scores: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by score descending, then item position ascending."""
    if scores.device.type == "cpu":  # numpy: no thread pool to wake for a few thousand elements
        s, i = scores.numpy(), index.numpy()
        order = np.lexsort((i, -s), axis=-1)
        return (torch.from_numpy(np.take_along_axis(s, order, -1)),
                torch.from_numpy(np.take_along_axis(i, order, -1)))
    by_index = torch.argsort(index, dim=1, stable=True)
    scores, index = torch.gather(scores, 1, by_index), torch.gather(index, 1, by_index)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)
    return torch.gather(scores, 1, by_score), torch.gather(index, 1, by_score)


class CPUSceneIndex(SceneIndex):
    """float32 tensors on the CPU.

    Batched products go through oneDNN when torch has it: torch's default CPU BLAS (MKL) takes its AVX2
    path on AMD processors, while oneDNN picks kernels by instruction set (about 2x on the AVX-512 EPYC
    we benchmark on). The vectors are prepacked once per chunk with the op torch.compile's CPU backend
    uses (`mkldnn._linear_pointwise`, dense in and out); where that op is missing, the default BLAS.
    The packed copy is made on the first batched search and doubles the index's memory.
    """

    onednn_min_queries = 16  # fewer queries are bound by reading the vectors: the default BLAS does

    def __init__(
        self, ids: Sequence[str], vectors: np.ndarray, *, chunk_size: int | None = None, version: int = 0
    ) -> None:
        super().__init__(ids, vectors, chunk_size=chunk_size, version=version)
        self._packed: list[torch.Tensor] | None = None

    def _packed_chunks(self) -> list[torch.Tensor]:
        """The vectors prepacked for oneDNN, one per chunk, made on first use; [] where unsupported."""
        if self._packed is None:
            self._packed = []
            if torch.backends.mkldnn.is_available() and self.dim > 0:
                try:
                    pack = torch.ops.mkldnn._reorder_linear_weight
                    packed = [
                        pack(self.matrix[start : start + self.chunk_size], None)
                        for start in range(0, len(self.ids), self.chunk_size)
                    ]
                    probe = _linear(torch.zeros(2, self.dim), packed[0])
                    if probe.shape == (2, min(self.chunk_size, len(self.ids))) and not probe.is_mkldnn:
                        self._packed = packed
                except (AttributeError, RuntimeError, TypeError):  # a torch build without the op
                    pass
        return self._packed

    def _prepare(self, query: torch.Tensor) -> object:
        if len(query) < self.onednn_min_queries:
            return (query, None)
        return (query, self._packed_chunks() or None)

    def _scores(self, query: object, start: int, stop: int) -> torch.Tensor:
        assert isinstance(query, tuple)
        dense, packed = query
        if packed is None:
            return super()._scores(dense, start, stop)
        return _linear(dense, packed[start // self.chunk_size])

    def _exact(self, query64: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # numpy's einsum loop sums each output in one fixed order whatever the batch size (BLAS does
        # not), and is faster here than torch's elementwise product and sum
        matrix, queries, positions = self.matrix.numpy(), query64.numpy(), index.numpy()
        out = np.empty(positions.shape, dtype=np.float64)
        step = max(1, 4_000_000 // max(1, positions.shape[1] * self.dim))
        for start in range(0, len(positions), step):
            stop = start + step
            out[start:stop] = np.einsum(
                "rkd,rd->rk", matrix[positions[start:stop]], queries[start:stop], dtype=np.float64
            )
        return torch.from_numpy(out)


class CUDASceneIndex(SceneIndex):
    """float16 tensors on the GPU: half the memory and traffic; exact ranking still in float64."""

    device = "cuda"
    dtype = torch.float16
    default_chunk = 262144
    rescore_margin = 64

    def selection_error(self) -> float:
        # the query rounded to float16 and the score rounded to float16 (2^-11 each), float32
        # accumulation; the stored vectors' rounding is shared with pass 2. Doubled for margin.
        return 2 * (2 * 2.0**-11 + self.dim * 2.0**-24)

    def _prepare(self, query: torch.Tensor) -> object:
        return query.to(self.dtype)


def pick_device(device: str | None) -> str:
    """The one device choice of encoding, the scene index and training: the configured torch device, or
    (None) CUDA when present, else CPU; a CUDA device asked for on a machine without one is an error."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StoreError(f"device {device!r} asked for, but torch sees no CUDA device")
    return device


def index_class(device: str | None) -> type[SceneIndex]:
    """CUDA when asked for or (device None) when present, else CPU."""
    return CUDASceneIndex if pick_device(device).startswith("cuda") else CPUSceneIndex


def make_index(
    settings: Settings, ids: Sequence[str], vectors: np.ndarray, *, chunk_size: int | None = None,
    version: int = 0,
) -> SceneIndex:
    """The scene index for the settings' torch device (`embedding.device`; None picks CUDA when present).

    CPU: float32, chunks of 65,536 items. CUDA: float16, chunks of 262,144 items. Both rank exactly.
    """
    cls = index_class(settings.embedding.device)
    return cls(ids, vectors, chunk_size=chunk_size, version=version)


# --- lazy, version-checked loading from the item table and the embedding cache ---


class _Items(Protocol):
    def version(self) -> int: ...
    def hashes_in_scene(self, scene: str) -> dict[str, str]: ...


class _Cache(Protocol):
    def get_many(self, model: str, hashes: list[str]) -> dict[str, np.ndarray]: ...


def load_scene_vectors(items: _Items, cache: _Cache, model: str, scene: str) -> tuple[list[str], np.ndarray]:
    """A scene's item ids (sorted) and their stored vectors, from the source of truth, not from chroma."""
    hashes = items.hashes_in_scene(scene)
    found = cache.get_many(model, list(set(hashes.values())))
    missing = [i for i, h in hashes.items() if h not in found]
    if missing:
        raise StoreError(
            f"scene {scene!r}: no stored {model} vector for {len(missing)} items (e.g. {missing[:3]}): "
            "run `scenerec ingest` again"
        )
    ids = list(hashes)
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    return ids, np.stack([found[hashes[i]] for i in ids]).astype(np.float32, copy=False)


class SceneIndexes:
    """One SceneIndex per scene, built on first use and rebuilt when the store version changes."""

    def __init__(
        self, settings: Settings, items: _Items, cache: _Cache, model: Callable[[], str] | str
    ) -> None:
        self._settings = settings
        self._items = items
        self._cache = cache
        self._model = model
        self._loaded: dict[str, SceneIndex] = {}

    def get(self, scene: str) -> SceneIndex:
        version = self._items.version()
        index = self._loaded.get(scene)
        if index is None or index.version != version:
            model = self._model() if callable(self._model) else self._model
            ids, vectors = load_scene_vectors(self._items, self._cache, model, scene)
            index = make_index(self._settings, ids, vectors, version=version)
            self._loaded[scene] = index
        return index

    def query(self, scene: str, vectors: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
        """Same shape as `VectorStore.query`, exact: usable wherever a dense candidate list is needed."""
        return self.get(scene).query(vectors, n)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
