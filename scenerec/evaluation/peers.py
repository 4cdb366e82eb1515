"""A published peer scored by our harness: RecBole 1.2.1's SASRec as a `RankingMethod` named `sasrec`.

The model is RecBole's own `SASRec` class with RecBole's default hyperparameters (read from its
`properties/overall.yaml` and `properties/model/SASRec.yaml`: hidden 64, 2 layers, 2 heads, dropout 0.5,
CE loss over every item, at most 50 history items), trained across scenes on the training users'
histories. Only RecBole's model is used, not its data pipeline or its ranking:
- its `benchmark_filename` mode does not augment sequences, so every prefix -> next item row of every
  training history is written here (what its own augmentation produces for a user);
- its loader pads every prefix to 50 items while most are short; batches here are length-bucketed and
  trimmed to their longest prefix (SASRec's causal mask ignores trailing padding, so the outputs are
  the same);
- its full ranking covers every scene and keeps history items, so scoring goes through `score()`: the
  sequence output dotted with the target scene's item embeddings only; the harness masks the history.
Early stopping is on our valid split (mixed history, full ranking, NDCG@10 through `evaluate`), with
RecBole's default patience (`stopping_step`), inside a wall-time budget.

RecBole 1.2.1 predates numpy 2 (it uses `np.float`, `np.int`, ...): the aliases are set on numpy before
it is imported. Install: `pip install recbole==1.2.1 'pandas<3'` (pandas 3 breaks its dataset code).
"""

from __future__ import annotations

import copy
import importlib.resources
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ScenerecError
from .methods import EvalData, MethodUnavailableError, RankingMethod

CHECKPOINT_NAME = "sasrec.pt"
CHECKPOINT_FORMAT = "scenerec-sasrec-v1"
PROGRESS_FORMAT = "scenerec-sasrec-progress-v1"
_NUMPY_ALIASES = {
    "float": float,
    "int": int,
    "bool": bool,
    "object": object,
    "str": str,
    "complex": complex,
    "long": int,
    "unicode": str,
}
_YAML_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
INSTALL_HINT = "pip install recbole==1.2.1 'pandas<3' (with torch from .ci/constraints.txt)"


class SASRecOptions(BaseModel):
    """How the peer is trained. Model hyperparameters left None take RecBole's defaults."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int | None = Field(None, description="Embedding and hidden size (RecBole: 64).")
    n_layers: int | None = Field(None, description="Transformer layers (RecBole: 2).")
    max_len: int | None = Field(None, description="Most recent history items seen (RecBole: 50).")
    learning_rate: float | None = Field(None, description="Adam learning rate (RecBole: 0.001).")
    batch_size: int | None = Field(None, description="Training rows per batch (RecBole: 2048).")
    patience: int | None = Field(None, description="Epochs without a better valid NDCG@10 (RecBole: 10).")
    max_epochs: int | None = Field(None, description="Most epochs (RecBole: 300).")
    max_minutes: float | None = Field(
        None, description="Wall-time budget of training, valid checks included."
    )
    snapshot_minutes: float | None = Field(
        None,
        description="Also keep the model as it stands after this much training (a valid check there, "
        "training then goes on): the at-budget peer and the converged one from one run.",
    )
    bucket_pool: int = Field(16, description="Batches drawn at random, then sorted by length, per pool.")
    seed: int = 0
    threads: int | None = Field(None, description="torch CPU threads (None: leave torch's setting).")


class EpochRecord(BaseModel):
    epoch: int
    fraction: float = Field(
        1.0, description="Share of the epoch's batches trained (< 1: the budget ran out)."
    )
    loss: float
    valid_ndcg10: float | None
    seconds: float = Field(description="Wall time since training started, at the end of this epoch.")


class TrainedSASRec(BaseModel):
    """What training produced, besides the weights."""

    epochs: list[EpochRecord]
    best_epoch: int
    best_valid_ndcg10: float | None
    stopped: str = Field(description="'patience', 'budget' or 'max_epochs'.")
    seconds: float
    train_rows: int
    train_users: int
    config: dict[str, Any]
    snapshot: EpochRecord | None = Field(
        None, description="The valid check at `snapshot_minutes` (its weights are saved beside)."
    )


def _import_recbole() -> Any:
    """RecBole's SASRec class, after giving numpy the aliases RecBole 1.2.1 still uses."""
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    try:
        from recbole.model.sequential_recommender.sasrec import SASRec
    except ModuleNotFoundError as exc:
        raise MethodUnavailableError(f"sasrec: {exc.name} is not installed ({INSTALL_HINT})") from exc
    return SASRec


