"""Rerank and explain: the LLM stage over retrieval's candidates, with every guarantee enforced in code.

Ranking starts from the recommender's own scores. Where `llm.rerank_weight` > 0 the LLM scores every
candidate (per-item yes/no log-probabilities, each item in its own prompt after the shared user prefix;
or one schema-constrained ordering) and the final score is
`(1 - w) * minmax(retrieval) + w * support`, where an item's support in [0, 1] is its own P(yes) (or
its position in the model's order), so a weak model can only move items as far as w lets it, and
nothing one item's text does changes another item's fused score. Only the shown items (at most
`llm.explain_items`) get an LLM explanation, which must cite a history item by alias; one with a wrong
format or citation is asked for once more, and an unusable one is replaced by a template built from the
evidence.

Guarantees, whatever the model says: the list holds only candidate ids of the target scene, each once,
every candidate ranked (what the model left out keeps its retrieval order), and every repair is counted
in `RerankResult.counters`. Item and user text reaches prompts only quoted (see `prompts.quote`), and
text that reads like an instruction to the model is withheld from prompts altogether.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from .. import prompts
from ..llm.base import BackendError, Conversation, LLMBackend
from ..models import Item, Recommendation, UserHistory
from ..settings import LLMSettings
from ..stores.text_profile_store import TextProfileStore
from ..text_safety import reads_like_instruction
from .parsing import clean_field, explain_schema, order_schema, parse_json_object
from .rephrase import GLUE, invented
from .rephrase import evidence_sentence as template_explanation  # kept when the LLM's sentence is not
from .text_profile import TextProfiler, UserContext, history_lines

YES_LABELS = ("yes", "Yes")
NO_LABELS = ("no", "No")
WITHHELD = prompts.WITHHELD
# answers with these problems are asked for once more; a retry prompt can fix a format, while an empty
# or copied reason from the same model and prompt would come back the same (those get the template)
FORMAT_PROBLEMS = ("it was not JSON", "it did not cite one of the liked items by its number")


class RerankCounters(BaseModel):
    """How often each repair or fallback happened; summed over users by `merge`."""

    model_config = ConfigDict(extra="forbid")

    users: int = 0
    candidates: int = 0
    wrong_scene_dropped: int = 0
    duplicates_dropped: int = 0
    text_withheld: int = 0
    llm_scored_users: int = 0
    label_failures: int = 0
    order_parse_failures: int = 0
    order_repaired_json: int = 0
    order_unknown_ids: int = 0
    order_duplicate_ids: int = 0
    order_missing_appended: int = 0
    explanation_calls: int = 0
    explanation_parse_failures: int = 0
    explanation_repaired_json: int = 0
    invalid_citations: int = 0
    empty_reasons: int = 0
    copied_reasons: int = 0
    off_topic_reasons: int = 0
    unsafe_reasons: int = 0
    truncated_reasons: int = 0
    invented_facts: int = 0  # the reason named an item, number or attribute not in its evidence
    regenerated: int = 0
    llm_explanations: int = 0
    template_explanations: int = 0
    profiles_written: int = 0
    profiles_cached: int = 0
    profiles_failed: int = 0

    def merge(self, other: RerankCounters) -> RerankCounters:
        """Field-wise sum."""
        return RerankCounters(
            **{name: getattr(self, name) + getattr(other, name) for name in type(self).model_fields}
        )

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v}


class RerankResult(BaseModel):
    """The reranked, explained list for one user, with what had to be repaired on the way."""

    recommendations: list[Recommendation]
    counters: RerankCounters
    profile: str | None = None
    llm_scores: dict[str, float] | None = None  # raw per-candidate LLM scores (None: not scored)
    rejected: dict[str, str] = {}  # item id -> why the LLM's sentence was not used, and the sentence
    backend: str
    model: str
    weight: float


@dataclass
class RerankRequest:
    """One user's candidates (best first, as retrieval ranked them) to rerank and explain."""

    subject: str  # user id or case id: the profile store's key
    history: UserHistory
    scene: str
    candidates: Sequence[Recommendation]
    k: int = 10
    items: Mapping[str, Item] = field(default_factory=dict)  # candidate texts, where known


