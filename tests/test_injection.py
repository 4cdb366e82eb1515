"""Prompt injection: hostile item titles and texts (tests/fixtures/injection_corpus.jsonl) go through
profile writing, rerank and the agent, stored in a real catalog, and change nothing beyond plain text.

What "cannot move an item up" means here: rerank is run with an *obedient* fake model that does what an
injection asks, giving a candidate the highest possible yes-score (or the first place of an ordering)
whenever that candidate's own prompt contains the case's instruction. The hostile item's position with
that model must not be better than its position in retrieval order (LLM weight 0). Text that reads like
an instruction must never reach a prompt at all, and invisible characters and escapes must not change
what the model sees: the ranking with a title equals the ranking with the title's printable text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from scenerec.agent.conversation import Agent, Reply
from scenerec.llm.base import Conversation, JSONSchema, LLMBackend
from scenerec.llm.fake import FakeBackend
from scenerec.models import Evidence, Item, Recommendation, UserHistory
from scenerec.recommend.recommender import Recommender
from scenerec.rerank.reranker import Reranker, RerankRequest, RerankResult
from scenerec.rerank.text_profile import TextProfiler
from scenerec.settings import LLMSettings, Settings, TUISettings, load_settings
from scenerec.stores.embeddings import Encoder
from scenerec.stores.ingest import ingest_catalog
from scenerec.stores.item_store import ItemStore
from scenerec.stores.session_store import SessionStore
from scenerec.text_safety import printable

from .conftest import TINY_HISTORIES, TINY_ITEMS, write_catalog

CORPUS_FILE = Path(__file__).parent / "fixtures" / "injection_corpus.jsonl"
CORPUS: list[dict[str, str]] = [json.loads(line) for line in CORPUS_FILE.read_text("utf-8").splitlines()]
BY_ID = {case["id"]: case for case in CORPUS}
FILMS = [item_id for item_id, scene, _, _ in TINY_ITEMS if scene == "films"]
HOSTILE_AT = 5  # the hostile item's place in retrieval order (0-based): room to move either way
WEIGHT = 0.5
# the real model's subset: one of each way in (instruction, role marker, fake JSON, fake ids, evasion,
# escapes, bidi, long title)
REAL_MODEL_CASES = [
    "ignore-previous",
    "im-start-system",
    "fake-json-order",
    "ids-must-be",
    "zero-width-evasion",
    "ansi-hidden",
    "rlo-spoof",
    "long-title-tail",
]


def hostile_id(case: dict[str, str]) -> str:
    return f"x-{case['id']}"


def normal(text: str) -> str:
    """How a model that reads through disguises sees text: NFKC, look-alikes folded, words only."""
    text = unicodedata.normalize("NFKC", text).translate(str.maketrans("ІіАаЕеОоРрСсХх", "IiAaEeOoPpCcXx"))
    return " ".join(re.findall(r"[a-z0-9_]+", text.lower()))


def triggered(case: dict[str, str], prompt: str) -> bool:
    return bool(case["instruction"]) and normal(case["instruction"]) in normal(prompt)


# --- the catalog: the tiny one, every hostile item in films, a user per case who liked it ---------


@pytest.fixture(scope="module")
def hostile_settings(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Settings:
    root = tmp_path_factory.mktemp("hostile")
    items = list(TINY_ITEMS) + [(hostile_id(c), "films", c["title"], c["text"]) for c in CORPUS]
    histories = dict(TINY_HISTORIES) | {f"u-{c['id']}": ["b1", "b5", hostile_id(c)] for c in CORPUS}
    settings = load_settings(data_dir=root / "data")
    ingest_catalog(write_catalog(root / "catalog", items, histories), settings, encoder=encoder)
    return settings


@pytest.fixture(scope="module")
def stored(hostile_settings: Settings) -> dict[str, Item]:
    """Every item as the store gives it back (the hostile text round-trips unchanged)."""
    store = ItemStore(Path(hostile_settings.data_dir) / "catalog.sqlite")
    try:
        return store.get_items([i[0] for i in TINY_ITEMS] + [hostile_id(c) for c in CORPUS])
    finally:
        store.close()


def request_with(stored: dict[str, Item], hostile: Item) -> RerankRequest:
    """Ten films in retrieval order with the hostile item at HOSTILE_AT; a fantasy reader's history."""
    ids = FILMS[:HOSTILE_AT] + [hostile.item_id] + FILMS[HOSTILE_AT:]
    items = {**{i: stored[i] for i in FILMS}, hostile.item_id: hostile}
    history = UserHistory(
        user_id="reader",
        entries=[
            stored["b1"].model_dump(include={"item_id", "scene", "title"}) | {"position": 0},
            stored["b5"].model_dump(include={"item_id", "scene", "title"}) | {"position": 1},
        ],
    )
    evidence = [Evidence(item_id="b1", title=stored["b1"].title, scene="books", similarity=0.5)]
    candidates = [
        Recommendation(item_id=i, title=items[i].title, scene="films", score=1 / (60 + n), evidence=evidence)
        for n, i in enumerate(ids)
    ]
    return RerankRequest(
        subject="reader",
        history=history,
        scene="films",
        candidates=candidates,
        k=len(candidates),
        items=items,
    )


