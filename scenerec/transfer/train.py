"""Training the transfer model: next-item softmax on training users, early stopping on valid cases."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch.nn import functional as F

from ..settings import TransferSettings
from ..stores.scene_index import pick_device
from .data import FIRST_ITEM, Batch, Example, ItemTable, collate, epoch_examples, history_cap
from .memory import CooccurrenceMemory, TextNeighbours, TransitionMemory
from .model import TransferModel
from .scorer import TransferScorer


class CaseLike(Protocol):
    history: list[str]
    target_scene: str
    target_item: str


@dataclass
class EpochLog:
    """What one epoch did (epoch 0: the model before any step, its priors and memories alone)."""

    epoch: int
    loss: float
    seconds: float
    valid: dict[str, float]


@dataclass
class TrainResult:
    """The best model (by valid NDCG@10, mixed and cold averaged) and the history that chose it."""

    model: TransferModel
    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    stopped: str = ""
    steps: int = 0
    # the time budget stopped it while the smoothed validation was still rising: more time would help
    still_improving: bool = False

    @property
    def best_valid(self) -> dict[str, float]:
        return next((e.valid for e in self.epochs if e.epoch == self.best_epoch), {})


# --- validation (the harness's conventions: history excluded, ties at their expected rank) ---


def ndcg_at_10(ranks: np.ndarray) -> float:
    """Mean NDCG@10 of 1-based ranks of single targets (inf = a miss)."""
    if len(ranks) == 0:
        return 0.0
    gains = np.where(ranks <= 10, 1.0 / np.log2(np.minimum(ranks, 1e9) + 1.0), 0.0)
    return float(gains.mean())


def target_ranks(scores: np.ndarray, columns: dict[str, int], cases: Sequence[CaseLike]) -> np.ndarray:
    """1-based rank of each case's target among the scene's items, the case's history excluded."""
    ranks = np.full(len(cases), np.inf)
    for row, case in enumerate(cases):
        target = columns.get(case.target_item)
        if target is None or case.target_item in case.history:  # a miss, as in the harness
            continue
        s = scores[row].astype(np.float64)
        own = s[target]
        s[[columns[i] for i in set(case.history) if i in columns]] = -np.inf
        ranks[row] = 1 + int((s > own).sum()) + ((s == own).sum() - 1) / 2
    return ranks


def evaluate(scorer: TransferScorer, cases: Sequence[CaseLike]) -> dict[str, float]:
    """Full-ranking NDCG@10 per scene and setting, their means, and the mixed/cold average."""
    result: dict[str, float] = {}
    for setting in ("mixed", "cold"):
        per_scene = []
        for scene in scorer.table.scenes:
            scene_cases = [c for c in cases if c.target_scene == scene]
            if not scene_cases or scene not in scorer.model.scenes:
                continue
            columns = {item_id: i for i, item_id in enumerate(scorer.item_ids(scene))}
            scores = scorer.scores([c.history for c in scene_cases], scene, cold=setting == "cold")
            value = ndcg_at_10(target_ranks(scores, columns, scene_cases))
            result[f"ndcg10_{setting}_{scene}"] = value
            per_scene.append(value)
        result[f"ndcg10_{setting}"] = float(np.mean(per_scene)) if per_scene else 0.0
    result["ndcg10"] = (result["ndcg10_mixed"] + result["ndcg10_cold"]) / 2
    return result


# --- what training starts from ---


