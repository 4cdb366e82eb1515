"""The evaluation harness: every method, the same cases, the same exclusions, the same samples.

Settings (what a method sees):
- ``mixed``: the case's whole history (every scene);
- ``cold``: only the history items outside the target scene (pure cross-scene transfer).

Protocols (what the target is ranked against):
- ``full``: every item of the target scene;
- ``sampled``: the target plus 999 items drawn uniformly, without replacement, from the target scene
  minus the case's history (the same draw for every method and both settings: seeded by the run's
  seed and the case id).

In both settings and both protocols every item of the case's *whole* history is excluded from the
ranking (its score is set to -inf). A target that is itself in the history (a repeat purchase) therefore
cannot be hit: it counts as a miss and stays in the denominator; the report counts such cases. Ranks
follow the tie policy of `metrics.py` (expected metric under a uniform tie-break).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from tqdm import tqdm

from ..errors import ScenerecError
from ..models import Case
from .methods import BASELINES, EvalData, MethodUnavailableError, RankingMethod, make_method
from .metrics import METRICS, bootstrap_ci, case_metrics, paired_ratio_ci, target_positions, top_k_columns

Setting = Literal["mixed", "cold"]
Protocol = Literal["full", "sampled"]
SETTINGS: tuple[str, ...] = ("mixed", "cold")
SHIPPED = "shipped"  # the registered method that is what `recommend` ships (transfer_methods.py)
PROTOCOLS: tuple[str, ...] = ("full", "sampled")
OVERALL = "overall"
TOP_K = 10

TIE_POLICY = (
    "expected metric under a uniform random tie-break: a target tied with t other candidates, g candidates "
    "strictly above, is equally likely at positions g+1 … g+t+1 (mean rank 1 + g + t/2); excluded (-inf) "
    "candidates are never above the target"
)


class MetricValue(BaseModel):
    """A mean over cases with its bootstrap 95% interval."""

    mean: float
    low: float
    high: float


class InvalidCounts(BaseModel):
    """Problems found in the top-10 lists (structurally 0 for score-matrix methods)."""

    out_of_scene: int = 0
    duplicates: int = 0
    unknown_ids: int = 0
    in_history: int = 0
    short_lists: int = Field(0, description="Lists with fewer than 10 items (too few rankable items).")
    nan_scores: int = Field(0, description="Cases whose score row had NaN (ranked as -inf).")

    def add(self, other: InvalidCounts) -> InvalidCounts:
        return InvalidCounts(**{k: getattr(self, k) + getattr(other, k) for k in type(self).model_fields})

    @property
    def total_invalid(self) -> int:
        return self.out_of_scene + self.duplicates + self.unknown_ids + self.in_history


class SceneResult(BaseModel):
    """One method, setting and protocol, on the cases of one target scene (or all: `overall`)."""

    n_cases: int
    n_users: int
    metrics: dict[str, MetricValue]
    mean_rank: float = Field(description="Mean expected rank of the rankable targets.")
    coverage: float = Field(description="Share of the scene's items in at least one top-10 list.")
    mean_candidates: float = Field(description="Mean number of rankable candidates per case.")
    repeat_targets: int = Field(description="Targets in the case's history: excluded, so counted as misses.")
    empty_histories: int = Field(description="Cases where the method saw no known history item.")
    invalid: InvalidCounts


class MethodResult(BaseModel):
    method: str
    setting: str
    protocol: str
    scenes: dict[str, SceneResult]  # each target scene, then "overall" (all cases pooled)
    seconds: float = Field(description="Scoring time of this setting (shared by both protocols).")
    # per scene: each case's metric values and user, in case order; kept only in the measuring process
    _per_case: dict[str, tuple[dict[str, np.ndarray], list[str]]] = PrivateAttr(default_factory=dict)


class Comparison(BaseModel):
    """One method's metric over a baseline's on the same cases, with a paired bootstrap interval. Over a
    baseline that scored 0 the ratio is infinite (written `Infinity` in JSON) or NaN (both 0)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    method: str
    baseline: str
    setting: str
    protocol: str
    scene: str
    metric: str
    ratio: float = Field(description="mean(method) / mean(baseline) over the same cases.")
    low: float
    high: float
    n_cases: int


class SceneSummary(BaseModel):
    items: int
    cases: int
    repeat_targets: int
    unknown_targets: int