def recbole_defaults() -> dict[str, Any]:
    """RecBole's own defaults for SASRec, merged in the order its Config merges them: overall.yaml,
    model/SASRec.yaml, dataset/sample.yaml (no dataset file: ours is not one of RecBole's)."""
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML 1.1 reads `1e-12` as a string; RecBole's loader adds this float pattern (on yaml's
        global FullLoader; here on a subclass)."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    _import_recbole()
    values: dict[str, Any] = {}
    root = importlib.resources.files("recbole") / "properties"
    for part in (root / "overall.yaml", root / "model" / "SASRec.yaml", root / "dataset" / "sample.yaml"):
        values.update(yaml.load(part.read_text(encoding="utf-8"), Loader=Loader) or {})
    return values


def model_config(options: SASRecOptions) -> dict[str, Any]:
    """The keys RecBole's SASRec (and our training loop) read, RecBole's defaults overridden only where
    `options` says so. A plain dict stands in for RecBole's `Config`, which also reads `sys.argv`."""
    defaults = recbole_defaults()
    keys = (
        "n_layers",
        "n_heads",
        "hidden_size",
        "inner_size",
        "hidden_dropout_prob",
        "attn_dropout_prob",
        "hidden_act",
        "layer_norm_eps",
        "initializer_range",
        "loss_type",
        "MAX_ITEM_LIST_LENGTH",
        "learning_rate",
        "train_batch_size",
        "stopping_step",
        "epochs",
        "weight_decay",
        "USER_ID_FIELD",
        "ITEM_ID_FIELD",
        "LIST_SUFFIX",
        "ITEM_LIST_LENGTH_FIELD",
        "NEG_PREFIX",
    )
    config = {k: defaults[k] for k in keys}
    for ours, theirs in (
        ("hidden_size", "hidden_size"),
        ("n_layers", "n_layers"),
        ("max_len", "MAX_ITEM_LIST_LENGTH"),
        ("learning_rate", "learning_rate"),
        ("batch_size", "train_batch_size"),
        ("patience", "stopping_step"),
        ("max_epochs", "epochs"),
    ):
        value = getattr(options, ours)
        if value is not None:
            config[theirs] = value
    config["device"] = "cpu"
    return config


