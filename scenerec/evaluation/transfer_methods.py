"""The transfer model as an evaluation method: loads the data directory's checkpoint (or trains one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..recommend.retrieval import DenseIndex
from ..settings import TransferSettings
from ..stores.scene_index import pick_device
from ..transfer.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from ..transfer.data import ItemTable
from ..transfer.model import TransferModel
from ..transfer.scorer import TransferScorer, lexical_weight_of
from ..transfer.shipping import shipped_of
from ..transfer.train import train_transfer
from .methods import EvalData, FusedMethod, MethodUnavailableError, RankingMethod


def table_from_eval_data(data: EvalData) -> ItemTable:
    return ItemTable.build(data.scene_item_ids, data.scene_vectors)


class TransferMethod(RankingMethod):
    """Scores with the trained transfer model of `data.data_dir` (`scenerec train` writes it).

    With `train_if_missing`, a data directory without a checkpoint gets a model trained here on
    `data.train_histories`, early-stopped on the directory's valid cases (never on the split being
    evaluated), and not saved. Otherwise a missing or unusable checkpoint makes the method
    unavailable, and the harness reports why.
    """

    name: ClassVar[str] = "transfer"

    def __init__(
        self,
        checkpoint: Path | None = None,
        *,
        model: TransferModel | None = None,
        train_if_missing: bool = False,
        shipped: dict | None = None,
        ship: bool = False,
    ) -> None:
        """`model`: a model in memory (e.g. one just trained) instead of a checkpoint file.
        `ship`: score with the checkpoint's shipped mix (or `shipped`) instead of the bare model."""
        self.checkpoint = checkpoint
        self.model = model
        self.train_if_missing = train_if_missing
        self.shipped = shipped
        self.ship = ship
        self.scorer: TransferScorer | None = None

    def fit(self, data: EvalData) -> None:
        table = table_from_eval_data(data)
        settings = data.settings.transfer if data.settings is not None else TransferSettings()
        path = self.checkpoint or (checkpoint_path(data.data_dir) if data.data_dir is not None else None)
        if self.model is not None:
            model, meta = self.model, {}
        elif path is not None and Path(path).exists():
            embedding = data.settings.embedding.model if data.settings is not None else None
            try:
                model, meta = load_checkpoint(
                    path, embedding_model=embedding, dim=table.dim, device=pick_device(settings.device)
                )
            except CheckpointError as exc:
                raise MethodUnavailableError(f"transfer: {exc}") from exc
        elif self.train_if_missing:
            valid = _valid_cases(data)
            model, meta = train_transfer(table, list(data.train_histories.values()), valid, settings).model, {}
        else:
            raise MethodUnavailableError(f"transfer: no checkpoint at {path}: run `scenerec train` first")
        shipped = (self.shipped or shipped_of(meta)) if self.ship else None
        self.scorer = TransferScorer(model, table, lexical_weight=lexical_weight_of(meta), shipped=shipped)

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        if self.scorer is None:
            raise RuntimeError("TransferMethod.score called before fit")
        return self.scorer.scores(histories, scene).astype(np.float64)


class FusedTransferMethod(FusedMethod):
    """The bare model's top-N in place of the mean profile's, fused with BM25 by reciprocal rank with
    `retrieval.transfer_lexical_weight` (what `recommend` shipped before the mix chosen on valid)."""

    name: ClassVar[str] = "fused-transfer"
    ships: ClassVar[bool] = False  # the bare model's list; `ShippedMethod` is what `recommend` ships

    def __init__(
        self,
        checkpoint: Path | None = None,
        lexical_weight: float | None = None,
        *,
        model: TransferModel | None = None,
        shipped: dict | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.model = model
        self.shipped = shipped
        self.weight = lexical_weight  # None: the settings', else the checkpoint's, else the default

    def fit(self, data: EvalData) -> None:
        if getattr(self, "data", None) is data:
            return  # fitted on this data already: only the weight changed (see choose_lexical_weight)
        super().fit(data)
        self._transfer = TransferMethod(
            self.checkpoint, model=self.model, shipped=self.shipped, ship=self.ships
        )
        self._transfer.fit(data)

    @property
    def lexical_weight(self) -> float:
        if self.weight is not None:
            return self.weight
        configured = self.data.retrieval.transfer_lexical_weight
        if configured is not None:
            return configured
        assert self._transfer.scorer is not None
        return self._transfer.scorer.lexical_weight

    def dense_index(self, scene: str) -> DenseIndex:
        """The model's item space of `scene`, searched exactly as `Recommender.candidates` does."""
        assert self._transfer.scorer is not None
        return self._transfer.scorer.index(scene)

    def query_vectors(self, histories: Sequence[Sequence[str]], scene: str) -> list[np.ndarray | None]:
        """The model's query of each (non-empty) history; None for an empty one."""
        scorer = self._transfer.scorer
        assert scorer is not None
        rows = [r for r, h in enumerate(histories) if h]
        queries: list[np.ndarray | None] = [None] * len(histories)
        for r, query in zip(rows, scorer.queries([histories[r] for r in rows], scene)):
            queries[r] = query
        return queries


class ShippedMethod(FusedTransferMethod):
    """What `recommend` ships: per scene and setting the mix of model, co-occurrence and popularity
    that `scenerec train` chose on the valid split (the checkpoint's `shipped` record), its list
    fused with BM25 by the chosen weight, exactly as `Recommender.candidates` does."""

    name: ClassVar[str] = "shipped"
    ships: ClassVar[bool] = True


def _valid_cases(data: EvalData) -> list:
    """The valid split's cases for early stopping: from the data directory, or the data's own cases
    when it was built for the valid split."""
    if data.split == "valid":
        return list(data.cases)
    if data.data_dir is None:
        return []
    from ..paths import DataPaths
    from ..stores.item_store import ItemStore

    store = ItemStore(DataPaths(data.data_dir).catalog_db)
    try:
        return store.cases("valid")
    finally:
        store.close()