class EvalReport(BaseModel):
    """Everything one evaluation run measured; `report.json` is this model."""

    split: str
    seed: int
    n_bootstrap: int
    settings: list[str]
    protocols: list[str]
    methods: list[str]
    skipped: dict[str, str] = Field(default_factory=dict, description="method -> why it did not run")
    n_cases: int
    sampled_negatives: int
    scenes: dict[str, SceneSummary]
    tie_policy: str = TIE_POLICY
    notes: list[str] = Field(default_factory=list)
    fit_seconds: dict[str, float] = Field(default_factory=dict)
    seconds: float = 0.0
    results: list[MethodResult] = Field(default_factory=list)
    shipped: str | None = Field(
        None, description="The evaluated method that `recommend` ships (None: it was not evaluated)."
    )
    comparisons: list[Comparison] = Field(
        default_factory=list,
        description="Each method that is not a baseline against the best baseline (by NDCG@10) of every "
        "setting, protocol and scene, paired on the same cases.",
    )

    def result(self, method: str, setting: str, protocol: str) -> MethodResult:
        for r in self.results:
            if (r.method, r.setting, r.protocol) == (method, setting, protocol):
                return r
        raise KeyError((method, setting, protocol))

    def compare(
        self, method: str, baseline: str, setting: str, protocol: str, scene: str, metric: str = "ndcg@10"
    ) -> Comparison:
        """`method` against `baseline` on the same cases: the ratio of their means and its 95% interval
        from resampling users, both methods on every resample (a paired bootstrap, `n_bootstrap`
        resamples, the run's seed). Needs the per-case values, which only the evaluating process has."""
        ours, theirs = self.result(method, setting, protocol), self.result(baseline, setting, protocol)
        if scene not in ours._per_case or scene not in theirs._per_case:
            raise ScenerecError(
                f"no per-case values for {method!r} and {baseline!r} in scene {scene!r}: a report read back "
                "from report.json has only the summaries; compare in the process that ran `evaluate`"
            )
        (our_values, users), (their_values, _) = ours._per_case[scene], theirs._per_case[scene]
        if metric not in our_values:
            raise ScenerecError(f"unknown metric {metric!r} (choose from {', '.join(our_values)})")
        ratio, low, high = paired_ratio_ci(
            our_values[metric], their_values[metric], users, n_bootstrap=self.n_bootstrap, seed=self.seed
        )
        return Comparison(
            method=method, baseline=baseline, setting=setting, protocol=protocol, scene=scene, metric=metric,
            ratio=round(ratio, 6), low=round(low, 6), high=round(high, 6), n_cases=len(users),
        )

    def numbers(self) -> dict[str, object]:
        """The measured numbers only (no timings): equal for equal seeds."""
        return {
            f"{r.method}/{r.setting}/{r.protocol}": {s: v.model_dump() for s, v in r.scenes.items()}
            for r in self.results
        }


@dataclass
class PreparedCase:
    """One case resolved against the evaluation data."""

    case: Case
    scene: str
    mixed: list[str]  # known history items, in order
    cold: list[str]  # of those, the ones outside the target scene
    excluded: np.ndarray  # columns of the target scene that are in the history
    target_col: int  # -1 when the target is not an item of the scene
    repeat: bool
    sample: np.ndarray  # sampled protocol: candidate columns, target first (when known)


def prepare_cases(data: EvalData, cases: Sequence[Case], seed: int, negatives: int) -> list[PreparedCase]:
    """Resolve each case once: both settings' histories, excluded columns, target column, sample."""
    prepared = []
    for case in cases:
        scene = case.target_scene
        columns = data.scene_column[scene]
        mixed = [i for i in case.history if i in data.item_scene]
        cold = [i for i in mixed if data.item_scene[i] != scene]
        excluded = np.array(sorted({columns[i] for i in case.history if i in columns}), dtype=np.int64)
        target_col = columns.get(case.target_item, -1)
        allowed = np.ones(len(columns), dtype=bool)
        allowed[excluded] = False
        if target_col >= 0:
            allowed[target_col] = False
        pool = np.flatnonzero(allowed)
        rng = np.random.default_rng([seed, zlib.crc32(case.case_id.encode("utf-8"))])
        drawn = np.sort(rng.choice(pool, size=min(negatives, len(pool)), replace=False))
        sample = np.concatenate([[target_col], drawn]) if target_col >= 0 else drawn
        prepared.append(
            PreparedCase(
                case=case, scene=scene, mixed=mixed, cold=cold, excluded=excluded, target_col=target_col,
                repeat=case.target_item in case.history, sample=sample.astype(np.int64),
            )
        )
    return prepared


