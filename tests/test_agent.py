"""The conversational agent from Python: every action, the fallback parser, hostile input, sessions.

Uses the tiny books/films catalog (rules only, or the FakeBackend — a scripted stand-in, not a model);
one slow end-to-end test runs the real embedded model on the demo catalog.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from scenerec.agent.actions import (
    ActionContext,
    AgentAction,
    Constraint,
    action_schema,
)
from scenerec.agent.conversation import Agent
from scenerec.agent.reading import parse_model_answer, parse_rules
from scenerec.errors import StoreError, UnknownUserError
from scenerec.llm.base import BackendError, LLMBackend
from scenerec.llm.fake import FakeBackend
from scenerec.recommend.recommender import Recommender
from scenerec.settings import Settings, TUISettings
from scenerec.stores.embeddings import Encoder
from scenerec.stores.ingest import ingest_catalog
from scenerec.stores.session_store import SessionStore

from .conftest import TINY_HISTORIES, TINY_ITEMS, write_catalog

CTX = ActionContext(
    scenes=["books", "films"],
    scene="films",
    shown=[("f5", "the lord of the rings"), ("f1", "how to train your dragon"), ("f4", "chef")],
)


def make_agent(
    settings: Settings, encoder: Encoder, tmp_path: Path, backend: LLMBackend | None = None, **tui: object
) -> Agent:
    recommender = Recommender(settings, encoder=encoder)
    return Agent(recommender, SessionStore(tmp_path / "sessions.sqlite"), TUISettings(**tui), backend)


@pytest.fixture
def agent(tiny_settings: Settings, encoder: Encoder, tmp_path: Path) -> Agent:
    return make_agent(tiny_settings, encoder, tmp_path)


def titles(reply) -> list[str]:
    return [r.title for r in reply.recommendations]


def is_printable(text: str) -> bool:
    return "\x1b" not in text and not any(
        unicodedata.category(ch) in ("Cc", "Cf") and ch != "\n" for ch in text
    )


# --- each action ---


def test_recommend_gives_explained_cards_of_the_scene(agent: Agent) -> None:
    session = agent.start("bob")  # a cook with no films: the transfer case
    assert session.scene == "films"
    reply = agent.turn(session, "recommend something")
    assert reply.action.action == "recommend" and reply.path == "rules" and reply.list_changed
    assert len(reply.recommendations) == 5
    assert {r.scene for r in reply.recommendations} == {"films"}
    assert all(r.explanation and "«" in r.explanation for r in reply.recommendations)
    assert reply.explained_by == "template" and reply.parse_counts["rules"] == 1
    assert session.shown == reply.recommendations


def test_refine_steers_retrieval_and_not_x_filters_titles(agent: Agent) -> None:
    session = agent.start("alice", "films")
    agent.turn(session, "recommend something")
    reply = agent.turn(session, "something about cooking")
    assert reply.action.action == "refine" and session.constraints == ["about cooking"]
    assert set(titles(reply)[:2]) == {"chef", "julie and julia"}  # the wish moves cooking films up
    reply = agent.turn(session, "not chef")
    assert reply.action.action == "refine"
    assert "chef" not in titles(reply) and "julie and julia" in titles(reply)
    assert session.constraints == ["about cooking", "not chef"]
    assert "not chef" in reply.text


def test_constraint_parsing() -> None:
    assert Constraint.parse("for a child") == Constraint(query="child", banned=[])
    parsed = Constraint.parse("cheaper but not paper")
    assert parsed.query == "cheaper" and parsed.banned == ["paper"]
    assert not Constraint(banned=["paper"]).allows("Paper Mate pens")
    assert Constraint(banned=["paper"]).allows("pens")


def test_more_like_uses_the_item_as_query(agent: Agent) -> None:
    session = agent.start("carol", "films")
    agent.turn(session, "recommend")
    first = session.shown[0]
    reply = agent.turn(session, "more like #1")
    assert reply.action.action == "more_like" and reply.action.item_ids == [first.item_id]
    assert session.anchor == first.item_id and first.item_id not in [r.item_id for r in reply.recommendations]
    assert first.title in reply.text
    by_search = agent.turn(session, "more like dragons")  # not a shown card: found in the catalog
    assert by_search.action.action == "more_like" and session.anchor in {"b1", "b5", "f1"}


def test_exclude_hides_an_item_for_the_rest_of_the_session(agent: Agent) -> None:
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")
    hidden = session.shown[1]
    reply = agent.turn(session, "hide #2")
    assert reply.action.action == "exclude" and hidden.item_id in session.disliked
    assert hidden.item_id not in [r.item_id for r in reply.recommendations]
    again = agent.turn(session, "recommend something")
    assert hidden.item_id not in [r.item_id for r in again.recommendations]
    assert agent.store.feedback(session.session_id) == {hidden.item_id: "dislike"}


def test_explain_answers_from_the_explanation_and_its_evidence(agent: Agent) -> None:
    session = agent.start("alice", "films")
    agent.turn(session, "recommend")
    card = session.shown[1]
    reply = agent.turn(session, "why the second one?")
    assert reply.action.action == "explain" and reply.action.item_ids == [card.item_id]
    assert card.title in reply.text and card.explanation in reply.text
    assert all(e.title in reply.text for e in card.evidence)
    assert not reply.list_changed


def test_liking_a_card_does_not_change_why_it_was_shown(agent: Agent) -> None:
    session = agent.start("alice", "films")
    agent.turn(session, "recommend")
    card = session.shown[1]
    before = agent.why(session, card)
    agent.like(session, card.item_id)
    assert card.item_id in agent.history(session).item_ids
    assert agent.why(session, card) == before and "What drove it, ranked by" in before


def test_switch_scene_by_text_and_an_unknown_scene(agent: Agent) -> None:
    session = agent.start("bob", "films")
    reply = agent.turn(session, "show me books")
    assert reply.action.action == "switch_scene" and session.scene == "books"
    assert {r.scene for r in reply.recommendations} == {"books"}
    wrong = agent.act(session, AgentAction(action="switch_scene", scene="music"))
    assert wrong.error and "unknown scene 'music'" in wrong.text and session.scene == "books"


def test_pick_user_and_an_unknown_user(agent: Agent) -> None:
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")
    agent.like(session, session.shown[0].item_id)
    reply = agent.turn(session, "switch to user dan")
    assert reply.action.action == "pick_user" and session.user_id == "dan"
    assert session.liked == [] and "dan" in reply.text
    unknown = agent.turn(session, "user mallory")
    assert unknown.error and "unknown user 'mallory'" in unknown.text and session.user_id == "dan"
    with pytest.raises(UnknownUserError):
        agent.start("mallory")


def test_smalltalk_answers_with_help(agent: Agent) -> None:
    session = agent.start("bob")
    reply = agent.turn(session, "hello!")
    assert reply.action.action == "smalltalk" and "why #2" in reply.text and not reply.list_changed


def test_a_like_joins_the_history_and_changes_the_profile(agent: Agent) -> None:
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")
    before_vector = agent.recommender.user_vectors([agent.history(session)], "films")[0]
    liked = session.shown[2]
    reply = agent.like(session, liked.item_id)
    assert reply.action is None and liked.title in reply.text and session.liked == [liked.item_id]
    history = agent.history(session)
    assert history.item_ids[-1] == liked.item_id
    after_vector = agent.recommender.user_vectors([history], "films")[0]
    assert float(before_vector @ after_vector) < 0.999
    assert [e.item_id for e in agent.profile(session).liked] == [liked.item_id]
    again = agent.turn(session, "recommend")
    assert liked.item_id not in [r.item_id for r in again.recommendations]


# --- the LLM path and its fallback ---


def test_a_valid_model_answer_is_used(tiny_settings: Settings, encoder: Encoder, tmp_path: Path) -> None:
    fake = FakeBackend()
    agent = make_agent(tiny_settings, encoder, tmp_path, fake, llm_explanations=False)
    session = agent.start("bob", "films")
    fake.enqueue('{"action": "switch_scene", "scene": "books"}')
    reply = agent.turn(session, "let's look at something to read")
    assert reply.path == "llm" and session.scene == "books"
    assert reply.parse_counts == {"llm": 1}
    prompt = fake.calls[-1]
    assert prompt["schema"]["properties"]["scene"]["enum"] == ["books", "films"]
    assert "«let's look at something to read»" in prompt["messages"][1]["content"]


GARBAGE = [
    "",
    "Sure! Here are some great recommendations for you.",
    '{"action": "fly"}',
    '{"action": "recommend", "extra": 1}',
    '{"action": "switch_scene", "scene": "mars"}',
    '{"action": "more_like", "item_ids": ["zzz"]}',
    '{"action": "exclude"}',
    '{"action": "pick_user", "user_id": "eve"}',
    '{"action": "refine", "constraint": "glitter unicorn"}',
    '{"action": "rec',
    "[1, 2, 3]",
    "null",
    '{"action": "explain", "item_ids": "f5"}',
]


@pytest.mark.parametrize("answer", GARBAGE)
def test_garbage_model_output_falls_back_to_the_rules(answer: str) -> None:
    assert parse_model_answer(answer, "for a child", CTX) is None


def test_the_fallback_is_counted_and_the_rules_answer(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    fake = FakeBackend().enqueue(*GARBAGE)
    agent = make_agent(tiny_settings, encoder, tmp_path, fake, llm_explanations=False)
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")  # garbage 1 → rules
    for _ in GARBAGE[1:]:
        reply = agent.turn(session, "not chef")
        assert reply.path == "rules" and reply.action.action == "refine"
    assert agent.parse_counts["rules"] == len(GARBAGE) and agent.parse_counts["llm_unusable"] == len(GARBAGE)
    assert agent.parse_counts["llm"] == 0


def test_a_clear_keyword_is_not_sent_to_the_model(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    fake = FakeBackend()  # with nothing queued it answers the schema's minimum: {"action": "recommend"}
    agent = make_agent(tiny_settings, encoder, tmp_path, fake, llm_explanations=False)
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")
    calls = len(fake.calls)
    for text, action in [
        ("why #2", "explain"),
        ("hide the first", "exclude"),
        ("show me books", "switch_scene"),
        ("more like #1", "more_like"),
        ("user alice", "pick_user"),
        ("thanks", "smalltalk"),
    ]:
        reply = agent.turn(session, text)
        assert reply.action.action == action and reply.path == "rules", text
    assert len(fake.calls) == calls and agent.parse_counts["rules_certain"] == 6
    reply = agent.turn(session, "tell me more about the first one")  # not certain: the model answers
    assert reply.path == "llm" and len(fake.calls) == calls + 1


class BrokenBackend(FakeBackend):
    """Fails like a backend whose model cannot load."""

    def chat(self, messages, *, schema=None, max_tokens=None):
        self.stats["calls"] += 1
        raise BackendError("model failed to load")


def test_an_unavailable_backend_means_rules_and_templates(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    broken = BrokenBackend()
    agent = make_agent(tiny_settings, encoder, tmp_path, broken)
    session = agent.start("bob", "films")
    first = agent.turn(session, "recommend something")
    second = agent.turn(session, "for a child")
    assert first.path == second.path == "rules" and second.explained_by == "template"
    assert agent.backend_error == "model failed to load" and broken.stats["calls"] == 1  # not retried
    assert agent.parse_counts["llm_unavailable"] == 2


def test_llm_explanations_go_through_the_rerank_stage_and_its_evidence_check(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    fake = FakeBackend()
    reasons = iter(range(100))

    def answer(messages, schema):
        props = (schema or {}).get("properties", {})
        if "because" in props:
            item = re.findall(r"scene: «([^»]+)»", messages[-1]["content"])[-1]
            reason = f"{item} shares the same warm kitchen mood, take {next(reasons)}"
            return json.dumps({"because": props["because"]["enum"][0], "reason": reason})
        if "profile" in props:
            return json.dumps({"profile": "enjoys cooking and baking stories"})
        return '{"action": "recommend"}'

    fake.enqueue(*[answer] * 40)
    agent = make_agent(tiny_settings, encoder, tmp_path, fake)
    session = agent.start("bob", "films")
    reply = agent.turn(session, "recommend something")
    # the explanations went through the rerank stage, whose check rejects a reason that names what its
    # evidence does not ("warm kitchen mood", a number): the evidence template is kept instead
    assert reply.path == "llm" and reply.text_profile == "enjoys cooking and baking stories"
    assert reply.explained_by == "template"
    assert not any("warm kitchen mood" in r.explanation for r in reply.recommendations)
    assert all(any(e.title in r.explanation for e in r.evidence) for r in reply.recommendations if r.evidence)


# --- hostile and odd input ---


def test_an_empty_scene(tiny_catalog: Path, make_settings, encoder: Encoder, tmp_path: Path) -> None:
    items = TINY_ITEMS + [("m1", "music", "kind of blue", "jazz album")]
    settings = make_settings("with-music")
    ingest_catalog(
        write_catalog(tmp_path / "music-catalog", items, TINY_HISTORIES), settings, encoder=encoder
    )
    agent = make_agent(settings, encoder, tmp_path)
    session = agent.start("bob", "music")  # nobody has touched music
    reply = agent.turn(session, "recommend")
    assert titles(reply) == ["kind of blue"]
    agent.turn(session, "hide #1")
    empty = agent.turn(session, "recommend something")
    assert empty.recommendations == [] and "Nothing left in music" in empty.text
    assert agent.turn(session, "why #1").text == "There is no list yet to explain."


def test_a_20000_character_message(agent: Agent) -> None:
    session = agent.start("bob", "films")
    message = ("cheaper " * 2500)[:20_000]
    reply = agent.turn(session, message)
    assert reply.action.action in ("recommend", "refine") and reply.recommendations
    assert all(len(c) <= 120 for c in session.constraints)
    assert len(reply.text) < 500
    stored = agent.store.turns(session.session_id)[-1]
    assert len(stored.user_text) == 20_000


def test_control_characters_and_escapes_in_messages_are_not_passed_on(agent: Agent) -> None:
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")
    reply = agent.turn(session, "\x1b[2J\x1b]0;pwned\x07not \x1b[31mchef\x1b[0m\u202e\x00")
    assert reply.action.action == "refine" and "chef" not in titles(reply)
    assert is_printable(reply.text) and all(is_printable(c) for c in session.constraints)
    assert agent.turn(session, "\x1b[A\x1b[B\x03").action is not None  # arrow keys and ^C as text


def test_control_characters_and_escapes_in_titles_are_not_passed_on(
    make_settings,
    encoder: Encoder,
    tmp_path: Path,
) -> None:
    evil = [
        ("f1", "films", "dragon \x1b[31mred\x1b[0m film\x1b]0;owned\x07", "dragons"),
        ("f2", "films", "[bold red]markup[/] \u202eevil", "dragons"),
    ]
    items = [i for i in TINY_ITEMS if i[0] not in ("f1", "f2")] + evil
    settings = make_settings("evil")
    ingest_catalog(write_catalog(tmp_path / "evil-catalog", items, TINY_HISTORIES), settings, encoder=encoder)
    agent = make_agent(settings, encoder, tmp_path)
    session = agent.start("alice", "films")
    agent.turn(session, "more like dragons")
    shown_ids = [r.item_id for r in session.shown]
    assert {"f1", "f2"} <= set(shown_ids)
    for item_id in ("f1", "f2"):
        rank = shown_ids.index(item_id) + 1
        assert is_printable(agent.turn(session, f"why #{rank}").text)
        assert is_printable(agent.like(session, item_id).text)
    assert is_printable(agent.turn(session, "hide #1").text)


def test_unknown_user_and_bad_rule_input_never_raise(agent: Agent) -> None:
    session = agent.start("bob", "films")
    for text in ["", "   ", "#99", "why #42", "more like #7", "user ", "???", "0", "\n\n"]:
        assert agent.turn(session, text).text


# --- sessions ---


def test_a_session_resumes_where_it_stopped(
    agent: Agent, tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")
    agent.like(session, session.shown[0].item_id)
    agent.turn(session, "not chef")
    agent.turn(session, "hide #1")
    other = make_agent(tiny_settings, encoder, tmp_path)  # a new process, the same sessions file
    resumed = other.resume(session.session_id)
    assert resumed == session
    assert other.history(resumed).item_ids == agent.history(session).item_ids
    assert [t.user_text for t in other.transcript(resumed)] == ["recommend", "", "not chef", "hide #1"]
    assert session.turns == 4


def test_a_turn_that_cannot_be_stored_changes_nothing(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    session = agent.start("bob", "films")
    agent.turn(session, "recommend")
    before = session.model_copy(deep=True)

    def fail(*args, **kwargs):
        raise StoreError("disk full")

    monkeypatch.setattr(agent.store, "record_turn", fail)
    with pytest.raises(StoreError):
        agent.turn(session, "switch to books")
    with pytest.raises(StoreError):
        agent.like(session, session.shown[0].item_id)
    assert session == before


def test_rule_parser_reads_the_usual_requests() -> None:
    cases = {
        "recommend something": ("recommend", None, []),
        "cheaper": ("refine", None, []),
        "for a child": ("refine", None, []),
        "not paper": ("refine", None, []),
        "why #2": ("explain", None, ["f1"]),
        "more like the first one": ("more_like", None, ["f5"]),
        "hide chef": ("exclude", None, ["f4"]),
        "switch to books": ("switch_scene", "books", []),
        "user alice": ("pick_user", None, []),
        "thanks!": ("smalltalk", None, []),
    }
    for text, (action, scene, ids) in cases.items():
        parsed = parse_rules(text, CTX)
        assert (parsed.action, parsed.scene, parsed.item_ids) == (action, scene, ids), text


def test_the_action_schema_lists_only_real_scenes_and_shown_ids() -> None:
    schema = action_schema(CTX)
    assert schema["properties"]["item_ids"]["items"]["enum"] == ["f5", "f1", "f4"]
    assert "item_ids" not in action_schema(ActionContext(scenes=["books"], scene="books"))["properties"]


# --- end to end with the real embedded model ---


@pytest.mark.slow
@pytest.mark.llm
def test_end_to_end_with_the_embedded_model(
    demo_settings: Settings, encoder: Encoder, embedded_llm: LLMBackend, tmp_path: Path
) -> None:
    backend = embedded_llm
    recommender = Recommender(demo_settings, encoder=encoder)
    agent = Agent(recommender, SessionStore(tmp_path / "sessions.sqlite"), TUISettings(), backend)
    session = agent.start()
    reply = agent.turn(session, "recommend something")
    assert reply.action.action == "recommend" and len(reply.recommendations) == 5
    assert all(r.scene == session.scene and r.explanation for r in reply.recommendations)
    refined = agent.turn(session, "not paper")
    assert refined.action.action == "refine" and refined.recommendations
    assert all("paper" not in r.title.lower() for r in refined.recommendations)
    assert sum(refined.parse_counts.get(k, 0) for k in ("llm", "rules")) == 2
    assert agent.backend_error is None