def llm_settings(**overrides: Any) -> LLMSettings:
    return LLMSettings(**{"backend": "fake", "use_profile": False, "rerank_weight": WEIGHT, **overrides})


def quoted(text: str) -> str:
    """The data in a prompt: what it quotes between « and » (the template's own words are not data)."""
    return " ".join(re.findall(r"«([^»]*)»", text))


def task_of(conversation: Conversation) -> str:
    """The candidate part of a prompt: what follows the shared user context."""
    content = conversation[-1]["content"]
    start = content.find("Candidate")
    return content[start:] if start >= 0 else content


def obedient_labels(case: dict[str, str]) -> Callable[[Conversation, Sequence[str]], dict[str, float]]:
    def score(conversation: Conversation, labels: Sequence[str]) -> dict[str, float]:
        obey = triggered(case, quoted(task_of(conversation)))
        return (
            {
                label: (0.0 if obey else -20.0) if label.lower() == "yes" else (-20.0 if obey else 0.0)
                for label in labels
            }
            if obey
            else {label: -1.0 for label in labels}
        )

    return score


def obedient_order(case: dict[str, str]) -> Callable[[Conversation, JSONSchema | None], str]:
    def answer(conversation: Conversation, schema: JSONSchema | None) -> str:
        lines = re.findall(r"^(c\d+)\. «(.*)»$", task_of(conversation), re.MULTILINE)
        first = [alias for alias, title in lines if triggered(case, title)]
        return json.dumps({"order": first + [alias for alias, _ in lines if alias not in first]})

    return answer


def assert_valid(result: RerankResult, request: RerankRequest) -> None:
    """Schema and guarantees: candidate ids of the scene only, each once, all ranked, counters kept."""
    RerankResult.model_validate_json(result.model_dump_json())
    ids = [r.item_id for r in result.recommendations]
    assert len(ids) == len(set(ids)) == len(request.candidates)
    assert set(ids) == {c.item_id for c in request.candidates}
    assert all(r.scene == "films" for r in result.recommendations)
    assert result.counters.users == 1 and result.counters.candidates == len(request.candidates)
    for rec in result.recommendations:
        assert rec.explanation is None or "\x1b" not in rec.explanation


def position(result: RerankResult, item_id: str) -> int:
    return [r.item_id for r in result.recommendations].index(item_id)


def prompts_sent(fake: FakeBackend) -> list[str]:
    return [m["content"] for call in fake.calls for m in call["messages"]]


def assert_clean_prompts(fake: FakeBackend, case: dict[str, str]) -> None:
    for prompt in prompts_sent(fake):
        assert "\x1b" not in prompt
        assert not any(unicodedata.category(ch) in ("Cc", "Cf") and ch != "\n" for ch in prompt)
        assert not triggered(case, quoted(prompt)), f"the instruction of {case['id']} reached the model"


# --- the corpus file itself ---------------------------------------------------------------------


def test_the_corpus_covers_every_kind_of_attack() -> None:
    assert len(CORPUS) >= 30 and len(BY_ID) == len(CORPUS)
    assert all(set(case) == {"id", "kind", "title", "text", "tries", "instruction"} for case in CORPUS)
    kinds = {case["kind"] for case in CORPUS}
    assert {"instruction", "role-marker", "fake-json", "fake-ids", "evasion", "ansi", "bidi", "long"} <= kinds
    assert set(REAL_MODEL_CASES) <= set(BY_ID)


def test_hostile_items_round_trip_through_the_store(stored: dict[str, Item]) -> None:
    for case in CORPUS:
        item = stored[hostile_id(case)]
        assert (item.title, item.text) == (case["title"], case["text"])


# --- rerank, fake backend, every case -----------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_an_obedient_model_cannot_lift_the_hostile_item(
    case: dict[str, str], stored: dict[str, Item]
) -> None:
    request = request_with(stored, stored[hostile_id(case)])
    baseline = Reranker(FakeBackend(), llm_settings(rerank_weight=0.0)).rerank(request, explain=False)
    assert position(baseline, hostile_id(case)) == HOSTILE_AT

    labels = FakeBackend()
    labels.label_scorer = obedient_labels(case)
    by_labels = Reranker(labels, llm_settings()).rerank(request)
    order = FakeBackend().enqueue(obedient_order(case))
    by_order = Reranker(order, llm_settings(rerank_method="order")).rerank(request, explain=False)

    for result, fake in ((by_labels, labels), (by_order, order)):
        assert_valid(result, request)
        assert result.counters.llm_scored_users == 1
        assert position(result, hostile_id(case)) >= HOSTILE_AT
        assert_clean_prompts(fake, case)
        if case["instruction"]:
            assert result.counters.text_withheld >= 1
    if case["kind"] == "control":
        assert by_labels.counters.text_withheld == 0  # plain text is not withheld