@dataclass
class _Outcome:
    """Per-case results of one method, setting and protocol, in prepared-case order."""

    metrics: dict[str, np.ndarray]
    rank: np.ndarray
    candidates: np.ndarray
    top: list[list[str]]
    empty: np.ndarray
    nan: np.ndarray


def _check_lists(
    top: Sequence[Sequence[str]], cases: Sequence[PreparedCase], data: EvalData, k: int
) -> InvalidCounts:
    """Count out-of-scene, duplicate, unknown and already-owned ids, and short lists, in top-k lists."""
    counts = InvalidCounts()
    for ids, pc in zip(top, cases):
        history = set(pc.case.history)
        counts.unknown_ids += sum(1 for i in ids if i not in data.item_scene)
        counts.out_of_scene += sum(1 for i in ids if i in data.item_scene and data.item_scene[i] != pc.scene)
        counts.duplicates += len(ids) - len(set(ids))
        counts.in_history += sum(1 for i in ids if i in history)
        counts.short_lists += len(ids) < k
    return counts


def _score_batch(
    method: RankingMethod, batch: Sequence[PreparedCase], scene: str, setting: str, n_items: int
) -> np.ndarray:
    histories = [pc.mixed if setting == "mixed" else pc.cold for pc in batch]
    scores = np.array(method.score(histories, scene), dtype=np.float64)  # a copy: masked below
    if scores.shape != (len(batch), n_items):
        raise ScenerecError(
            f"method {method.name!r} returned scores of shape {scores.shape} for {len(batch)} histories "
            f"and {n_items} items of scene {scene!r}"
        )
    return scores


def _run_setting(
    method: RankingMethod,
    data: EvalData,
    cases: Sequence[PreparedCase],
    setting: str,
    protocols: Sequence[str],
    batch_size: int,
    bar: tqdm,
) -> dict[str, _Outcome]:
    n = len(cases)
    outcomes = {
        p: _Outcome(
            metrics={m: np.zeros(n) for m in METRICS}, rank=np.full(n, np.inf), candidates=np.zeros(n),
            top=[[] for _ in range(n)], empty=np.zeros(n, dtype=bool), nan=np.zeros(n, dtype=bool),
        )
        for p in protocols
    }
    by_scene: dict[str, list[int]] = {}
    for position, pc in enumerate(cases):
        by_scene.setdefault(pc.scene, []).append(position)
    for scene, positions in by_scene.items():
        ids = data.scene_item_ids[scene]
        for start in range(0, len(positions), batch_size):
            where = positions[start : start + batch_size]
            batch = [cases[p] for p in where]
            scores = _score_batch(method, batch, scene, setting, len(ids))
            nan = np.isnan(scores).any(axis=1)
            scores[np.isnan(scores)] = -np.inf
            for row, pc in enumerate(batch):
                scores[row, pc.excluded] = -np.inf
            empty = np.array([not (pc.mixed if setting == "mixed" else pc.cold) for pc in batch])
            for protocol in protocols:
                if protocol == "full":
                    view = scores
                    target = np.array([pc.target_col for pc in batch])
                    columns = None
                else:
                    width = max(len(pc.sample) for pc in batch)
                    columns = np.full((len(batch), width), -1, dtype=np.int64)
                    for row, pc in enumerate(batch):
                        columns[row, : len(pc.sample)] = pc.sample
                    view = np.take_along_axis(scores, np.maximum(columns, 0), axis=1)
                    view[columns < 0] = -np.inf
                    target = np.array([0 if pc.target_col >= 0 else -1 for pc in batch])
                greater, ties, rankable = target_positions(view, target)
                per_case = case_metrics(greater, ties, rankable)
                top_cols = top_k_columns(view, TOP_K)
                out = outcomes[protocol]
                for name in METRICS:
                    out.metrics[name][where] = per_case[name]
                out.rank[where] = np.where(rankable, 1.0 + greater + ties / 2.0, np.inf)
                out.candidates[where] = np.isfinite(view).sum(axis=1)
                out.empty[where] = empty
                out.nan[where] = nan
                for row, p in enumerate(where):
                    cols = top_cols[row] if columns is None else columns[row, top_cols[row]]
                    out.top[p] = [ids[c] for c in cols]
            bar.update(len(batch))
    return outcomes


