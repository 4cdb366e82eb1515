"""Connecting the transfer model to a data directory: its items, its checkpoint, its fallbacks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from ...errors import ScenerecError
from ...evaluation.methods import normalise
from ...settings import TransferSettings
from ...stores.scene_index import load_scene_vectors
from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint, read_checkpoint, save_checkpoint
from .data import ItemTable
from .model import TransferModel
from .scorer import TransferScorer, lexical_weight_of
from .train import pick_device, train_transfer

if TYPE_CHECKING:
    from ..recommender import Recommender

log = logging.getLogger(__name__)


def vector_model(rec: Recommender) -> str:
    """The embedding model the data directory's stored vectors came from."""
    return rec.items.manifest().get("vector_model") or rec.settings.embedding.model


def item_table(rec: Recommender) -> ItemTable:
    """Every item of every scene with its stored vector, read once (one query per scene)."""
    model = vector_model(rec)
    ids: dict[str, list[str]] = {}
    vectors: dict[str, np.ndarray] = {}
    for scene in rec.items.scenes():
        ids[scene], raw = load_scene_vectors(rec.items, rec.cache, model, scene)
        vectors[scene] = normalise(raw)  # as the evaluation data does: identical inputs, identical scores
    return ItemTable.build(ids, vectors)


def training_data(rec: Recommender) -> tuple[list[list[str]], list]:
    """Histories of the users without evaluation cases (training), and the valid split's cases."""
    from ...evaluation.methods import read_histories

    cases = rec.items.cases()
    held_out = {c.user_id for c in cases}
    histories = [h for u, h in sorted(read_histories(rec.items.path).items()) if u not in held_out]
    return histories, [c for c in cases if c.split == "valid"]


def load_scorer(rec: Recommender, table: ItemTable | None = None) -> TransferScorer:
    """The data directory's trained model, checked against its vectors; raises CheckpointError."""
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
    return TransferScorer(model, table, lexical_weight=lexical_weight_of(meta))


def checkpoint_stamp(rec: Recommender) -> tuple[int, int]:
    """(store version, checkpoint modification time or 0): changes when either is replaced."""
    try:
        mtime = checkpoint_path(rec.paths.root).stat().st_mtime_ns
    except OSError:
        mtime = 0
    return rec.items.version(), mtime


def open_transfer(rec: Recommender) -> TransferScorer | None:
    """The trained model when the data directory has a usable checkpoint; otherwise None, with a
    warning when a checkpoint exists but cannot be used (the caller falls back to the mean profile)."""
    if not checkpoint_path(rec.paths.root).exists():
        return None
    try:
        return load_scorer(rec)
    except CheckpointError as exc:
        log.warning("%s; using the mean profile instead", exc)
        return None


class TrainingReport(BaseModel):
    """What `train_and_save` did: where the checkpoint went, how long it took, the valid metrics."""

    checkpoint: str
    device: str
    train_users: int
    valid_cases: int
    seconds: float
    steps: int
    best_epoch: int
    stopped: str
    valid: dict[str, float]
    epochs: list[dict[str, Any]]
    lexical_weight: float | None = None  # BM25 weight chosen on the valid split (None: no valid cases)
    lexical_weights_tried: dict[str, float] = {}


def train_and_save(
    rec: Recommender,
    settings: TransferSettings | None = None,
    *,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
    max_steps: int | None = None,
) -> TrainingReport:
    """Train on the data directory's training users, early-stop on its valid cases, save the
    checkpoint under `checkpoints/`; the Recommender uses it from then on."""
    settings = settings or rec.settings.transfer
    histories, valid = training_data(rec)
    if not histories:
        raise ScenerecError(f"no training users in {rec.paths.root}: ingest a catalog with interactions")
    table = item_table(rec)
    result = train_transfer(table, histories, valid, settings, progress=progress, max_steps=max_steps)
    epochs = [
        {
            "epoch": e.epoch,
            "loss": None if e.loss != e.loss else round(e.loss, 5),
            "seconds": e.seconds,
            **{k: round(v, 6) for k, v in e.valid.items()},
        }
        for e in result.epochs
    ]
    metrics = {
        "training_seconds": result.seconds,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "valid": {k: round(v, 6) for k, v in result.best_valid.items()},
        "epochs": epochs,
        "train_users": len(histories),
        "valid_cases": len(valid),
    }
    if valid:  # chosen before the one save, so no checkpoint ever exists without its weight
        chosen, tried = choose_lexical_weight(rec, result.model)
        metrics["transfer_lexical_weight"] = chosen
        metrics["lexical_weight_valid_ndcg10"] = tried
    path = save_checkpoint(
        checkpoint_path(rec.paths.root), result.model, embedding_model=vector_model(rec), metrics=metrics
    )
    return TrainingReport(
        checkpoint=str(path),
        device=str(pick_device(settings.device)),
        train_users=len(histories),
        valid_cases=len(valid),
        seconds=result.seconds,
        steps=result.steps,
        best_epoch=result.best_epoch,
        stopped=result.stopped,
        valid=metrics["valid"],
        epochs=epochs,
        lexical_weight=metrics.get("transfer_lexical_weight"),
        lexical_weights_tried=metrics.get("lexical_weight_valid_ndcg10", {}),
    )


LEXICAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def choose_lexical_weight(rec: Recommender, model: TransferModel) -> tuple[float, dict[str, float]]:
    """The BM25 weight (of LEXICAL_WEIGHTS) whose fusion with the model ranks the valid cases best:
    NDCG@10 over every item of the target scene, averaged over the mixed and cold settings."""
    from ...evaluation.harness import evaluate
    from ...evaluation.methods import EvalData
    from .method import FusedTransferMethod

    data = EvalData.from_recommender(rec, split="valid")
    method = FusedTransferMethod(model=model)
    method.fit(data)
    tried: dict[str, float] = {}
    for weight in LEXICAL_WEIGHTS:
        method.weight = weight
        report = evaluate(data, [method], split="valid", protocols=("full",), n_bootstrap=0)
        overall = [report.result(method.name, s, "full").scenes["overall"] for s in report.settings]
        scores = [result.metrics["ndcg@10"].mean for result in overall]
        tried[str(weight)] = round(sum(scores) / len(scores), 6)
    best = max(LEXICAL_WEIGHTS, key=lambda w: (tried[str(w)], -w))  # ties: less BM25
    return best, tried
