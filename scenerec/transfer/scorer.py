"""Inference with a trained transfer model: query rows, an exact per-scene index, full score rows.

A user becomes one float32 query row per target scene: the dense user vector, then the three memory
weights of each history slot (co-occurrence, text, transitions: the model's own rows leave the last
at 0), then the slots' item tokens, then the weights of the learned bias and
of raw training popularity (1 and 0 for the model; the shipped mix chosen on valid may change them). `TransferIndex.search` turns query rows
into exact scores over the scene's items; `recommend`, `score_batch` and the evaluation method all go
through it, so they rank identically.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse

from ..stores.scene_index import TopK
from .data import FIRST_ITEM, ItemTable, eval_tokens
from .model import TransferModel

MAX_TOKEN = 2**24  # token ids travel in float32 query rows
SLOT_BLOCKS = ("cooccurrence", "text", "transitions", "tokens")  # per-slot blocks, in column order


@dataclass
class QueryLayout:
    """Column blocks of a query row."""

    hidden: int
    slots: int  # max_history + 1 (the start token's slot, weight 0)

    @property
    def width(self) -> int:
        return self.hidden + 4 * self.slots + 2  # + the weights of the bias and of raw popularity

    def block(self, name: str) -> slice:
        """The columns of one per-slot block: "cooccurrence", "text", "transitions" or "tokens"."""
        k = SLOT_BLOCKS.index(name)
        start = self.hidden + k * self.slots
        return slice(start, start + self.slots)

    def split(self, queries: np.ndarray) -> tuple[np.ndarray, ...]:
        """dense, co-occurrence, text and transition weights, tokens, bias weight, popularity weight."""
        dense = queries[:, : self.hidden]
        w_cooc, w_text, w_trans = (queries[:, self.block(n)] for n in SLOT_BLOCKS[:3])
        tokens = np.rint(queries[:, self.block("tokens")]).astype(np.int64)
        return dense, w_cooc, w_text, w_trans, tokens, queries[:, -2], queries[:, -1]


class TransferIndex:
    """Exact top-k over one scene for transfer query rows (the SceneIndex interface: `ids`,
    `len`, `search`); ties go to the lower item id."""

    def __init__(
        self,
        ids: list[str],
        items: np.ndarray,
        bias: np.ndarray,
        cooc: sparse.csr_matrix,
        text: sparse.csr_matrix | None,
        vocab_row: np.ndarray,
        layout: QueryLayout,
        chunk: int = 256,
        popularity: np.ndarray | None = None,
        transitions: sparse.csr_matrix | None = None,
    ) -> None:
        self.ids = ids
        self.position = {item_id: p for p, item_id in enumerate(ids)}
        self.items = items.astype(np.float64)  # (n, hidden)
        self.bias = bias.astype(np.float64)
        self.popularity = (
            np.zeros(len(ids)) if popularity is None else np.asarray(popularity, dtype=np.float64)
        )
        self.cooc = cooc.astype(np.float64).tocsr()  # (V + 1, n)
        self.text = text.astype(np.float64).tocsr() if text is not None else None
        self.transitions = transitions.astype(np.float64).tocsr() if transitions is not None else None
        self.vocab_row = vocab_row
        self.layout = layout
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.ids)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n_queries, n_items) float64 scores."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.layout.width:
            raise ValueError(
                f"transfer query rows have {queries.shape[1]} columns, expected {self.layout.width}"
            )
        out = np.empty((len(queries), len(self.ids)))
        for start in range(0, len(queries), self.chunk):
            dense, w_cooc, w_text, w_trans, tokens, w_bias, w_pop = self.layout.split(
                queries[start : start + self.chunk]
            )
            n = len(dense)
            rows = self.vocab_row[np.clip(tokens, 0, len(self.vocab_row) - 1)]
            users = np.repeat(np.arange(n), tokens.shape[1])
            block = dense.astype(np.float64) @ self.items.T
            block += w_bias.astype(np.float64)[:, None] * self.bias[None, :]
            block += w_pop.astype(np.float64)[:, None] * self.popularity[None, :]
            for weights, memory in ((w_cooc, self.cooc), (w_text, self.text), (w_trans, self.transitions)):
                if memory is None or not weights.any():
                    continue
                a = sparse.csr_matrix(
                    (weights.ravel().astype(np.float64), (users, rows.ravel())), shape=(n, memory.shape[0])
                )
                block += (a @ memory).toarray()
            out[start : start + n] = block
        return out

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None) -> TopK:
        """Top-k item positions and scores per query row, none of `exclude[row]`."""
        scores = self.scores(queries)
        if exclude:
            for row, ids in enumerate(exclude):
                cols = [self.position[i] for i in ids if i in self.position]
                scores[row, cols] = -np.inf
        k = max(0, min(k, len(self.ids)))
        indices = np.full((len(scores), k), -1, dtype=np.int64)
        values = np.full((len(scores), k), -np.inf)
        for row, s in enumerate(scores):
            if k == 0:
                break
            floor = np.partition(s, len(s) - k)[len(s) - k]
            cand = np.flatnonzero(s >= floor)
            cand = cand[np.lexsort((cand, -s[cand]))][:k]  # score desc, then position (= id) asc
            cand = cand[np.isfinite(s[cand])]
            indices[row, : len(cand)] = cand
            values[row, : len(cand)] = s[cand]
        return TopK(indices, values)


def target_of(table: ItemTable, scene: str) -> int:
    """The table's scene id of `scene` (-1 when the table has no such scene)."""
    return table.scenes.index(scene) if scene in table.scenes else -1