def _summarise(
    outcome: _Outcome,
    cases: Sequence[PreparedCase],
    positions: Sequence[int],
    data: EvalData,
    scenes: Sequence[str],
    seed: int,
    n_bootstrap: int,
) -> SceneResult:
    where = np.asarray(positions, dtype=np.int64)
    chosen = [cases[p] for p in where]
    users = [pc.case.user_id for pc in chosen]
    metrics = {}
    for name in METRICS:
        values = outcome.metrics[name][where]
        mean, low, high = bootstrap_ci(values, users, n_bootstrap=n_bootstrap, seed=seed)
        metrics[name] = MetricValue(mean=round(mean, 6), low=round(low, 6), high=round(high, 6))
    ranks = outcome.rank[where]
    finite = ranks[np.isfinite(ranks)]
    shown = {i for p in where for i in outcome.top[p]}
    n_items = sum(len(data.scene_item_ids[s]) for s in scenes)
    invalid = _check_lists([outcome.top[p] for p in where], chosen, data, TOP_K)
    invalid.nan_scores = int(outcome.nan[where].sum())
    return SceneResult(
        n_cases=len(where),
        n_users=len(set(users)),
        metrics=metrics,
        mean_rank=round(float(finite.mean()), 3) if len(finite) else float("inf"),
        coverage=round(len(shown & {i for s in scenes for i in data.scene_item_ids[s]}) / max(n_items, 1), 6),
        mean_candidates=round(float(outcome.candidates[where].mean()), 3) if len(where) else 0.0,
        repeat_targets=sum(pc.repeat for pc in chosen),
        empty_histories=int(outcome.empty[where].sum()),
        invalid=invalid,
    )


def _select_cases(cases: list[Case], max_cases: int | None, seed: int) -> list[Case]:
    """All cases, or a seeded subset of `max_cases` of them (kept in case-id order)."""
    if max_cases is None or max_cases >= len(cases):
        return cases
    keep = np.sort(np.random.default_rng(seed).choice(len(cases), size=max_cases, replace=False))
    return [cases[i] for i in keep]