@dataclass
class Memories:
    """What every configuration trained on the same histories shares: the co-occurrence memory, the
    text neighbours (for one `text_neighbours` setting) and each user's vocabulary rows (sorted),
    which the leave-one-user-out correction needs. Built once, given to each model."""

    cooc: CooccurrenceMemory
    text: TextNeighbours | None
    owner_rows: list[np.ndarray]
    text_neighbours: int

    @classmethod
    def build(cls, model: TransferModel, table: ItemTable, histories: Sequence[Sequence[int]]) -> Memories:
        vocab_row = model.vocab_row.cpu().numpy()
        rows = [vocab_row[np.asarray(h, dtype=np.int64)] for h in histories]
        size = len(model.vocabulary) + 1
        text = None
        if model.settings.text_neighbours:
            vectors = np.zeros((size, table.dim), dtype=np.float32)
            tokens = np.arange(FIRST_ITEM, len(table.vectors))
            vectors[vocab_row[tokens]] = table.vectors[tokens]
            vectors[0] = 0
            scene_rows = {s: vocab_row[t] for s, t in table.scene_tokens.items()}
            text = TextNeighbours.build(vectors, scene_rows, model.settings.text_neighbours)
        return cls(
            cooc=CooccurrenceMemory.build(rows, size),
            text=text,
            owner_rows=[np.unique(r[r > 0]) for r in rows],
            text_neighbours=model.settings.text_neighbours,
        )

    def give(self, model: TransferModel) -> list[np.ndarray]:
        """Set the model's memories and the priors they imply; return the users' rows."""
        model.cooc, model.text = self.cooc, self.text
        with torch.no_grad():
            model.item_bias.weight.copy_(torch.from_numpy(np.log1p(model.cooc.occurrences))[:, None])
        model.set_identity_gate(model.cooc.occurrences)
        return self.owner_rows


def rebuild_memories(
    model: TransferModel, table: ItemTable, histories: Sequence[Sequence[str]], transition_window: int
) -> None:
    """Replace the model's co-occurrence and transition memories with ones built from `histories`
    (oldest item first): after training, they can read every history the baselines read."""
    vocab_row = model.vocab_row.cpu().numpy()
    rows = [vocab_row[np.asarray(table.tokens(h), dtype=np.int64)] for h in histories]
    rows = [r for r in rows if len(r)]
    model.cooc = CooccurrenceMemory.build(rows, len(model.vocabulary) + 1)
    model.transitions = TransitionMemory.build(rows, len(model.vocabulary) + 1, transition_window)


# --- the loss ---


