"""The memories: which items the training users had together (any scenes, any order), which followed
which (order kept), and which read alike.

The model does not have to learn item-to-item associations into its weights (slow on sparse data);
it reads them from here and learns how much each history item's associations count for a target
scene. Values are cosine-normalised counts, c_jk / sqrt(n_j n_k), as in the co-occurrence baseline.
While training, a user's own contribution is taken out (leave-one-user-out), so the model never
learns to trust associations that exist only because the training user made them.

Rows and columns are vocabulary rows: 1..V for the model's vocabulary, 0 for an unknown item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse


class CooccurrenceMemory:
    """Symmetric user-level co-occurrence counts over the vocabulary."""

    def __init__(self, counts: sparse.csr_matrix, occurrences: np.ndarray) -> None:
        self.counts = counts.astype(np.float32).tocsr()  # zero diagonal
        self.occurrences = np.asarray(occurrences, dtype=np.float32)
        inv = np.where(self.occurrences > 0, 1 / np.sqrt(np.maximum(self.occurrences, 1)), 0).astype(
            np.float32
        )
        self._inv = inv
        self.normalised = (sparse.diags(inv) @ self.counts @ sparse.diags(inv)).astype(np.float32).tocsc()

    @classmethod
    def build(cls, histories: Sequence[Sequence[int]], size: int) -> CooccurrenceMemory:
        """From histories given as vocabulary rows (0 = unknown, ignored); `size` = V + 1."""
        users, items = [], []
        for u, history in enumerate(histories):
            for row in sorted(set(history) - {0}):
                users.append(u)
                items.append(row)
        matrix = sparse.csr_matrix(
            (np.ones(len(items), np.float32), (users, items)), shape=(max(len(histories), 1), size)
        )
        counts = (matrix.T @ matrix).tocsr()
        occurrences = counts.diagonal().copy()
        counts.setdiag(0)
        counts.eliminate_zeros()
        return cls(counts, occurrences)

    @property
    def size(self) -> int:
        return self.counts.shape[0]

    def columns(self, cols: np.ndarray) -> sparse.csr_matrix:
        """Normalised memory restricted to some columns (e.g. one scene's items), all rows."""
        return self.normalised[:, cols].tocsr()

    def training_block(self, rows: np.ndarray, cols: np.ndarray, own: Sequence[np.ndarray]) -> np.ndarray:
        """(B, L, K) normalised memory between each batch row's history rows (B, L) and candidate
        rows (K,), with batch row b's user (`own[b]`: their vocabulary rows, sorted) taken out."""
        b, length = rows.shape
        raw = self.counts[rows.reshape(-1)][:, cols].toarray().reshape(b, length, len(cols))
        owned = np.stack([np.isin(cols, o) for o in own]) if len(own) else np.zeros((0, len(cols)), bool)
        in_history = np.stack([np.isin(rows[i], own[i]) for i in range(b)])  # padding rows are not
        n_rows = self.occurrences[rows] - in_history  # (B, L)
        n_cols = self.occurrences[cols][None, :] - owned  # (B, K)
        both = in_history[:, :, None] & owned[:, None, :]
        counts = raw - both
        same = rows[:, :, None] == cols[None, None, :]
        denom = np.sqrt(np.maximum(n_rows[:, :, None], 0) * np.maximum(n_cols[:, None, :], 0))
        out = np.where((denom > 0) & ~same & (counts > 0), counts / np.where(denom > 0, denom, 1), 0)
        return out.astype(np.float32)

    # --- checkpoint form: plain tensors ---

    def state(self) -> dict[str, torch.Tensor]:
        coo = sparse.triu(self.counts, k=1).tocoo()  # symmetric: the upper triangle suffices
        return {
            "rows": torch.from_numpy(coo.row.astype(np.int32)),
            "cols": torch.from_numpy(coo.col.astype(np.int32)),
            "counts": torch.from_numpy(coo.data.astype(np.float32)),
            "occurrences": torch.from_numpy(self.occurrences),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> CooccurrenceMemory:
        rows, cols = state["rows"].numpy().astype(np.int64), state["cols"].numpy().astype(np.int64)
        data = state["counts"].numpy()
        occurrences = state["occurrences"].numpy()
        size = len(occurrences)
        upper = sparse.coo_matrix((data, (rows, cols)), shape=(size, size))
        return cls((upper + upper.T).tocsr(), occurrences)


class TransitionMemory:
    """Directional, order-aware associations: item k followed item j in a training history, at most
    `window` positions later, each occurrence weighted 1 / gap. Where a catalog is sequential (what
    a user buys next follows from what they bought last), this carries what the order-free
    co-occurrence memory loses; where it is not, the choice on valid gives it no weight. The
    shipped mix reads it (`shipping.py`); the trained model does not.
    Values are cosine-normalised like the co-occurrence memory's: t_jk / sqrt(n_j n_k).
    Rows are earlier items, columns later ones (vocabulary rows, 0 = unknown)."""

    def __init__(self, counts: sparse.csr_matrix, occurrences: np.ndarray) -> None:
        self.counts = counts.astype(np.float32).tocsr()
        self.occurrences = np.asarray(occurrences, dtype=np.float32)
        inv = np.where(self.occurrences > 0, 1 / np.sqrt(np.maximum(self.occurrences, 1)), 0).astype(
            np.float32
        )
        self.normalised = (sparse.diags(inv) @ self.counts @ sparse.diags(inv)).astype(np.float32).tocsc()

    @classmethod
    def empty(cls, size: int) -> TransitionMemory:
        return cls(sparse.csr_matrix((size, size)), np.zeros(size))

    @classmethod
    def build(cls, histories: Sequence[Sequence[int]], size: int, window: int) -> TransitionMemory:
        """From histories given as vocabulary rows, oldest first (0 = unknown, ignored)."""
        seqs = [np.asarray(h, dtype=np.int64) for h in histories]
        seqs = [q[q != 0] for q in seqs]
        items = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        user = np.repeat(np.arange(len(seqs)), [len(q) for q in seqs])
        occurrences = np.zeros(size, np.float64)
        first = np.unique(user * size + items)  # each item once per user
        np.add.at(occurrences, first % size, 1)
        rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        for gap in range(1, window + 1):  # all users at once: position i and i + gap of one user
            if gap >= len(items):
                break
            keep = (user[:-gap] == user[gap:]) & (items[:-gap] != items[gap:])
            rows.append(items[:-gap][keep])
            cols.append(items[gap:][keep])
            vals.append(np.full(int(keep.sum()), 1.0 / gap, np.float32))
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        counts = sparse.csr_matrix((v, (r, c)), shape=(size, size))
        counts.sum_duplicates()
        return cls(counts, occurrences)

    @property
    def size(self) -> int:
        return self.counts.shape[0]

    def columns(self, cols: np.ndarray) -> sparse.csr_matrix:
        """Normalised memory restricted to some later-item columns (one scene's items), all rows."""
        return self.normalised[:, cols].tocsr()

    def state(self) -> dict[str, torch.Tensor]:
        coo = self.counts.tocoo()
        return {
            "rows": torch.from_numpy(coo.row.astype(np.int32)),
            "cols": torch.from_numpy(coo.col.astype(np.int32)),
            "counts": torch.from_numpy(coo.data.astype(np.float32)),
            "occurrences": torch.from_numpy(self.occurrences),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TransitionMemory:
        rows, cols = state["rows"].numpy().astype(np.int64), state["cols"].numpy().astype(np.int64)
        occurrences = state["occurrences"].numpy()
        size = len(occurrences)
        return cls(sparse.csr_matrix((state["counts"].numpy(), (rows, cols)), shape=(size, size)), occurrences)


class TextNeighbours:
    """For every vocabulary item, its `k` nearest items of each scene by text (cosine of the frozen
    vectors), itself excluded: the sparse form of "items that read alike"."""

    def __init__(self, cosines: sparse.csr_matrix) -> None:
        self.cosines = cosines.astype(np.float32).tocsr()

    @classmethod
    def build(
        cls, vectors: np.ndarray, scene_rows: dict[str, np.ndarray], k: int, chunk: int = 2048
    ) -> TextNeighbours:
        """`vectors` (V + 1, d) by vocabulary row (row 0 zero); `scene_rows`: each scene's rows."""
        size = len(vectors)
        matrix = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        rows, cols, vals = [], [], []
        for scene_rows_ in scene_rows.values():
            targets = torch.from_numpy(np.asarray(scene_rows_, dtype=np.int64))
            if len(targets) == 0:
                continue
            take = min(k + 1, len(targets))
            block = matrix[targets].T.contiguous()
            for start in range(1, size, chunk):
                stop = min(start + chunk, size)
                sims = matrix[start:stop] @ block
                own = targets[None, :] == torch.arange(start, stop)[:, None]
                sims[own] = -2.0  # never one's own neighbour
                value, index = torch.topk(sims, take, dim=1)
                value, index = value[:, :k], targets[index[:, :k]]
                keep = value > 0
                rows.append(torch.arange(start, stop)[:, None].expand_as(index)[keep].numpy())
                cols.append(index[keep].numpy())
                vals.append(value[keep].numpy())
        if rows:
            r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        else:
            r = c = np.zeros(0, np.int64)
            v = np.zeros(0, np.float32)
        return cls(sparse.csr_matrix((v, (r, c)), shape=(size, size)))

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(*rows.shape, K) cosines between rows and candidate columns; 0 = not a neighbour."""
        flat = self.cosines[rows.reshape(-1)][:, cols].toarray()
        return flat.reshape(*rows.shape, len(cols)).astype(np.float32)

    def state(self) -> dict[str, torch.Tensor]:
        coo = self.cosines.tocoo()
        return {
            "rows": torch.from_numpy(coo.row.astype(np.int32)),
            "cols": torch.from_numpy(coo.col.astype(np.int32)),
            "cosines": torch.from_numpy(coo.data.astype(np.float32)),
            "size": torch.tensor(self.cosines.shape[0]),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TextNeighbours:
        size = int(state["size"])
        rows, cols = state["rows"].numpy().astype(np.int64), state["cols"].numpy().astype(np.int64)
        return cls(sparse.csr_matrix((state["cosines"].numpy(), (rows, cols)), shape=(size, size)))
