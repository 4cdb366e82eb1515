"""Training the transfer model for a data directory and choosing the settings that go with it on the
valid split: `scenerec train` calls `train_and_save`.

This lives with the evaluation because the choices are made by running the harness (the BM25 fusion
weight is the one whose fused ranking scores best on valid), and the transfer floor never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import ScenerecError
from ..settings import TransferSettings
from ..stores.scene_index import pick_device
from ..transfer.checkpoint import checkpoint_path, save_checkpoint
from ..transfer.loading import item_table, training_data, vector_model
from ..transfer.model import TransferModel
from ..transfer.train import train_transfer
from .harness import evaluate
from .methods import EvalData
from .transfer_methods import FusedTransferMethod

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