DEFAULT_LEXICAL_WEIGHT = 0.5  # for checkpoints saved before the weight was chosen at training time


def lexical_weight_of(meta: dict) -> float:
    """The BM25 weight a checkpoint's metadata carries (chosen on the valid split), or the default."""
    value = meta.get("metrics", {}).get("transfer_lexical_weight")
    return float(value) if isinstance(value, (int, float)) else DEFAULT_LEXICAL_WEIGHT


class TransferScorer:
    """A trained model attached to a catalog's items."""

    def __init__(
        self,
        model: TransferModel,
        table: ItemTable,
        batch_size: int = 256,
        *,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
        shipped: Mapping[str, Any] | None = None,
    ) -> None:
        """`lexical_weight`: the BM25 list's weight when fused with this model's list (chosen on the
        valid split by `scenerec train`). `shipped`: the per-(scene, setting) mix of model,
        co-occurrence and popularity chosen on valid (`shipping.choose_shipping`); None = the model."""
        if len(table.vectors) >= MAX_TOKEN:
            raise ValueError(f"the transfer model handles catalogs of up to {MAX_TOKEN - FIRST_ITEM} items")
        self.model = model.eval()
        self.table = table
        self.batch_size = batch_size
        self.lexical_weight = lexical_weight
        self.shipped = dict(shipped) if shipped else None
        model.attach(table)
        self.layout = QueryLayout(model.settings.hidden, model.settings.max_history + 1)
        self._indexes: dict[str, TransferIndex] = {}

    @property
    def device(self) -> torch.device:
        return self.model.white_mean.device

    def covers(self, scene: str) -> bool:
        return scene in self.model.scenes and scene in self.table.scene_tokens

    def item_ids(self, scene: str) -> list[str]:
        """The scene's item ids in column order (sorted by item id)."""
        return [self.table.item_ids[t - FIRST_ITEM] for t in self.table.scene_tokens[scene]]

    def item_matrix(self, scene: str) -> np.ndarray:
        """(n_scene_items, hidden + 1): the learned item vectors and, last, their bias (the dense part
        of the score; the memories add the rest)."""
        index = self.index(scene)
        return np.hstack([index.items, index.bias[:, None]]).astype(np.float32)

    def index(self, scene: str) -> TransferIndex:
        """The exact index of a scene for this model's query rows."""
        if scene not in self._indexes:
            model = self.model
            tokens = self.table.scene_tokens[scene]
            vocab_row = model.vocab_row.cpu().numpy()
            with torch.no_grad():
                t = torch.as_tensor(tokens, device=self.device)
                items = model.item_repr(t).double().cpu().numpy()
                bias = model.bias(t).double().cpu().numpy()
                tau = float(model.log_tau.exp())
            cols = vocab_row[tokens]
            cooc = model.cooc.columns(cols)
            known = (cols > 0).astype(np.float64)  # unknown items: no memory
            cooc = cooc @ sparse.diags(known)
            text = None
            if model.text is not None:
                cosine = model.text.cosines[:, cols].tocsr() @ sparse.diags(known)
                text = cosine.copy()
                text.data = np.exp(tau * (text.data.astype(np.float64) - 1))
            popularity = np.log1p(model.cooc.occurrences[cols].astype(np.float64)) * known
            transitions = model.transitions.columns(cols) @ sparse.diags(known)
            self._indexes[scene] = TransferIndex(
                self.item_ids(scene), items, bias, cooc, text, vocab_row, self.layout,
                popularity=popularity, transitions=transitions,
            )
        return self._indexes[scene]

    def queries(self, histories: Sequence[Sequence[str]], scene: str, *, cold: bool = False) -> np.ndarray:
        """(n, query width) float32 query rows for `scene` from item-id histories (oldest first).

        With `cold`, items of `scene` are dropped before the model sees anything. Unknown ids are
        ignored; an empty history gives the model's no-history query (its scene prior).
        """
        if not self.covers(scene):
            raise ValueError(f"the transfer model was not trained on scene '{scene}'")
        model, layout = self.model, self.layout
        target = model.scenes.index(scene)
        out = np.zeros((len(histories), layout.width), dtype=np.float32)
        h = layout.hidden
        with torch.no_grad():
            for start in range(0, len(histories), self.batch_size):
                rows = [
                    eval_tokens(self.table, hist, scene, cold, model.settings.max_history)
                    for hist in histories[start : start + self.batch_size]
                ]
                width = max(len(r) for r in rows)
                tokens = np.zeros((len(rows), width), dtype=np.int64)
                for i, r in enumerate(rows):
                    tokens[i, : len(r)] = r
                last = torch.as_tensor([len(r) - 1 for r in rows], device=self.device)
                t = torch.as_tensor(tokens, device=self.device)
                states = model.encode(t)
                picked = torch.arange(len(rows), device=self.device)
                scene_ids = torch.full((len(rows),), target, dtype=torch.long, device=self.device)
                users = model.user_from_states(states[picked, last], scene_ids)
                weights = model.item_weights(states, t, target)[:, picked, last]  # (2, n, width)
                block = out[start : start + len(rows)]
                block[:, :h] = users.float().cpu().numpy()
                for k, name in enumerate(("cooccurrence", "text")):
                    start_col = layout.block(name).start
                    block[:, start_col : start_col + width] = weights[k].float().cpu().numpy()
                start_col = layout.block("tokens").start
                block[:, start_col : start_col + width] = tokens
                block[:, -2] = 1.0  # the model's own bias, no raw popularity
                if self.shipped is not None:
                    self._ship(block, rows, scene)
        return out

    def _ship(self, block: np.ndarray, rows: list[list[int]], scene: str) -> None:
        """Rewrite query rows in place into the shipped mix for their setting: a history without
        an item of `scene` is the cold setting, any other the mixed one."""
        assert self.shipped is not None
        choice = self.shipped.get("choice", {}).get(scene)
        if not choice:
            return
        decay = float(self.shipped.get("decay", 0.9))
        h = self.layout.hidden
        cooc_start, text = self.layout.block("cooccurrence").start, self.layout.block("text")
        trans_start = self.layout.block("transitions").start
        own = target_of(self.table, scene)
        for r, tokens in enumerate(rows):
            has_scene = any(self.table.scene_of[t] == own for t in tokens[1:])
            mix = choice.get("mixed" if has_scene else "cold")
            if not mix:
                continue
            a, g, p = float(mix["model"]), float(mix["cooccurrence"]), float(mix["popularity"])
            t = float(mix.get("transitions", 0.0))  # absent in choices made before the memory existed
            n = len(tokens) - 1
            recency = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)  # newest 1, older less
            block[r, :h] *= a
            cooc = slice(cooc_start + 1, cooc_start + 1 + n)  # slot 0 is the start token's
            block[r, cooc] = a * block[r, cooc] + g * recency
            block[r, text] *= a
            block[r, trans_start + 1 : trans_start + 1 + n] = t * recency
            block[r, -2], block[r, -1] = a, p

    def scores(self, histories: Sequence[Sequence[str]], scene: str, *, cold: bool = False) -> np.ndarray:
        """(n, n_scene_items) float64 scores, columns as `item_ids(scene)`; higher is better."""
        return self.index(scene).scores(self.queries(histories, scene, cold=cold))