class _Loss:
    """Softmax cross-entropy of each target against its scene's items: all of them, or the target
    plus uniform negatives shared by the batch (an unbiased sample of the full softmax)."""

    def __init__(
        self,
        model: TransferModel,
        table: ItemTable,
        owner_rows: list[np.ndarray],
        negatives: int,
        rng: np.random.Generator,
    ) -> None:
        self.model = model
        self.table = table
        self.owner_rows = owner_rows
        self.negatives = negatives
        self.full_budget = model.settings.full_softmax_budget
        self.rng = rng
        self.vocab_row = model.vocab_row.cpu().numpy()
        # negative proposal per scene: uniform, mixed with training popularity; its log is subtracted
        # from every candidate's logit (sampled softmax with a log-q correction)
        share = model.settings.popular_negatives
        self.proposal: dict[str, np.ndarray] = {}
        self.log_proposal: dict[str, np.ndarray] = {}
        for scene, tokens in table.scene_tokens.items():
            counts = model.cooc.occurrences[self.vocab_row[tokens]].astype(np.float64) + 1
            q = (1 - share) / len(tokens) + share * counts / counts.sum()
            self.proposal[scene] = q / q.sum()
            self.log_proposal[scene] = np.log(self.proposal[scene]).astype(np.float32)

    def __call__(self, batch: Batch) -> torch.Tensor:
        model, device = self.model, self.model.white_mean.device
        tokens = torch.as_tensor(batch.tokens, device=device)
        width = batch.tokens.shape[1]
        states = model.encode(tokens)
        history_rows = self.vocab_row[batch.tokens]
        own = [self.owner_rows[o] for o in batch.owners]
        rows_of_target, positions = batch.flat_positions // width, batch.flat_positions % width
        total = torch.zeros((), device=device)
        for s, scene in enumerate(self.table.scenes):
            chosen = batch.target_scenes == s
            if not chosen.any():
                continue
            qb, qt, y = rows_of_target[chosen], positions[chosen], batch.targets[chosen]
            scene_tokens = self.table.scene_tokens[scene]
            # the full softmax where its (B, L, items) memory blocks fit the budget, sampled beyond
            fits = batch.tokens.size * len(scene_tokens) <= self.full_budget
            sampled = not fits and 0 < self.negatives < len(scene_tokens)
            if sampled:
                picked = self.rng.choice(len(scene_tokens), size=self.negatives, p=self.proposal[scene])
                negatives = scene_tokens[picked]
                candidates = np.concatenate([negatives, y])
                log_q = self.log_proposal[scene][np.concatenate([picked, y - scene_tokens[0]])]
            else:
                candidates = scene_tokens
            logits = self.logits(states, tokens, history_rows, own, qb, qt, s, candidates)
            if sampled:
                logits = logits - torch.as_tensor(log_q, device=device)[None, :]
                k, n = self.negatives, len(y)
                positive = logits[torch.arange(n), k + torch.arange(n)]
                negative = logits[:, :k].masked_fill(
                    torch.as_tensor(negatives[None, :] == y[:, None], device=device), -torch.inf
                )
                logits = torch.cat([positive[:, None], negative], dim=1)
                labels = torch.zeros(n, dtype=torch.long, device=device)
            else:
                labels = torch.as_tensor(y - scene_tokens[0], device=device)
            total = total + F.cross_entropy(logits, labels, reduction="sum")
        return total / len(batch.targets)

    def logits(
        self,
        states: torch.Tensor,
        tokens: torch.Tensor,
        history_rows: np.ndarray,
        own: list[np.ndarray],
        qb: np.ndarray,
        qt: np.ndarray,
        scene: int,
        candidates: np.ndarray,
    ) -> torch.Tensor:
        """(targets, candidates) scores, exactly as the scorer computes them at inference."""
        model, device = self.model, self.model.white_mean.device
        cand = torch.as_tensor(candidates, device=device)
        cand_rows = self.vocab_row[candidates]
        weights = model.item_weights(states, tokens, scene)  # (2, B, L, L)
        cooc = torch.as_tensor(model.cooc.training_block(history_rows, cand_rows, own), device=device)
        memory = torch.bmm(weights[0], cooc)
        if model.text is not None:
            cosine = torch.as_tensor(model.text.block(history_rows, cand_rows), device=device)
            text = torch.where(cosine > 0, model.text_kernel(cosine), torch.zeros((), device=device))
            memory = memory + torch.bmm(weights[1], text)
        qb_t, qt_t = torch.as_tensor(qb, device=device), torch.as_tensor(qt, device=device)
        scene_ids = torch.full((len(qb),), scene, dtype=torch.long, device=device)
        users = model.user_from_states(states[qb_t, qt_t], scene_ids)
        return users @ model.item_repr(cand).T + model.bias(cand)[None, :] + memory[qb_t, qt_t]


