"""Training the transfer model for a data directory and choosing the settings that go with it on the
valid split: `scenerec train` calls `train_and_save`.

This lives with the evaluation because the choices are made on the valid split (what ships per scene
and setting: the model, its blend with co-occurrence, or a baseline, `transfer.shipping`; then the
BM25 fusion weight, by running the harness), and the transfer floor never imports it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import ScenerecError
from ..models import Case
from ..settings import TransferSettings
from ..stores.scene_index import pick_device
from ..transfer.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from ..transfer.loading import item_table, training_data, vector_model
from ..transfer.model import TransferModel
from ..transfer.scorer import TransferScorer
from ..transfer.shipping import choose_shipping, describe
from ..transfer.search import search_transfer
from ..transfer.train import rebuild_memories
from .harness import evaluate
from .methods import EvalData
from .transfer_methods import FusedTransferMethod, ShippedMethod

if TYPE_CHECKING:
    from ..recommend.recommender import Recommender


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
    still_improving: bool = False  # the time budget stopped a model whose validation was still rising
    valid: dict[str, float]
    epochs: list[dict[str, Any]]
    lexical_weight: float | None = None  # BM25 weight chosen on the valid split (None: no valid cases)
    lexical_weights_tried: dict[str, float] = {}
    shipped: dict[str, Any] | None = None  # per scene and setting, the mix chosen on valid
    shipped_lines: list[str] = []  # the same, one readable line per (scene, setting)
    choice_seconds: float = 0.0  # what choosing the mix and the BM25 weight cost
    configuration: str = "default"  # the configuration the search chose (transfer/search.py)
    search: list[dict[str, Any]] = []  # each configuration's best valid NDCG@10, steps, seconds, rungs


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
    searched = search_transfer(table, histories, valid, settings, progress=progress, max_steps=max_steps)
    result = searched.result
    search = [
        {**asdict(t), "best_valid": round(t.best_valid, 6) if math.isfinite(t.best_valid) else None}
        for t in searched.trials
    ]
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
        "configuration": searched.chosen,
        "search": search,
    }
    if valid:  # chosen before the one save, so no checkpoint ever exists without its choices
        metrics.update(choose_what_ships(rec, result.model, valid))
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
        still_improving=result.still_improving,
        valid=metrics["valid"],
        epochs=epochs,
        lexical_weight=metrics.get("transfer_lexical_weight"),
        lexical_weights_tried=metrics.get("lexical_weight_valid_ndcg10", {}),
        shipped=metrics.get("shipped"),
        shipped_lines=describe(metrics["shipped"]) if metrics.get("shipped") else [],
        choice_seconds=metrics.get("choice_seconds", 0.0),
        configuration=searched.chosen,
        search=search,
    )


def choose_what_ships(rec: Recommender, model: TransferModel, valid: Sequence[Case]) -> dict[str, Any]:
    """The choices made on the valid split for a trained model: what ships per scene and setting,
    then the BM25 fusion weight. Leaves the model's memories reading what `recommend` reads.
    Returns the checkpoint metrics they go into (`shipped`, `transfer_lexical_weight`, ...)."""
    started = time.perf_counter()
    table = item_table(rec)
    model.attach(table)  # a model loaded from a checkpoint is not attached yet
    window = rec.settings.retrieval.transition_window
    # on valid, the memories read what the baselines read there: every history but the valid
    # users' (their targets are never in it); what ships reads every history but the test users'
    rebuild_memories(model, table, memory_histories(rec, "valid"), window)
    shipped = choose_shipping(TransferScorer(model, table), valid, rec.settings.retrieval.recency_decay)
    chosen, tried = choose_lexical_weight(rec, model, shipped)
    rebuild_memories(model, table, memory_histories(rec, "test"), window)
    return {
        "shipped": shipped,
        "transfer_lexical_weight": chosen,
        "lexical_weight_valid_ndcg10": tried,
        "choice_seconds": round(time.perf_counter() - started, 2),
    }


def reship(rec: Recommender) -> TrainingReport:
    """Choose again, on the valid split, what ships with the saved checkpoint's model (its weights
    unchanged), e.g. after an upgrade that adds candidates to the choice; saves the checkpoint."""
    path = checkpoint_path(rec.paths.root)
    model, meta = load_checkpoint(path, embedding_model=vector_model(rec), dim=item_table(rec).dim)
    _, valid = training_data(rec)
    if not valid:
        raise ScenerecError(f"{rec.paths.root} has no valid cases to choose on")
    metrics = {**meta.get("metrics", {}), **choose_what_ships(rec, model, valid)}
    save_checkpoint(path, model, embedding_model=vector_model(rec), metrics=metrics)
    return TrainingReport(
        checkpoint=str(path),
        device="cpu",
        train_users=int(metrics.get("train_users", 0)),
        valid_cases=len(valid),
        seconds=float(metrics.get("training_seconds", 0.0)),
        steps=0,
        best_epoch=int(metrics.get("best_epoch", 0)),
        stopped=str(metrics.get("stopped", "")),
        valid=metrics.get("valid", {}),
        epochs=metrics.get("epochs", []),
        lexical_weight=metrics["transfer_lexical_weight"],
        lexical_weights_tried=metrics["lexical_weight_valid_ndcg10"],
        shipped=metrics["shipped"],
        shipped_lines=describe(metrics["shipped"]),
        choice_seconds=metrics["choice_seconds"],
        configuration=str(metrics.get("configuration", "default")),
        search=metrics.get("search", []),
    )


def memory_histories(rec: Recommender, held_out_split: str) -> list[list[str]]:
    """Every stored history except those of the users with a case in `held_out_split` (the
    histories the harness's co-occurrence baseline reads when it evaluates that split)."""
    from ..stores.item_store import read_histories

    held = {c.user_id for c in rec.items.cases() if c.split == held_out_split}
    return [h for u, h in sorted(read_histories(rec.items.path).items()) if u not in held]


LEXICAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def choose_lexical_weight(
    rec: Recommender, model: TransferModel, shipped: dict[str, Any] | None = None
) -> tuple[float, dict[str, float]]:
    """The BM25 weight (of LEXICAL_WEIGHTS) whose fusion with the shipped list (the model's, or the
    `shipped` mix) ranks the valid cases best: NDCG@10 over every item of the target scene, averaged
    over the mixed and cold settings."""
    data = EvalData.from_recommender(rec, split="valid")
    method = ShippedMethod(model=model, shipped=shipped) if shipped else FusedTransferMethod(model=model)
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
