"""Choosing the transfer model's configuration per catalog on the valid split: successive halving.

A catalog whose item texts carry the signal and one whose signal is collaborative want different
models (measured: identity offsets, width and history length move valid NDCG@10 differently on
Arts–Office and on beauty-sports-toys), and no constant suits both. So `scenerec train` starts a few
configurations (`SEARCH_SPACE`, overrides of `TransferSettings`), trains each for a slice of the time
budget, keeps the better half by best valid NDCG@10 (mixed and cold averaged), and gives the survivors
the next slice, until one is left; it then trains until early stopping or the budget's end.

The budget is split evenly between rungs (the classic schedule): with four configurations, rung 0
gives each 1/12 of it, rung 1 each survivor 1/6 more, and the winner trains for 7/12 of the budget
in all. A run that early-stops frees its time for the others; a run stopped early stays comparable
(its best validation is what is ranked). All runs share the co-occurrence and text memories.

With `search_epochs` > 0 (off by default) each rung but the last is also capped in epochs (that many in rung 0, doubling each rung, as
successive halving doubles a survivor's resources). Where a catalog's epochs are short, the cap ends a
rung before its time share does, so configurations are compared after the same passes over the data,
and the choice no longer moves with the CPU's speed or load (measured before the cap: Arts–Office
chose `narrow` on one core and `default` on two, because on one core the wider model had trained half
the steps when it was ranked). Where epochs are long, the time share ends the rung first and
configurations are compared at equal time, as a time-budgeted search should.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..settings import TransferSettings
from .data import ItemTable
from .train import CaseLike, Memories, TrainingRun, TrainResult



def _narrow(s: TransferSettings) -> dict[str, Any]:
    hidden = max(s.heads, (s.hidden // 2) // s.heads * s.heads)
    return {"hidden": hidden}


# name -> the overrides it makes of the user's TransferSettings, relative to them ("default": none)
SEARCH_SPACE: Mapping[str, Callable[[TransferSettings], dict[str, Any]]] = {
    "default": lambda s: {},
    "text-only": lambda s: {"item_offsets": False},  # no learned identity: texts alone carry each item
    "narrow": _narrow,  # half the width: learns faster where users are few or time is short
    "short-history": lambda s: {"max_history": max(1, s.max_history * 2 // 5)},  # the recent past only
}


@dataclass
class Trial:
    """One configuration's part in the search."""

    name: str
    overrides: dict[str, Any]
    best_valid: float = -math.inf
    steps: int = 0
    seconds: float = 0.0
    rungs: int = 0  # how many rungs it was trained in
    steps_per_epoch: int = 0
    stopped: str = ""


@dataclass
class SearchResult:
    """The winner's training result, its configuration, and what every configuration reached."""

    result: TrainResult
    chosen: str
    settings: TransferSettings
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0


def configurations(settings: TransferSettings) -> dict[str, TransferSettings]:
    """The search's configurations, in `settings.search` order; one that equals an earlier one (say
    "text-only" where identity offsets are already off) is left out. Unknown names are an error."""
    unknown = [n for n in settings.search if n not in SEARCH_SPACE]
    if unknown:
        raise ValueError(f"transfer.search: unknown configuration(s) {unknown}; known: {list(SEARCH_SPACE)}")
    chosen: dict[str, TransferSettings] = {}
    for name in dict.fromkeys(settings.search or ["default"]):
        config = settings.model_copy(update=SEARCH_SPACE[name](settings))
        if all(config != other for other in chosen.values()):
            chosen[name] = config
    return chosen


def search_transfer(
    table: ItemTable,
    train_histories: Sequence[Sequence[str]],
    valid_cases: Sequence[CaseLike],
    settings: TransferSettings,
    *,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
    max_steps: int | None = None,
) -> SearchResult:
    """Successive halving over `configurations(settings)` inside `settings.max_minutes` (or
    `max_steps` optimiser steps in all, for tests). Without valid cases there is nothing to choose
    on: the first configuration is trained alone."""
    started = time.perf_counter()
    configs = configurations(settings)
    if not valid_cases:
        configs = dict(list(configs.items())[:1])
    budget = settings.max_minutes * 60
    rungs = max(1, math.ceil(math.log2(len(configs)))) + 1 if len(configs) > 1 else 1
    runs: dict[str, TrainingRun] = {}
    trials = {n: Trial(n, SEARCH_SPACE[n](settings)) for n in configs}
    memories: Memories | None = None
    alive = list(configs)
    for rung in range(rungs):
        rung_end = started + budget * (rung + 1) / rungs
        step_share = None if max_steps is None else max(1, max_steps // (rungs * len(alive)))
        # epochs in all at the rung's end: E, 3E, 7E, ... (each rung doubles what the one before gave)
        epoch_cap = settings.search_epochs * (2 ** (rung + 1) - 1) if rung < rungs - 1 else None
        for k, name in enumerate(alive):
            if name not in runs:
                reporter = _prefixed(progress, name) if len(configs) > 1 else progress
                runs[name] = TrainingRun(
                    table, train_histories, valid_cases, configs[name], progress=reporter, memories=memories
                )
                memories = runs[name].memories
            run = runs[name]
            left = len(alive) - k  # the rung's remaining time, shared by the runs still to go in it
            deadline = time.perf_counter() + max(0.0, rung_end - time.perf_counter()) / left
            limits = [] if step_share is None else [run.result.steps + step_share]
            if epoch_cap:
                limits.append(max(1, round(epoch_cap * run.steps_per_epoch)))
            run.advance(deadline=deadline, max_steps=min(limits) if limits else None)
            trial = trials[name]
            trial.best_valid, trial.steps = run.best_score, run.result.steps
            trial.seconds, trial.rungs = round(run.trained_seconds, 1), rung + 1
            trial.steps_per_epoch = run.steps_per_epoch
        if rung < rungs - 1:
            # ties keep the earlier configuration (the defaults first)
            ranked = sorted(alive, key=lambda n: (-runs[n].best_score, list(configs).index(n)))
            alive = ranked[: max(1, math.ceil(len(alive) / 2))]
            for name in ranked[len(alive):]:
                trials[name].stopped = runs.pop(name).result.stopped or "halved"  # frees its model
    chosen = alive[0]
    result = runs[chosen].finish()
    trials[chosen].stopped = result.stopped
    return SearchResult(
        result=result,
        chosen=chosen,
        settings=configs[chosen],
        trials=list(trials.values()),
        seconds=round(time.perf_counter() - started, 2),
    )


def _prefixed(
    progress: Callable[[str, int, int, dict[str, float]], None] | None, name: str
) -> Callable[[str, int, int, dict[str, float]], None] | None:
    if progress is None:
        return None

    def report(stage: str, done: int, total: int, info: dict[str, float]) -> None:
        progress(stage, done, total, {**info, "configuration": name})  # type: ignore[dict-item]

    return report