def evaluate(
    data: EvalData,
    methods: Sequence[str | RankingMethod],
    split: str = "test",
    settings: Sequence[str] = SETTINGS,
    protocols: Sequence[str] = PROTOCOLS,
    seed: int = 0,
    n_bootstrap: int = 1000,
    max_cases: int | None = None,
    *,
    batch_size: int = 256,
    sampled_negatives: int = 999,
    progress: bool = False,
) -> EvalReport:
    """Run every method on the split's cases in every setting and protocol; return the report.

    `data` is built for the same split (`EvalData.from_recommender(rec, split)` reads an open
    Recommender's stores). Methods are registered
    names (see `methods.METHODS`) or RankingMethod instances; a registered method that cannot run here
    (module or checkpoint missing) is skipped and named in `report.skipped`.
    """
    started = time.perf_counter()
    for value, allowed, what in ((settings, SETTINGS, "setting"), (protocols, PROTOCOLS, "protocol")):
        unknown = [v for v in value if v not in allowed]
        if unknown or not value:
            raise ScenerecError(f"unknown {what} {unknown} (choose from {', '.join(allowed)})")
    if data.split != split:
        raise ScenerecError(f"the evaluation data was built for split {data.split!r}, not {split!r}")
    known_scenes = set(data.scenes)
    all_cases = [c for c in data.cases if c.split == split]
    unknown_scene = [c for c in all_cases if c.target_scene not in known_scenes]
    if not all_cases:
        raise ScenerecError(f"no cases for split {split!r}: ingest a catalog with cases.jsonl")
    if unknown_scene:
        raise ScenerecError(
            f"{len(unknown_scene)} cases target scenes not in the catalog, e.g. {unknown_scene[0].case_id} "
            f"-> {unknown_scene[0].target_scene!r}"
        )
    cases = prepare_cases(data, _select_cases(all_cases, max_cases, seed), seed, sampled_negatives)
    scenes = sorted({pc.scene for pc in cases})
    summaries = {
        s: SceneSummary(
            items=len(data.scene_item_ids[s]),
            cases=sum(pc.scene == s for pc in cases),
            repeat_targets=sum(pc.repeat and pc.scene == s for pc in cases),
            unknown_targets=sum(pc.target_col < 0 and pc.scene == s for pc in cases),
        )
        for s in scenes
    }
    report = EvalReport(
        split=split, seed=seed, n_bootstrap=n_bootstrap, settings=list(settings), protocols=list(protocols),
        methods=[], n_cases=len(cases), sampled_negatives=sampled_negatives, scenes=summaries,
    )
    resolved: list[RankingMethod] = []
    for entry in methods:
        if isinstance(entry, RankingMethod):
            resolved.append(entry)
            continue
        try:
            resolved.append(make_method(entry))
        except MethodUnavailableError as exc:
            report.skipped[entry] = str(exc)

    positions = {s: [p for p, pc in enumerate(cases) if pc.scene == s] for s in scenes}
    positions[OVERALL] = list(range(len(cases)))
    bar = tqdm(
        total=len(resolved) * len(settings) * len(cases), desc="evaluating", unit="case",
        disable=not progress, leave=False,
    )
    try:
        for method in resolved:
            name = method.name
            bar.set_postfix_str(f"{name}: fit")
            fit_started = time.perf_counter()
            try:
                method.fit(data)
            except MethodUnavailableError as exc:
                report.skipped[name] = str(exc)
                bar.update(len(settings) * len(cases))
                continue
            report.fit_seconds[name] = round(time.perf_counter() - fit_started, 3)
            report.methods.append(name)
            for setting in settings:
                bar.set_postfix_str(f"{name}: {setting}")
                setting_started = time.perf_counter()
                outcomes = _run_setting(method, data, cases, setting, protocols, batch_size, bar)
                seconds = round(time.perf_counter() - setting_started, 3)
                for protocol in protocols:
                    results = {
                        s: _summarise(
                            outcomes[protocol], cases, positions[s], data,
                            scenes if s == OVERALL else [s], seed, n_bootstrap,
                        )
                        for s in [*scenes, OVERALL]
                    }
                    result = MethodResult(
                        method=name, setting=setting, protocol=protocol, scenes=results, seconds=seconds
                    )
                    result._per_case = {
                        s: (
                            {m: outcomes[protocol].metrics[m][positions[s]] for m in METRICS},
                            [cases[p].case.user_id for p in positions[s]],
                        )
                        for s in [*scenes, OVERALL]
                    }
                    report.results.append(result)
    finally:
        bar.close()
    report.comparisons = _against_best_baseline(report, [*scenes, OVERALL])
    report.shipped = SHIPPED if SHIPPED in report.methods else None
    report.notes = _notes(report)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _against_best_baseline(
    report: EvalReport, scenes: Sequence[str], metric: str = "ndcg@10"
) -> list[Comparison]:
    baselines = [m for m in report.methods if m in BASELINES]
    challengers = [m for m in report.methods if m not in BASELINES]
    if not baselines:
        return []
    comparisons = []
    for setting in report.settings:
        for protocol in report.protocols:
            for scene in scenes:
                best = max(
                    baselines,
                    key=lambda b: report.result(b, setting, protocol).scenes[scene].metrics[metric].mean,
                )
                comparisons += [report.compare(m, best, setting, protocol, scene, metric) for m in challengers]
    return comparisons


def _notes(report: EvalReport) -> list[str]:
    repeats = sum(s.repeat_targets for s in report.scenes.values())
    unknown = sum(s.unknown_targets for s in report.scenes.values())
    notes = [
        "settings: mixed = the whole case history; cold = only history items outside the target scene.",
        "protocols: full = every item of the target scene; sampled = the target plus "
        f"{report.sampled_negatives} items drawn uniformly from the target scene minus the case history "
        f"(seed {report.seed} and the case id; the same draw for every method and setting).",
        "every history item (whole history, both settings) is excluded from the ranking.",
        f"{repeats} of {report.n_cases} targets are in their case's history (repeat purchases): they are "
        "excluded like every history item, so they count as misses and stay in the denominator.",
        f"ties: {report.tie_policy}.",
        f"95% intervals: percentile bootstrap over users ({report.n_bootstrap} resamples, "
        f"seed {report.seed}); "
        "a user's cases are resampled together since they share a history.",
        "coverage: share of the scene's items appearing in at least one top-10 list.",
    ]
    if unknown:
        notes.append(f"{unknown} targets are not items of their scene: counted as misses.")
    return notes