@dataclass
class _State:
    request: RerankRequest
    counters: RerankCounters
    candidates: list[Recommendation]
    texts: dict[str, tuple[str, str]]  # item id -> (title, text) as prompts may show them
    context: UserContext | None = None
    profile: str | None = None
    llm_scores: list[float] | None = None  # raw: yes/no margins, or minus the position in the order
    llm_support: list[float] | None = None  # the same in [0, 1], what fusion uses
    withheld: set[str] = field(default_factory=set)
    order: list[int] = field(default_factory=list)
    fused: list[float] = field(default_factory=list)
    explanations: dict[str, str] = field(default_factory=dict)
    reasons: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)


class Reranker:
    """The LLM stage: profile, scores, fusion, explanations, for one user or many."""

    def __init__(
        self, backend: LLMBackend, settings: LLMSettings, profiles: TextProfileStore | None = None
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.profiler = TextProfiler(backend, settings, profiles)

    def rerank(self, request: RerankRequest, *, explain: bool = True) -> RerankResult:
        return self.rerank_many([request], explain=explain)[0]

    def rerank_many(
        self,
        requests: Sequence[RerankRequest],
        *,
        explain: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[RerankResult]:
        """Rerank many users; backends that batch get every user's prompts of a step in one call."""
        states = [self._prepare(r) for r in requests]
        for group in self._groups(states):
            self._text_profiles(group)
            for state in group:
                state.context = self._context(state)
            if self.settings.rerank_weight > 0:
                self._score(group)
            for state in group:
                self._fuse(state)
            if explain:
                self._explain(group)
            if progress is not None:
                progress(len(group))
        return [self._result(s, explain) for s in states]

    # --- steps ---

    def _groups(self, states: list[_State]) -> list[list[_State]]:
        # a backend that reuses a prefix only within one call gets one user per call
        if self.backend.batches and not self.backend.batch_per_user:
            return [states] if states else []
        return [[s] for s in states]

    def _prepare(self, request: RerankRequest) -> _State:
        counters = RerankCounters(users=1)
        kept: list[Recommendation] = []
        seen: set[str] = set()
        for rec in request.candidates:
            if rec.scene != request.scene:
                counters.wrong_scene_dropped += 1
            elif rec.item_id in seen:
                counters.duplicates_dropped += 1
            else:
                seen.add(rec.item_id)
                kept.append(rec)
        counters.candidates = len(kept)
        texts, withheld = {}, set()
        for rec in kept:
            item = request.items.get(rec.item_id)
            title, body = rec.title, item.text if item is not None else ""
            if reads_like_instruction(title):
                title = WITHHELD
                withheld.add(rec.item_id)
                counters.text_withheld += 1
            if body and reads_like_instruction(body):
                body = ""
                withheld.add(rec.item_id)
                counters.text_withheld += 1
            texts[rec.item_id] = (title, body)
        state = _State(request, counters, kept, texts)
        state.withheld = withheld
        return state

    def _text_profiles(self, group: list[_State]) -> None:
        if not self.settings.use_profile:
            return
        wanted = [s for s in group if s.request.history.entries and s.candidates]
        outcomes = self.profiler.profiles(
            [(s.request.subject, s.request.history, s.request.scene) for s in wanted]
        )
        for state, outcome in zip(wanted, outcomes):
            state.profile = outcome.text
            if outcome.cached:
                state.counters.profiles_cached += 1
            elif outcome.text is not None:
                state.counters.profiles_written += 1
            if outcome.failed:
                state.counters.profiles_failed += 1

    def _context(self, state: _State) -> UserContext:
        # evidence of the best candidates first, so the items an explanation may cite are in the prompt
        evidence: list[str] = []
        for rec in state.candidates:
            for e in rec.evidence:
                if e.item_id not in evidence:
                    evidence.append(e.item_id)
        evidence = evidence[: self.settings.history_items]
        lines = history_lines(state.request.history, self.settings.history_items, must_include=evidence)
        return UserContext(lines, profile=state.profile)

    def _candidate_task(self, state: _State, rec: Recommendation, template: str, **extra: Any) -> str:
        title, body = state.texts[rec.item_id]
        return prompts.render(
            template,
            scene=state.request.scene,
            title=prompts.quote(title, self.settings.item_chars),
            text=prompts.quote(body, self.settings.item_chars),
            **extra,
        )

    def _conversation(self, state: _State, task: str) -> Conversation:
        assert state.context is not None
        return state.context.conversation(task, self.settings.item_chars)

    def _score(self, group: list[_State]) -> None:
        active = [s for s in group if len(s.candidates) > 1]
        if not active:
            return
        method = self.settings.rerank_method
        if method == "labels" and not self.backend.supports_labels:
            method = "order"
        if method == "labels":
            self._score_labels(active)
            if not self.backend.supports_labels:  # the server turned out to give no log-probabilities
                self._score_order([s for s in active if s.llm_scores is None])
        else:
            self._score_order(active)

    def _score_labels(self, states: list[_State]) -> None:
        conversations, owners = [], []
        for state in states:
            for rec in state.candidates:
                conversations.append(
                    self._conversation(state, self._candidate_task(state, rec, "score_item.j2"))
                )
                owners.append(state)
        try:
            scores = self.backend.score_labels(conversations, YES_LABELS + NO_LABELS)
        except BackendError:
            for state in states:
                state.counters.label_failures += 1
            return
        position = 0
        for state in states:
            margins = []
            for row in scores[position : position + len(state.candidates)]:
                margins.append(
                    _logsumexp([row.get(x, -math.inf) for x in YES_LABELS])
                    - _logsumexp([row.get(x, -math.inf) for x in NO_LABELS])
                )
            position += len(state.candidates)
            if len(margins) != len(state.candidates) or not all(math.isfinite(m) for m in margins):
                state.counters.label_failures += 1
                continue
            state.llm_scores = margins
            state.llm_support = [1.0 / (1.0 + math.exp(-m)) for m in margins]  # P(yes) of a yes/no choice
            state.counters.llm_scored_users += 1

    def _score_order(self, states: list[_State]) -> None:
        conversations, schemas = [], []
        for state in states:
            aliases = [f"c{i}" for i in range(1, len(state.candidates) + 1)]
            listing = [
                {"alias": a, "title": prompts.quote(state.texts[r.item_id][0], self.settings.item_chars)}
                for a, r in zip(aliases, state.candidates)
            ]
            conversations.append(
                self._conversation(
                    state, prompts.render("rank_order.j2", scene=state.request.scene, candidates=listing)
                )
            )
            schemas.append(order_schema(aliases))
        max_tokens = max(4 * len(s.candidates) + 16 for s in states)
        try:
            answers = self.backend.generate_batch(conversations, schemas=schemas, max_tokens=max_tokens)
        except BackendError:
            answers = [""] * len(states)
        for state, answer in zip(states, answers):
            order = repair_order(answer, len(state.candidates), state.counters)
            n = len(state.candidates)
            state.llm_scores = [0.0] * n
            state.llm_support = [0.0] * n
            for rank, index in enumerate(order):
                state.llm_scores[index] = float(-rank)
                state.llm_support[index] = 1.0 - rank / max(n - 1, 1)
            state.counters.llm_scored_users += 1

    def _fuse(self, state: _State) -> None:
        retrieval = [r.raw_score if r.raw_score is not None else r.score for r in state.candidates]
        support = state.llm_support
        if support is not None:  # an item whose text tried to steer the model gets no LLM support
            support = [0.0 if r.item_id in state.withheld else v for r, v in zip(state.candidates, support)]
        weight = self.settings.rerank_weight if support is not None else 0.0
        state.fused = fuse_scores(retrieval, support, weight)
        state.order = sorted(range(len(state.candidates)), key=lambda i: (-state.fused[i], i))

    def _explain(self, group: list[_State]) -> None:
        jobs: list[tuple[_State, Recommendation, list[str]]] = []
        for state in group:
            shown = [state.candidates[i] for i in state.order[: state.request.k]]
            for rank, rec in enumerate(shown):
                if rank < self.settings.explain_items and state.context is not None and state.context.lines:
                    jobs.append((state, rec, self._allowed(state, rec)))
        if not jobs:
            return
        pending = [(job, self._explain_conversation(*job)) for job in jobs]
        for attempt in range(2):
            answers = self._generate(
                [c for _, c in pending],
                [explain_schema(j[2], self.settings.explanation_chars) for j, _ in pending],
            )
            retry = []
            for ((state, rec, allowed), conversation), answer in zip(pending, answers):
                state.counters.explanation_calls += 1
                text, problem = self._check(state, rec, allowed, answer)
                if text is not None:
                    state.explanations[rec.item_id] = text
                    state.counters.llm_explanations += 1
                    state.rejected.pop(rec.item_id, None)
                    continue
                state.rejected[rec.item_id] = f"{problem}: «{prompts.quote(answer, 300)}»"
                if attempt == 0 and problem in FORMAT_PROBLEMS:
                    state.counters.regenerated += 1
                    retry.append(
                        (
                            (state, rec, allowed),
                            conversation
                            + [
                                {"role": "assistant", "content": prompts.quote(answer, 300)},
                                {
                                    "role": "user",
                                    "content": prompts.render("retry.j2", problem=problem, allowed=allowed),
                                },
                            ],
                        )
                    )
            pending = retry
            if not pending:
                break

    def _generate(self, conversations: list[Conversation], schemas: list[dict]) -> list[str]:
        # the JSON around a reason costs ~12 tokens; a token is ~3.5 characters of English
        max_tokens = min(self.settings.max_tokens, self.settings.explanation_chars // 3 + 16)
        try:
            return self.backend.generate_batch(conversations, schemas=schemas, max_tokens=max_tokens)
        except BackendError:
            return [""] * len(conversations)

    def _allowed(self, state: _State, rec: Recommendation) -> list[str]:
        assert state.context is not None
        alias_of = state.context.alias_of
        allowed = [alias_of[e.item_id] for e in rec.evidence if e.item_id in alias_of]
        return allowed or [line.alias for line in state.context.lines]

    def _explain_conversation(self, state: _State, rec: Recommendation, allowed: list[str]) -> Conversation:
        evidence = template_explanation(rec, state.request.scene)  # the pieces the model may rephrase
        task = self._candidate_task(state, rec, "explain_item.j2", allowed=allowed, evidence=evidence)
        return self._conversation(state, task)

    def _check(
        self, state: _State, rec: Recommendation, allowed: list[str], answer: str
    ) -> tuple[str | None, str]:
        """The explanation sentence from an answer, or None and what was wrong with it."""
        assert state.context is not None
        counters = state.counters
        value, repaired = parse_json_object(answer)
        if value is None:
            counters.explanation_parse_failures += 1
            return None, FORMAT_PROBLEMS[0]
        if repaired:
            counters.explanation_repaired_json += 1
        cited = state.context.by_alias.get(str(value.get("because", "")).strip())
        if cited is None or cited.item_id not in set(state.request.history.item_ids):
            counters.invalid_citations += 1
            return None, FORMAT_PROBLEMS[1]
        reason, cut = clean_field(value.get("reason"), self.settings.explanation_chars)
        if cut:
            counters.truncated_reasons += 1
        if len(reason.split()) < 3:
            counters.empty_reasons += 1
            return None, "the reason was empty"
        if reads_like_instruction(reason):
            counters.unsafe_reasons += 1
            return None, "the reason was not about the item"
        lowered = _normal(reason)
        copies = {_normal(rec.title), _normal(cited.title)} | {_normal(x) for x in prompts.example_answers()}
        if lowered in copies or lowered in state.reasons:
            counters.copied_reasons += 1
            return None, "the reason was copied"
        title_words = _content_words(f"{rec.title} {state.texts[rec.item_id][1]} {cited.title}")
        reason_words = _content_words(reason)
        if reason_words and reason_words <= title_words:
            counters.copied_reasons += 1  # only words of the titles: it restates them
            return None, "the reason was copied"
        # "you liked the product" links nothing: glue words and scene names do not count as on topic
        generic = _content_words(" ".join([*GLUE, rec.scene, cited.scene]))
        if not (reason_words - generic) & title_words or reason.rstrip().endswith("?"):
            counters.off_topic_reasons += 1  # says nothing about either item, or asks instead
            return None, "the reason was not about the items"
        evidence_ids = {e.item_id for e in rec.evidence}
        others = [e.title for e in state.request.history.entries if e.item_id not in evidence_ids]
        evidence = template_explanation(rec, state.request.scene)  # what the model was asked to rephrase
        why = invented(reason, rec, others, state.texts[rec.item_id][1], evidence)
        if (evidence_ids and cited.item_id not in evidence_ids) or why is not None:
            counters.invented_facts += 1  # the template, built from the evidence alone, is kept
            return None, f"it named something that is not in the evidence ({why or 'a history item not cited'})"
        state.reasons.add(lowered)
        title = prompts.quote(cited.title, 80)
        return f"Because you liked «{title}» ({cited.scene}): {reason}", ""

    def _result(self, state: _State, explain: bool) -> RerankResult:
        k = state.request.k
        recommendations = []
        # the readable scores (percentiles) of the candidates, best first, follow the final order, so the
        # shown score stays in [0, 1] and falls with the rank; the fused score is the raw one
        readable = sorted((r.score for r in state.candidates), reverse=True)
        for position, index in enumerate(state.order[:k]):
            rec = state.candidates[index]
            explanation = state.explanations.get(rec.item_id)
            if explanation is None and explain:
                explanation = template_explanation(rec, state.request.scene)
                state.counters.template_explanations += 1
            recommendations.append(
                rec.model_copy(
                    update={"score": readable[position], "raw_score": round(state.fused[index], 6),
                            "explanation": explanation}
                )
            )
        scores = (
            {r.item_id: round(s, 6) for r, s in zip(state.candidates, state.llm_scores)}
            if state.llm_scores is not None
            else None
        )
        return RerankResult(
            recommendations=recommendations,
            counters=state.counters,
            profile=state.profile,
            llm_scores=scores,
            rejected=state.rejected,
            backend=self.backend.name,
            model=self.backend.model_name,
            weight=self.settings.rerank_weight if state.llm_scores is not None else 0.0,
        )


# --- pieces with no state, tested on their own ---


def fuse_scores(
    retrieval: Sequence[float], llm_support: Sequence[float] | None, weight: float
) -> list[float]:
    """(1 - w) * minmax(retrieval) + w * support, with each item's LLM support in [0, 1] on its own (a
    probability or an order position), so no item's LLM score changes another item's fused score."""
    base = _minmax(retrieval)
    if llm_support is None or weight <= 0:
        return base
    return [
        (1 - weight) * b + weight * min(max(e, 0.0), 1.0) if math.isfinite(e) else (1 - weight) * b
        for b, e in zip(base, llm_support)
    ]


def repair_order(answer: str, n: int, counters: RerankCounters) -> list[int]:
    """Candidate indexes in the model's order: unknown ids and repeats dropped, missing ones appended in
    retrieval order. Always a permutation of range(n)."""
    import re

    value, repaired = parse_json_object(answer)
    raw: list[Any]
    if value is not None and isinstance(value.get("order"), list):
        raw = value["order"]
        if repaired:
            counters.order_repaired_json += 1
    else:
        counters.order_parse_failures += 1
        raw = re.findall(r"\bc\d+\b", answer) if isinstance(answer, str) else []
    order: list[int] = []
    for alias in raw:
        match = re.fullmatch(r"c(\d+)", str(alias).strip())
        index = int(match.group(1)) - 1 if match else -1
        if not 0 <= index < n:
            counters.order_unknown_ids += 1
        elif index in order:
            counters.order_duplicate_ids += 1
        else:
            order.append(index)
    missing = [i for i in range(n) if i not in set(order)]
    counters.order_missing_appended += len(missing)
    return order + missing


def _minmax(values: Sequence[float]) -> list[float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [0.0] * len(values)
    low, high = min(finite), max(finite)
    span = high - low
    return [((v - low) / span if span > 0 else 0.0) if math.isfinite(v) else 0.0 for v in values]


def _logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


def _content_words(text: str) -> set[str]:
    """Words of four letters or more, lowercased, without a plural s: enough to tell on-topic text."""
    return {w.removesuffix("s") for w in _normal(text).split() if len(w) >= 4}


def _normal(text: str) -> str:
    return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


def rerank_batch(
    histories: Sequence[UserHistory],
    scene: str,
    candidates_per_user: Sequence[Sequence[Recommendation]],
    backend: LLMBackend,
    settings: LLMSettings,
    items: Mapping[str, Item],
    *,
    store: TextProfileStore | None = None,
    k: int = 10,
    explain: bool = True,
    subjects: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[RerankResult]:
    """The LLM stage for many users of one scene; `items` holds the candidates' texts, `store` the cached
    text profiles (used when `settings.use_profile`).

    Backends that batch (vLLM, a server) get all users' prompts of each step in one call; `progress` is
    called with the number of users finished after each group.
    """
    if len(histories) != len(candidates_per_user):
        raise ValueError("one candidate list per history")
    subjects = list(subjects) if subjects is not None else [h.user_id for h in histories]
    requests = [
        RerankRequest(subject=s, history=h, scene=scene, candidates=list(c), k=k, items=items)
        for s, h, c in zip(subjects, histories, candidates_per_user)
    ]
    return Reranker(backend, settings, store).rerank_many(requests, explain=explain, progress=progress)