class _Vocabulary:
    """Stands in for RecBole's Dataset where SASRec asks it how many items there are (0 = padding)."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items


def build_model(config: dict[str, Any], n_items: int) -> Any:
    """A fresh RecBole SASRec over `n_items` item ids plus the padding id 0."""
    import torch

    sasrec = _import_recbole()
    model = sasrec({**config, "device": torch.device(config["device"])}, _Vocabulary(n_items + 1))
    return model


def training_rows(
    histories: Sequence[Sequence[int]], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every prefix -> next item row of every history (item indices >= 1): (sequences, lengths, targets),
    sequences left-aligned and zero-padded to `max_len`, as RecBole's augmentation writes them."""
    n = sum(max(len(h) - 1, 0) for h in histories)
    sequences = np.zeros((n, max_len), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    targets = np.zeros(n, dtype=np.int64)
    row = 0
    for history in histories:
        for t in range(1, len(history)):
            prefix = history[max(0, t - max_len) : t]
            sequences[row, : len(prefix)] = prefix
            lengths[row] = len(prefix)
            targets[row] = history[t]
            row += 1
    return sequences, lengths, targets


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, pool: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Row indices per batch: rows shuffled, then within each pool of `pool` batches sorted by length so a
    batch holds prefixes of similar length; the batches are shuffled again."""
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class SASRecMethod(RankingMethod):
    """RecBole's SASRec, trained on the training histories, scoring only the target scene's items."""

    name = "sasrec"

    def __init__(
        self, checkpoint: Path | None = None, *, state: dict[str, Any] | None = None, name: str = "sasrec"
    ) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self._state = state

    def fit(self, data: EvalData) -> None:
        import torch

        _import_recbole()
        state = self._state
        if state is None:
            path = self.checkpoint or (
                data.data_dir / "checkpoints" / CHECKPOINT_NAME if data.data_dir else None
            )
            if path is None or not path.is_file():
                where = f"at {path}" if path else "given (and no data directory)"
                raise MethodUnavailableError(
                    f"sasrec: no trained checkpoint {where}; train one: python benchmarks/peer_sasrec.py"
                )
            state = read_checkpoint(path)
        self.config = state["config"]
        self.item_ids: list[str] = state["item_ids"]
        self._index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}
        self.model = build_model(self.config, len(self.item_ids))
        self.model.load_state_dict(state["weights"])
        self.model.eval()
        self._columns = {}
        for scene, ids in data.scene_item_ids.items():
            self._columns[scene] = torch.tensor([self._index.get(i, 0) for i in ids], dtype=torch.long)
        self._known = {s: (c > 0).numpy() for s, c in self._columns.items()}

    def encode(self, histories: Sequence[Sequence[str]]) -> tuple[Any, Any, np.ndarray]:
        """(sequences, lengths, has_items) of the most recent `MAX_ITEM_LIST_LENGTH` known items."""
        import torch

        max_len = int(self.config["MAX_ITEM_LIST_LENGTH"])
        indexed = [[self._index[i] for i in h if i in self._index][-max_len:] for h in histories]
        width = max([len(h) for h in indexed] + [1])
        sequences = torch.zeros((len(indexed), width), dtype=torch.long)
        for r, h in enumerate(indexed):
            sequences[r, : len(h)] = torch.tensor(h, dtype=torch.long)
        lengths = torch.tensor([max(len(h), 1) for h in indexed], dtype=torch.long)
        return sequences, lengths, np.array([bool(h) for h in indexed])

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        import torch

        sequences, lengths, has_items = self.encode(histories)
        with torch.no_grad():
            output = self.model.forward(sequences, lengths)
            items = self.model.item_embedding.weight[self._columns[scene]]
            scores = (output @ items.T).double().numpy()
        scores[~has_items] = 0.0  # nothing seen: every item tied (the random baseline)
        known = self._known[scene]
        if not known.all():  # items the checkpoint never had: below every item it knows
            floor = scores[:, known].min(axis=1, keepdims=True) - 1.0 if known.any() else 0.0
            scores[:, ~known] = floor
        return scores


def _load_state(path: Path, expected: str, what: str) -> dict[str, Any]:
    """A dict of plain tensors and lists saved by `save_checkpoint` whose `format` is `expected`."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a torn or foreign file
        raise ScenerecError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != expected:
        raise ScenerecError(f"{path} is not a {what} (format {expected})")
    return state


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint` (plain tensors and lists: loads with weights_only)."""
    return _load_state(path, CHECKPOINT_FORMAT, "scenerec SASRec checkpoint")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a trained state (from `train_sasrec`) atomically."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train_sasrec(
    train_histories: dict[str, list[str]],
    item_ids: Sequence[str],
    options: SASRecOptions,
    valid: EvalData | None = None,
    progress: Callable[[EpochRecord], None] | None = None,
    *,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], TrainedSASRec]:
    """Train SASRec on every prefix of `train_histories` over `item_ids`; keep the epoch with the best
    valid NDCG@10 (mixed history, full ranking, our harness) when `valid` is given, else the last.

    Convergence on a large catalog takes longer than one sitting, so a run can go on where another
    stopped: `on_epoch` receives, after every completed epoch, the progress state (`PROGRESS_FORMAT`:
    latest weights, optimizer, torch RNG, epochs so far, best epoch and its weights), and `resume`
    continues from one. Batch order is drawn per epoch from (seed, epoch), so a resumed run trains the
    same batches an uninterrupted one would. `options.max_minutes` is this call's budget; epoch times
    are counted from the first call. A progress state without an optimizer (`progress_from_checkpoint`)
    restarts Adam's moments."""
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    config = model_config(options)
    item_ids = list(item_ids)
    index = {item_id: i + 1 for i, item_id in enumerate(item_ids)}
    histories = [[index[i] for i in h if i in index] for h in train_histories.values()]
    sequences, lengths, targets = training_rows(histories, int(config["MAX_ITEM_LIST_LENGTH"]))
    if not len(targets):
        raise ScenerecError("no training rows: every training history has fewer than two known items")
    model = build_model(config, len(item_ids))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=float(config["learning_rate"]), weight_decay=float(config["weight_decay"])
    )
    sequences_t, lengths_t, targets_t = map(torch.from_numpy, (sequences, lengths, targets))
    budget = options.max_minutes * 60 if options.max_minutes else math.inf
    records: list[EpochRecord] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    stopped = "max_epochs"
    planned = math.ceil(len(targets) / int(config["train_batch_size"]))
    snapshot_at = options.snapshot_minutes * 60 if options.snapshot_minutes else math.inf
    snapshot: EpochRecord | None = None
    snapshot_state: dict[str, Any] | None = None
    first_epoch, before = 1, 0.0  # seconds trained by earlier calls
    if resume is not None:
        _check_resume(resume, config, item_ids)
        model.load_state_dict(resume["weights"])
        if resume.get("optimizer") is not None:
            optimizer.load_state_dict(resume["optimizer"])
        if resume.get("torch_rng") is not None:
            torch.set_rng_state(resume["torch_rng"])
        records = [EpochRecord(**r) for r in resume["records"]]
        best = (float(resume["best_score"]), int(resume["best_epoch"]), resume["best_state"])
        first_epoch, before = int(resume["epoch"]) + 1, float(resume["seconds"])
        if resume.get("snapshot") is not None:
            snapshot, snapshot_state = EpochRecord(**resume["snapshot"]), resume["snapshot_state"]
    started = time.perf_counter() - before
    call_started = time.perf_counter()
    for epoch in range(first_epoch, int(config["epochs"]) + 1):
        if valid is not None and best is not None and epoch - 1 - best[1] >= int(config["stopping_step"]):
            stopped = "patience"  # a resumed run that had already run out of patience
            break
        model.train()
        total, batches = 0.0, 0
        rng = np.random.default_rng([options.seed, epoch])
        for rows in bucketed_batches(lengths, int(config["train_batch_size"]), options.bucket_pool, rng):
            rows_t = torch.from_numpy(rows)
            width = int(lengths[rows].max())
            interaction = {
                model.ITEM_SEQ: sequences_t[rows_t, :width],
                model.ITEM_SEQ_LEN: lengths_t[rows_t],
                model.POS_ITEM_ID: targets_t[rows_t],
            }
            optimizer.zero_grad()
            loss = model.calculate_loss(interaction)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
            trained = time.perf_counter() - started
            if snapshot is None and trained > snapshot_at:
                snapshot_state = _state(model, config, item_ids)
                snapshot = EpochRecord(
                    epoch=epoch,
                    fraction=round(batches / planned, 3),
                    loss=round(total / batches, 5),
                    valid_ndcg10=_valid_ndcg10(valid, snapshot_state) if valid is not None else None,
                    seconds=round(trained, 1),
                )
                if progress is not None:
                    progress(snapshot)
                # a run stopped here would not have spent this check on training: leave it out of the clock
                checked = time.perf_counter() - started - trained
                started += checked
                call_started += checked
                model.train()
            if time.perf_counter() - call_started > budget:
                break
        finished_epoch = time.perf_counter() - call_started <= budget
        state = _state(model, config, item_ids)
        ndcg = _valid_ndcg10(valid, state) if valid is not None else None
        record = EpochRecord(
            epoch=epoch,
            fraction=round(batches / planned, 3),
            loss=round(total / max(batches, 1), 5),
            valid_ndcg10=ndcg,
            seconds=round(time.perf_counter() - started, 1),
        )
        records.append(record)
        if progress is not None:
            progress(record)
        score = ndcg if ndcg is not None else float(epoch)
        if best is None or score > best[0]:
            best = (score, epoch, copy.deepcopy(state))
        if finished_epoch and on_epoch is not None:
            on_epoch(
                {
                    "format": PROGRESS_FORMAT, "config": dict(config), "item_ids": item_ids,
                    "weights": state["weights"], "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "epoch": epoch, "seconds": record.seconds,
                    "records": [r.model_dump() for r in records], "best_score": best[0],
                    "best_epoch": best[1], "best_state": best[2],
                    "snapshot": None if snapshot is None else snapshot.model_dump(),
                    "snapshot_state": snapshot_state,
                }
            )
        if not finished_epoch or time.perf_counter() - call_started > budget:
            stopped = "budget"
            break
        if valid is not None and epoch - best[1] >= int(config["stopping_step"]):
            stopped = "patience"
            break
    assert best is not None
    result = TrainedSASRec(
        epochs=records,
        best_epoch=best[1],
        best_valid_ndcg10=best[0] if valid is not None else None,
        stopped=stopped,
        seconds=round(time.perf_counter() - started, 1),
        train_rows=len(targets),
        train_users=len(histories),
        config={k: v for k, v in config.items() if k != "device"},
        snapshot=snapshot,
    )
    if snapshot_state is not None:
        result_state = dict(best[2], snapshot=snapshot_state)
        return result_state, result
    return best[2], result


def _check_resume(resume: dict[str, Any], config: dict[str, Any], item_ids: list[str]) -> None:
    if resume.get("format") != PROGRESS_FORMAT:
        raise ScenerecError(f"not a SASRec progress state (format {PROGRESS_FORMAT})")
    if resume["item_ids"] != item_ids:
        raise ScenerecError("the progress state was trained over other items: resume on the same catalog")
    shape = ("n_layers", "n_heads", "hidden_size", "inner_size", "MAX_ITEM_LIST_LENGTH", "loss_type")
    changed = [k for k in shape if resume["config"].get(k) != config.get(k)]
    if changed:
        raise ScenerecError(f"the progress state has another model shape: {changed} differ")


def progress_from_checkpoint(state: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """A progress state from a finished run's best checkpoint and its `TrainedSASRec` record (the
    `training` of training.json), to train on from there: the weights only, so Adam starts afresh. The
    checkpoint holds the best epoch, so the next epoch is counted from it and the run's later, worse
    epochs are dropped."""
    epochs = training["epochs"]
    best = next(e for e in epochs if e["epoch"] == training["best_epoch"])
    kept = [dict(e) for e in epochs if e["epoch"] <= best["epoch"]]
    return {
        "format": PROGRESS_FORMAT, "config": dict(state["config"]), "item_ids": list(state["item_ids"]),
        "weights": state["weights"], "optimizer": None, "torch_rng": None, "epoch": best["epoch"],
        "seconds": best["seconds"], "records": kept, "best_score": best["valid_ndcg10"],
        "best_epoch": best["epoch"], "best_state": {k: v for k, v in state.items() if k != "snapshot"},
        "snapshot": training.get("snapshot"), "snapshot_state": state.get("snapshot"),
    }


def read_progress(path: Path) -> dict[str, Any]:
    """A progress state written by `save_checkpoint(path, state)` from `train_sasrec`'s `on_epoch`."""
    return _load_state(path, PROGRESS_FORMAT, "SASRec progress state")


def _valid_ndcg10(valid: EvalData, state: dict[str, Any]) -> float:
    """Mixed-history, full-ranking NDCG@10 of the peer on `valid` (what early stopping reads)."""
    from .harness import evaluate

    method = SASRecMethod(state=state)
    report = evaluate(
        valid, [method], split=valid.split, settings=("mixed",), protocols=("full",), n_bootstrap=0
    )
    return report.result(method.name, "mixed", "full").scenes["overall"].metrics["ndcg@10"].mean


def _state(model: Any, config: dict[str, Any], item_ids: list[str]) -> dict[str, Any]:
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "config": dict(config), "item_ids": item_ids, "weights": weights}
