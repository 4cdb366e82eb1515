"""BM25 per scene over a sparse matrix: Okapi BM25 exactly as rank_bm25.BM25Okapi scores it, but fast.

Every (document, term) weight `idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))` is computed
once at build time, so a query is a sum of a few sparse columns. Like rank-bm25, a term found in more
than half the documents (negative idf) gets the floor `epsilon * average idf`, and a query term counts
once per occurrence.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import StoreError

K1 = 1.5
B = 0.75
EPSILON = 0.25
FORMAT_VERSION = 2  # 2: English stop words dropped

_TOKEN = re.compile(r"[^\W_]+")  # runs of unicode letters and digits

# Function words carry no taste: without this list a history of "the …" titles pulls every "the …"
# title of another scene to the top. Lucene's English analyzer list (other scripts are untouched).
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)


def tokenize(text: str) -> list[str]:
    """Lowercased runs of letters and digits (any script), English stop words dropped; no stemming."""
    return [token for token in _TOKEN.findall(text.lower()) if token not in STOP_WORDS]


class BM25Index:
    """Okapi BM25 over one scene's documents; `ids[i]` names row i of every score vector."""

    def __init__(self, ids: Sequence[str], vocabulary: dict[str, int], weights: sp.csc_matrix) -> None:
        self.ids = list(ids)
        self.vocabulary = vocabulary
        self._weights = weights  # (documents, terms), column j = the BM25 contribution of term j
        self._position = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self._position) != len(self.ids):
            raise ValueError("BM25Index ids must be unique")
        # rank of each id in sorted order, to break score ties by id without comparing strings per query
        self._id_rank = np.empty(len(self.ids), dtype=np.int64)
        self._id_rank[sorted(range(len(self.ids)), key=self.ids.__getitem__)] = np.arange(len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls, ids: Sequence[str], documents: Sequence[str], *, k1: float = K1, b: float = B, epsilon: float = EPSILON
    ) -> BM25Index:
        """Index `documents[i]` under `ids[i]`."""
        if len(ids) != len(documents):
            raise ValueError(f"{len(ids)} ids for {len(documents)} documents")
        vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[int] = []
        doc_len = np.zeros(len(documents), dtype=np.float64)
        for row, document in enumerate(documents):
            tokens = tokenize(document)
            doc_len[row] = len(tokens)
            for term, tf in Counter(tokens).items():
                rows.append(row)
                cols.append(vocabulary.setdefault(term, len(vocabulary)))
                tfs.append(tf)
        n_docs, n_terms = len(documents), len(vocabulary)
        tf_matrix = sp.csc_matrix(
            (np.asarray(tfs, dtype=np.float64), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(n_docs, n_terms),
        )
        if n_terms == 0:
            return cls(ids, vocabulary, tf_matrix)

        df = np.diff(tf_matrix.indptr).astype(np.float64)  # documents per term
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        floor = epsilon * float(idf.sum()) / n_terms
        idf = np.where(idf < 0, floor, idf)

        avgdl = float(doc_len.sum()) / n_docs  # > 0: some document has a term
        norm = k1 * (1 - b + b * doc_len / avgdl)
        tf = tf_matrix.data
        doc_of = tf_matrix.indices
        term_of = np.repeat(np.arange(n_terms), np.diff(tf_matrix.indptr))
        tf_matrix.data = idf[term_of] * tf * (k1 + 1) / (tf + norm[doc_of])
        return cls(ids, vocabulary, tf_matrix)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every document, in `ids` order (0 where no query term occurs)."""
        counts = Counter(self.vocabulary[t] for t in tokenize(query) if t in self.vocabulary)
        if not counts or not self.ids:
            return np.zeros(len(self.ids), dtype=np.float64)
        terms = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        times = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        return np.asarray(self._weights[:, terms] @ times, dtype=np.float64).reshape(-1)

    def scores_many(self, queries: Sequence[str]) -> np.ndarray:
        """(len(queries), documents) BM25 scores, one sparse product for all queries (attribution
        scores a history and each history minus one item together)."""
        counts = [Counter(self.vocabulary[t] for t in tokenize(q) if t in self.vocabulary) for q in queries]
        union = sorted(set().union(*counts)) if counts else []
        out = np.zeros((len(queries), len(self.ids)), dtype=np.float64)
        if not union or not self.ids:
            return out
        column = {term: j for j, term in enumerate(union)}
        times = np.zeros((len(union), len(queries)), dtype=np.float64)
        for q, c in enumerate(counts):
            for term, n in c.items():
                times[column[term], q] = n
        out[:] = np.asarray(self._weights[:, np.asarray(union, dtype=np.int64)] @ times).T
        return out

    def search(self, query: str, top_n: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """Up to top_n (id, score) best first, ties broken by id; documents scoring 0 or less are left out."""
        if top_n <= 0 or not self.ids:
            return []
        scores = self.scores(query)
        hits = np.flatnonzero(scores > 0)
        if exclude and hits.size:
            dropped = [self._position[i] for i in exclude if i in self._position]
            if dropped:
                hits = np.setdiff1d(hits, np.asarray(dropped, dtype=np.int64), assume_unique=True)
        if hits.size == 0:
            return []
        if hits.size > top_n:
            # keep every hit scoring at least the top_n-th best, so ties at the cut are decided by id
            threshold = np.partition(scores[hits], hits.size - top_n)[hits.size - top_n]
            hits = hits[scores[hits] >= threshold]
        order = hits[np.lexsort((self._id_rank[hits], -scores[hits]))][:top_n]
        return [(self.ids[i], float(scores[i])) for i in order]

    def save(self, path: Path) -> None:
        """Write one .npz (weights + JSON ids and vocabulary) atomically: readers see the old or the new file."""
        path = Path(path)
        weights = self._weights
        header = json.dumps(
            {"format": FORMAT_VERSION, "ids": self.ids, "vocabulary": self.vocabulary}, ensure_ascii=False
        )
        buffer = io.BytesIO()
        np.savez(
            buffer,
            data=weights.data,
            indices=weights.indices,
            indptr=weights.indptr,
            shape=np.asarray(weights.shape, dtype=np.int64),
            header=np.frombuffer(header.encode("utf-8"), dtype=np.uint8),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(buffer.getvalue())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write BM25 index {path}: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        """Read an index written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes().decode("utf-8"))
                if header.get("format") != FORMAT_VERSION:
                    raise ValueError(f"unknown format {header.get('format')!r}")
                weights = sp.csc_matrix(
                    (npz["data"], npz["indices"], npz["indptr"]), shape=tuple(int(n) for n in npz["shape"])
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise StoreError(f"cannot read BM25 index {path}: {exc}") from exc
        return cls(header["ids"], header["vocabulary"], weights)