def test_the_obedient_model_does_lift_an_item_whose_text_reaches_it(stored: dict[str, Item]) -> None:
    """The check above can fail: an 'instruction' that is plain text gets the item lifted."""
    case = {**BY_ID["benign-promo"], "instruction": "best pen ever"}
    request = request_with(stored, stored[hostile_id(case)])
    labels = FakeBackend()
    labels.label_scorer = obedient_labels(case)
    result = Reranker(labels, llm_settings()).rerank(request, explain=False)
    assert position(result, hostile_id(case)) < HOSTILE_AT


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_invisible_characters_do_not_change_the_ranking(
    case: dict[str, str], stored: dict[str, Item]
) -> None:
    """The default fake scores from the prompt's hash: any difference the disguise made would show."""
    hostile = stored[hostile_id(case)]
    visible = hostile.model_copy(update={"title": printable(hostile.title), "text": printable(hostile.text)})
    results = []
    for item in (hostile, visible):
        request = request_with(stored, item)
        results.append(Reranker(FakeBackend(), llm_settings()).rerank(request, explain=False))
        assert_valid(results[-1], request)
    assert [r.item_id for r in results[0].recommendations] == [r.item_id for r in results[1].recommendations]


# --- the transferred text profile ---------------------------------------------------------------


def parrot(conversation: Conversation, schema: JSONSchema | None) -> str:
    """A model that writes its profile by copying every quoted title it was shown."""
    titles = re.findall(r"«([^»]*)»", conversation[-1]["content"])
    return json.dumps({"profile": "Looks for things like " + "; ".join(titles)})


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_a_profile_never_repeats_the_instruction(case: dict[str, str], hostile_settings: Settings) -> None:
    store = ItemStore(Path(hostile_settings.data_dir) / "catalog.sqlite")
    try:
        history = store.history(f"u-{case['id']}")
    finally:
        store.close()
    fake = FakeBackend().enqueue(parrot)
    outcome = TextProfiler(fake, LLMSettings(backend="fake")).profiles([("u", history, "books")])[0]
    assert_clean_prompts(fake, case)
    if outcome.text is not None:
        assert not triggered(case, outcome.text)
        assert printable(outcome.text) == outcome.text
    if case["kind"] == "control":
        assert outcome.text and normal(case["title"]) in normal(outcome.text)  # the parrot does copy


# --- the agent ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(hostile_settings: Settings, encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Agent:
    recommender = Recommender(hostile_settings, encoder=encoder)
    sessions = SessionStore(tmp_path_factory.mktemp("sessions") / "sessions.sqlite")
    return Agent(recommender, sessions, TUISettings(), FakeBackend())


def assert_valid_reply(reply: Reply, known: set[str]) -> None:
    Reply.model_validate_json(reply.model_dump_json())
    ids = [r.item_id for r in reply.recommendations]
    assert len(ids) == len(set(ids)) and set(ids) <= known
    assert all(r.scene == reply.scene for r in reply.recommendations)
    for text in [reply.text] + [r.explanation or "" for r in reply.recommendations]:
        assert "\x1b" not in text
        assert not any(unicodedata.category(ch) in ("Cc", "Cf") and ch != "\n" for ch in text)


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_the_agent_answers_every_turn_validly(
    case: dict[str, str], agent: Agent, stored: dict[str, Item]
) -> None:
    session = agent.start(f"u-{case['id']}", "books")
    first = agent.turn(session, "recommend something")
    assert_valid_reply(first, set(stored))
    assert first.list_changed and first.scene == "books" and first.error is None
    films = agent.turn(session, "show me films")
    assert_valid_reply(films, set(stored))
    assert films.scene == "films" and hostile_id(case) not in {r.item_id for r in films.recommendations}
    why = agent.turn(session, "why #1")
    assert_valid_reply(why, set(stored))
    assert why.action is not None and why.action.action == "explain"
    assert agent.backend_error is None


# --- the real embedded model, a subset ----------------------------------------------------------


@pytest.mark.llm
def test_the_embedded_model_on_a_subset(stored: dict[str, Item], embedded_llm: LLMBackend) -> None:
    """Labels for all eight cases; a profile for the four whose hostile text a profile would quote."""
    settings = LLMSettings(
        backend="transformers",
        use_profile=False,
        rerank_weight=WEIGHT,
        max_tokens=48,
        cache_dir=embedded_llm.settings.cache_dir,
        options={"threads": 2},
    )
    reranker = Reranker(embedded_llm, settings)
    profiler = TextProfiler(embedded_llm, settings)
    for number, case_id in enumerate(REAL_MODEL_CASES):
        case = BY_ID[case_id]
        request = request_with(stored, stored[hostile_id(case)])
        result = reranker.rerank(request, explain=False)
        assert_valid(result, request)
        assert result.counters.llm_scored_users == 1
        assert result.counters.text_withheld >= (1 if case["instruction"] else 0)
        assert position(result, hostile_id(case)) >= HOSTILE_AT or not case["instruction"], case_id
        if number % 2:
            continue
        hostile = request.history.entries[0].model_copy(
            update={"item_id": hostile_id(case), "scene": "films", "title": case["title"], "position": 2}
        )
        history = request.history.model_copy(update={"entries": [*request.history.entries, hostile]})
        profile = profiler.profiles([("u", history, "books")])[0].text
        assert profile is None or not triggered(case, profile), profile
