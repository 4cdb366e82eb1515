"""Connecting the transfer model to a data directory: its items, its checkpoint, its fallbacks.

Everything here takes the stores it reads through `TransferStores`, a small Protocol that an open
`Recommender` satisfies, so this floor never imports the pipeline that uses it.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from ..models import Case
from ..paths import DataPaths
from ..settings import Settings
from ..stores.embedding_cache import EmbeddingCache
from ..stores.item_store import ItemStore, read_histories
from ..stores.scene_index import load_scene_vectors, normalise, pick_device
from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint, read_checkpoint
from .data import ItemTable
from .scorer import TransferScorer, lexical_weight_of
from .shipping import shipped_of

log = logging.getLogger(__name__)


class TransferStores(Protocol):
    """The stores of one data directory that the transfer model is read from."""

    settings: Settings
    paths: DataPaths
    items: ItemStore
    cache: EmbeddingCache


def vector_model(rec: TransferStores) -> str:
    """The embedding model the data directory's stored vectors came from."""
    return rec.items.manifest().get("vector_model") or rec.settings.embedding.model


def item_table(rec: TransferStores) -> ItemTable:
    """Every item of every scene with its stored vector, read once (one query per scene)."""
    model = vector_model(rec)
    ids: dict[str, list[str]] = {}
    vectors: dict[str, np.ndarray] = {}
    for scene in rec.items.scenes():
        ids[scene], raw = load_scene_vectors(rec.items, rec.cache, model, scene)
        vectors[scene] = normalise(raw)  # as the evaluation data does: identical inputs, identical scores
    return ItemTable.build(ids, vectors)


def training_data(rec: TransferStores) -> tuple[list[list[str]], list[Case]]:
    """Histories of the users without evaluation cases (training), and the valid split's cases."""
    cases = rec.items.cases()
    held_out = {c.user_id for c in cases}
    histories = [h for u, h in sorted(read_histories(rec.items.path).items()) if u not in held_out]
    return histories, [c for c in cases if c.split == "valid"]


def load_scorer(rec: TransferStores, table: ItemTable | None = None) -> TransferScorer:
    """The data directory's trained model, checked against its vectors, with the mix chosen on valid
    (what `recommend` ships); raises CheckpointError."""
    path = checkpoint_path(rec.paths.root)
    meta = read_checkpoint(path)
    model_name = vector_model(rec)
    if meta.get("embedding_model") != model_name:  # checked before the item table is read
        raise CheckpointError(
            f"transfer checkpoint {path} was trained on '{meta.get('embedding_model')}' vectors, but this "
            f"data directory holds '{model_name}' vectors: run `scenerec train` again"
        )
    table = table or item_table(rec)
    device = pick_device(rec.settings.transfer.device)
    model, meta = load_checkpoint(path, embedding_model=model_name, dim=table.dim, device=device)
    return TransferScorer(model, table, lexical_weight=lexical_weight_of(meta), shipped=shipped_of(meta))


def checkpoint_stamp(rec: TransferStores) -> tuple[int, int]:
    """(store version, checkpoint modification time or 0): changes when either is replaced."""
    try:
        mtime = checkpoint_path(rec.paths.root).stat().st_mtime_ns
    except OSError:
        mtime = 0
    return rec.items.version(), mtime


def open_transfer(rec: TransferStores) -> TransferScorer | None:
    """The trained model when the data directory has a usable checkpoint; otherwise None, with a
    warning when a checkpoint exists but cannot be used (the caller falls back to the mean query)."""
    if not checkpoint_path(rec.paths.root).exists():
        return None
    try:
        return load_scorer(rec)
    except CheckpointError as exc:
        log.warning("%s; using the mean profile instead", exc)
        return None