def length_buckets(
    examples: Sequence[Example], batch_size: int, rng: np.random.Generator, span: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of example indices; within each run of `span` batches, examples of similar
    length go together so that little of a batch is padding."""
    order = rng.permutation(len(examples))
    batches = []
    for start in range(0, len(order), batch_size * span):
        chunk = order[start : start + batch_size * span]
        chunk = chunk[np.argsort([len(examples[i].tokens) for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class TrainingRun:
    """One model's training, resumable: `advance` trains until a deadline or a step count and can be
    called again (the search trains several configurations a slice at a time); `finish` returns the
    best model. Validates every `valid_every` steps (twice an epoch by default; `EpochLog.epoch` counts
    validations) and whenever a slice ends. Deterministic for a seed on one device and a sequence of
    step counts. Stops on `patience` validations without a better smoothed score or `max_epochs`.
    `progress(stage, done, total, info)` is called after every step ("train") and validation ("valid").
    """

    def __init__(
        self,
        table: ItemTable,
        train_histories: Sequence[Sequence[str]],
        valid_cases: Sequence[CaseLike],
        settings: TransferSettings,
        *,
        progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
        memories: Memories | None = None,
    ) -> None:
        self.started = time.perf_counter()
        self.settings, self.table, self.valid_cases, self.progress = settings, table, valid_cases, progress
        torch.manual_seed(settings.seed)
        self.rng = np.random.default_rng(settings.seed)
        device = torch.device(pick_device(settings.device))
        model = TransferModel(settings, table.dim, table.scenes, table.item_ids)
        model.set_whitening(table.vectors[FIRST_ITEM:])
        model.to(device)
        model.attach(table)
        self.model = model
        histories = [t for t in (table.tokens(h) for h in train_histories) if t]
        if memories is None or memories.text_neighbours != settings.text_neighbours:
            memories = Memories.build(model, table, histories)  # from the whole histories
        self.memories = memories
        owner_rows = memories.give(model)
        cap = history_cap([len(h) for h in histories], settings.history_percentile, settings.max_history)
        self.histories = [h[-cap:] for h in histories]  # what is learned from: the most recent `cap` items
        # an epoch's batches, as `mixed_examples` windows the histories (a cold-dropped one gives one)
        windows = sum(math.ceil(len(h) / settings.max_history) for h in self.histories)
        self.steps_per_epoch = max(1, math.ceil(windows / settings.batch_users))
        sparse_ids = {id(p) for p in model.sparse_parameters()}
        self.dense_params = [p for p in model.parameters() if id(p) not in sparse_ids]
        self.optimisers: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(self.dense_params, lr=settings.learning_rate, weight_decay=settings.weight_decay),
            torch.optim.SparseAdam(
                model.sparse_parameters(), lr=settings.learning_rate * settings.sparse_lr_scale
            ),
        ]
        self.loss_fn = _Loss(model, table, owner_rows, settings.negatives, self.rng)
        # a running average of the weights (Polyak): the raw weights of a half-trained model jump from
        # one validation to the next, their average less; validation scores both and keeps the better
        self.params = list(model.parameters())
        self.average = [p.detach().clone() for p in self.params] if settings.average_epochs > 0 else None
        self.averaged_steps = 0
        self.result = TrainResult(model=model)
        self.deadline, self.step_limit = math.inf, None
        self.trained_seconds = 0.0
        # the best raw validation is kept; stopping reads an exponentially smoothed one, so one noisy
        # validation neither stops training nor keeps it going
        self.best_score = self._validate(0, float("nan"), time.perf_counter() - self.started)[0] if valid_cases else -math.inf
        self.best_state, self.since_best = copy.deepcopy(model.state_dict()), 0
        self.smoothed = self.best_smoothed = self.best_score
        self.checks = 0
        self.setup_seconds = time.perf_counter() - self.started
        self._loop = self._steps()

    @property
    def done(self) -> bool:
        """Early stopping or `max_epochs` ended it: more time would not change it."""
        return bool(self.result.stopped)

    def advance(self, *, deadline: float = math.inf, max_steps: int | None = None) -> None:
        """Train until `deadline` (a `time.perf_counter()` value) or `max_steps` steps in all."""
        if self.done:
            return
        self.deadline, self.step_limit = deadline, max_steps
        started = time.perf_counter()
        next(self._loop, None)
        self.trained_seconds += time.perf_counter() - started

    def finish(self) -> TrainResult:
        """The best model by valid NDCG@10, in eval mode; what stopped it if nothing else did."""
        result = self.result
        if not result.stopped:
            paused_by_steps = self.step_limit is not None and result.steps >= self.step_limit
            result.stopped = "max_steps" if paused_by_steps else "time budget"
            result.still_improving = (
                not paused_by_steps and self.since_best == 0 and len(result.epochs) > 1
            )
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        result.seconds = round(self.trained_seconds + self.setup_seconds, 2)
        return result

    def _validate(self, epoch: int, loss: float, seconds: float) -> tuple[float, bool]:
        """Score the weights and their running average on the valid cases; the better's score, and
        whether it was the average."""
        averaged_won = False
        if not self.valid_cases:
            valid = {"ndcg10": -loss}
        else:
            valid = evaluate(TransferScorer(self.model, self.table), self.valid_cases)
            if self.average is not None and self.averaged_steps:
                with self._averaged_weights():
                    averaged = evaluate(TransferScorer(self.model, self.table), self.valid_cases)
                averaged_won = averaged["ndcg10"] > valid["ndcg10"]
                scores = {"raw_ndcg10": valid["ndcg10"], "averaged_ndcg10": averaged["ndcg10"]}
                valid = {**(averaged if averaged_won else valid), **scores}
        self.result.epochs.append(EpochLog(epoch, loss, round(seconds, 2), valid))
        if self.progress:
            self.progress("valid", epoch, self.settings.max_epochs, valid)
        return valid["ndcg10"], averaged_won

    @contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """The model with its running-average weights, the raw ones put back after."""
        assert self.average is not None
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.params], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], saved)

    def _update_average(self, steps_per_epoch: int) -> None:
        """Fold the weights after a step into the average: the plain mean of the steps so far until
        there are `average_epochs` epochs of them, an exponential average with that horizon after."""
        if self.average is None:
            return
        self.averaged_steps += 1
        horizon = max(1.0, self.settings.average_epochs * steps_per_epoch)
        with torch.no_grad():
            torch._foreach_lerp_(
                self.average, [p.detach() for p in self.params], max(1.0 / horizon, 1.0 / self.averaged_steps)
            )

    def _paused(self) -> bool:
        over_steps = self.step_limit is not None and self.result.steps >= self.step_limit
        return over_steps or time.perf_counter() > self.deadline

    def _steps(self) -> Iterator[None]:
        """The training loop; yields whenever a slice ends (after validating)."""
        settings, model, result = self.settings, self.model, self.result
        check_started = time.perf_counter()
        for epoch in range(1, settings.max_epochs + 1):
            examples = epoch_examples(
                self.histories, self.table.scene_of, settings.max_history, settings.cold_probability, self.rng
            )
            batches = length_buckets(examples, settings.batch_users, self.rng)
            every = settings.valid_every or max(1, (len(batches) + 1) // 2)
            model.train()
            losses: list[float] = []
            for b, chosen in enumerate(batches):
                loss = self.loss_fn(collate([examples[i] for i in chosen]))
                for optimiser in self.optimisers:
                    optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.dense_params, 5.0)
                for optimiser in self.optimisers:
                    optimiser.step()
                self._update_average(len(batches))
                losses.append(loss.item())
                result.steps += 1
                if self.progress:
                    self.progress("train", b + 1, len(batches), {"epoch": epoch, "loss": losses[-1]})
                paused = self._paused()
                if not paused and (b + 1) % every and b + 1 < len(batches):
                    continue
                self.checks += 1
                score, averaged_won = self._validate(
                    self.checks, float(np.mean(losses)), time.perf_counter() - check_started
                )
                losses = []
                model.train()
                if score > self.best_score:
                    self.best_score, result.best_epoch = score, self.checks
                    with self._averaged_weights() if averaged_won else nullcontext():
                        self.best_state = copy.deepcopy(model.state_dict())
                smoothed = self.smoothed
                self.smoothed = score if not math.isfinite(smoothed) else (
                    settings.valid_smoothing * smoothed + (1 - settings.valid_smoothing) * score
                )
                if self.smoothed > self.best_smoothed:
                    self.best_smoothed, self.since_best = self.smoothed, 0
                else:
                    self.since_best += 1
                if self.since_best >= settings.patience:
                    result.stopped = "early stopping"
                    return
                if paused:
                    yield
                    check_started = time.perf_counter()
                    model.train()
                else:
                    check_started = time.perf_counter()
        result.stopped = "max_epochs"


def train_transfer(
    table: ItemTable,
    train_histories: Sequence[Sequence[str]],
    valid_cases: Sequence[CaseLike],
    settings: TransferSettings,
    *,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train one configuration on the histories' next items within `settings.max_minutes` (or
    `max_steps` optimiser steps, for tests); keep the validation with the best valid NDCG@10."""
    run = TrainingRun(table, train_histories, valid_cases, settings, progress=progress)
    run.advance(deadline=run.started + settings.max_minutes * 60, max_steps=max_steps)
    return run.finish()
