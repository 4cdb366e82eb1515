"""Explanations: leave-one-out attribution, typed evidence, the LLM rephrasing check, readable scores."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from scipy import sparse

from scenerec.catalog.scene_catalog import read_scene_catalog
from scenerec.llm.fake import FakeBackend
from scenerec.paths import DataPaths
from scenerec.models import Evidence, HistoryEntry, Item, Recommendation, UserHistory
from scenerec.recommend.attribution import (
    CooccurrenceScorer,
    MOVES_RANK,
    FusedScorer,
    _ranks_within,
    attributed_recommendations,
    joint_contributors,
    leave_one_out,
    without,
)
from scenerec.recommend.retrieval import Candidate
from scenerec.recommend.evidence import Interactions
from scenerec.recommend.memo import LRU, StoreMemo
from scenerec.recommend.recommender import Recommender
from scenerec.recommend.scores import percentile
from scenerec.recommend.why import breakdown, breakdown_lines
from scenerec.rerank.rephrase import evidence_sentence, invented
from scenerec.rerank.reranker import Reranker, RerankRequest
from scenerec.settings import LLMSettings, Settings
from scenerec.stores.embeddings import Encoder
from scenerec.stores.ingest import ingest_catalog
from scenerec.stores.lexical import BM25Index

from .conftest import write_catalog


def hist(*ids: str) -> UserHistory:
    return UserHistory(
        user_id="me",
        entries=[
            HistoryEntry(item_id=i, scene="arts", title=f"title {i}", position=p) for p, i in enumerate(ids)
        ],
    )


def test_a_co_purchase_says_how_many_bought_the_item_later(
    tmp_path: Path, make_settings, encoder: Encoder
) -> None:
    # three shoppers bought the paint set, then the easel; one bought the easel first
    items = [
        ("paint", "arts", "Watercolor paint set", "24 colors"),
        ("easel", "office", "Folding desk easel", "beech wood"),
        ("stapler", "office", "Heavy duty stapler", "metal"),
    ]
    histories = {
        "u1": ["paint", "easel"],
        "u2": ["paint", "stapler", "easel"],
        "u3": ["paint", "easel"],
        "u4": ["easel", "paint"],
    }
    settings = make_settings()
    ingest_catalog(write_catalog(tmp_path / "cat", items, histories), settings, encoder=encoder)
    interactions = Interactions.build(DataPaths(settings.data_dir).catalog_db)  # from the real SQLite store
    assert interactions.bought_after([("paint", "easel"), ("easel", "paint"), ("easel", "stapler")]) == [3, 1, 0]
    catalog = {i: Item(item_id=i, scene=s, title=t) for i, s, t, _ in items}
    history = UserHistory(
        user_id="me", entries=[HistoryEntry(item_id="paint", scene="arts", title="Watercolor paint set", position=0)]
    )
    (rec,) = attributed_recommendations(
        [Candidate("easel", 4.0)], history, "office", scorer=CooccurrenceScorer(interactions), items=catalog,
        cosine=np.zeros((1, 1)), interactions=interactions, n_scene_items=2, n_evidence=2,
    )
    assert (rec.evidence[0].kind, rec.evidence[0].count, rec.evidence[0].after) == ("co_purchase", 4, 3)
    assert "4 shoppers who bought «Watercolor paint set» in arts also bought this, 3 of them later." in (
        evidence_sentence(rec)
    )
    # a matrix without order (all ones) counts the same co-purchases and says nothing about later
    binary = interactions.users.copy()
    binary.data[:] = 1.0
    plain = Interactions(interactions.item_ids, binary, list(interactions.row))
    assert plain.bought_after([("paint", "easel")]) == [0]


def test_leave_one_out_on_hand_built_co_purchases_finds_the_known_answer() -> None:
    # users x items: x was bought with a by three users, with b by one, never with c
    ids = ["a", "b", "c", "x"]
    rows = [[1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 0, 1], [0, 0, 1, 0], [0, 1, 1, 0]]
    matrix = sparse.csc_matrix(np.array(rows, dtype=np.float32))
    scorer = CooccurrenceScorer(Interactions(ids, matrix, [f"u{i}" for i in range(5)]))
    (attribution,) = leave_one_out(scorer, hist("a", "b", "c"), ["x"])
    assert attribution.score == 4.0
    assert attribution.deltas == {"a": 3.0, "b": 1.0, "c": 0.0}
    assert [(i, round(s, 2)) for i, s, _ in attribution.contributors(3)] == [("a", 0.75), ("b", 0.25)]


def test_leave_one_out_on_a_hand_built_dense_model_credits_the_aligned_item() -> None:
    # 2-d item space: x leans to a's direction, y to b's; the mean query of [a, b] ranks x first, y second
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    items = np.array([[0.9, 0.3], [0.1, 0.9]], dtype=np.float32)  # x, y (ids sorted)

    def queries(histories):
        out = []
        for h in histories:
            if not h.entries:
                out.append(None)
                continue
            q = sum(vectors[i] for i in h.item_ids)
            out.append((q / np.linalg.norm(q)).astype(np.float32))
        return out

    scorer = FusedScorer(
        method="dense",
        queries=queries,
        full_scores=lambda q: q @ items.T,
        dense_ids=["x", "y"],
        lexical=None,
        lexical_query=lambda h: "",
        lexical_weight=0.0,
        rrf_k=60,
        dense_depth=10,
        lexical_depth=10,
    )
    x, y = leave_one_out(scorer, hist("a", "b"), ["x", "y"])
    assert x.deltas["a"] > 0 > x.deltas["b"] and y.deltas["b"] > 0 > y.deltas["a"]
    assert [i for i, _, _ in x.contributors(2)] == ["a"]  # without a, x falls to second place
    # without b, y's cosine falls (0.71 -> 0.10) but it stays second: b did not put it where it is
    assert y.contributors(2) == []


def test_an_item_no_single_history_item_moves_is_cited_by_the_pair_that_moves_it() -> None:
    # 3-d space, history a, b, c along the axes; x leans to all three (c most), w to a alone. The mean
    # query ranks x first; without any one of a, b, c it stays first; without c and b (its two strongest,
    # c's removal costing it most) the query is a alone and w overtakes it
    vectors = {"a": np.eye(3)[0], "b": np.eye(3)[1], "c": np.eye(3)[2]}
    items = np.array([[0.997, 0.05, 0.05], [0.539, 0.539, 0.647]], dtype=np.float32)  # w, x (ids sorted)

    def queries(histories):
        out = []
        for h in histories:
            q = sum((vectors[i] for i in h.item_ids), np.zeros(3))
            out.append((q / np.linalg.norm(q)).astype(np.float32) if h.entries else None)
        return out

    scorer = FusedScorer(method="dense", queries=queries, full_scores=lambda q: q @ items.T,
                         dense_ids=["w", "x"], lexical=None, lexical_query=lambda h: "", lexical_weight=0.0,
                         rrf_k=60, dense_depth=10, lexical_depth=10)
    history = hist("a", "b", "c")
    (x,) = leave_one_out(scorer, history, ["x"])
    assert x.contributors(3) == [] and max(x.deltas, key=x.deltas.get) == "c"
    joint_contributors(scorer, history, [x])
    assert x.joint is not None and x.joint[0] == ("c", "b") and x.joint[1] > MOVES_RANK
    full, cut = scorer.scores([history, without(history, "c", "b")], ["x"])[:, 0]
    assert full - cut == x.joint[1]
    (w,) = leave_one_out(scorer, history, ["w"])  # second with or without any item: nothing to cite
    joint_contributors(scorer, history, [w])
    assert w.contributors(3) == [] and w.joint is None


def test_a_short_history_that_moves_an_item_only_as_a_whole_is_cited_whole_where_there_is_a_prior() -> None:
    # like the transfer model, an empty history has a query: the prior, the third axis, which ranks z
    # first. With a and b, x is first; without either one it is still first (no single contributor);
    # without both it falls behind z. So the two together put it there, and the card says so
    prior = np.array([0.0, 0.0, 1.0])
    vectors = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 1.0, 0.0])}
    items = np.array([[0.6, 0.6, 0.5], [0.0, 0.0, 1.0]], dtype=np.float32)  # x, z (ids sorted)

    def queries(histories):
        return [(prior + sum((vectors[i] for i in h.item_ids), np.zeros(3))).astype(np.float32) for h in histories]

    scorer = FusedScorer(method="transfer", queries=queries, full_scores=lambda q: q @ items.T,
                         dense_ids=["x", "z"], lexical=None, lexical_query=lambda h: "",
                         lexical_weight=0.0, rrf_k=60, dense_depth=10, lexical_depth=10)
    history = hist("a", "b")
    assert scorer.has_prior
    x, z = leave_one_out(scorer, history, ["x", "z"])
    joint_contributors(scorer, history, [x, z])
    assert x.contributors(2) == [] and x.joint is not None and set(x.joint[0]) == {"a", "b"}
    assert x.joint[1] > MOVES_RANK and not x.held_by_prior
    assert z.joint is None and z.held_by_prior  # the prior, not the history, holds z
    catalog = {i: Item(item_id=i, scene="office", title=f"item {i}") for i in ("x", "z")}
    catalog |= {i: Item(item_id=i, scene="arts", title=f"title {i}") for i in ("a", "b")}
    (card,) = attributed_recommendations(
        [Candidate("x", 1 / 61)], history, "office", scorer=scorer, items=catalog, cosine=np.zeros((1, 2)),
        interactions=None, n_scene_items=2, n_evidence=2,
    )
    assert [e.joint for e in card.evidence] == [True, True] and not card.prior
    assert "put it here together" in evidence_sentence(card)


def test_an_item_the_scene_prior_holds_cites_no_history_item_and_says_so() -> None:
    # like the transfer model, an empty history has a query: the scene's prior, here the third axis.
    # p leans on the prior and is first whatever the history; x is second only thanks to a
    prior = np.array([0.0, 0.0, 1.0])
    vectors = {"a": np.array([0.3, 0.0, 0.0]), "b": np.array([0.0, 0.3, 0.0])}
    items = np.array([[0.1, 0.1, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)  # p, x, y

    def queries(histories):
        return [(prior + sum((vectors[i] for i in h.item_ids), np.zeros(3))).astype(np.float32) for h in histories]

    scorer = FusedScorer(method="transfer", queries=queries, full_scores=lambda q: q @ items.T,
                         dense_ids=["p", "x", "y"], lexical=None, lexical_query=lambda h: "",
                         lexical_weight=0.0, rrf_k=60, dense_depth=10, lexical_depth=10)
    history = hist("a", "b")
    p, x = leave_one_out(scorer, history, ["p", "x"])
    joint_contributors(scorer, history, [p, x])
    assert p.contributors(2) == [] and p.joint is None and p.held_by_prior
    assert x.contributors(2) and not x.held_by_prior
    catalog = {i: Item(item_id=i, scene="office", title=f"item {i}") for i in ("p", "x", "y")}
    catalog |= {i: Item(item_id=i, scene="arts", title=f"title {i}") for i in ("a", "b")}
    matrix = sparse.csc_matrix(np.array([[1, 0, 0, 1, 0], [1, 1, 0, 0, 1], [1, 0, 1, 0, 0]], dtype=np.float32))
    interactions = Interactions(["p", "x", "y", "a", "b"], matrix, ["u0", "u1", "u2"])
    recs = attributed_recommendations(
        [Candidate("p", 1 / 61), Candidate("x", 1 / 62)], history, "office", scorer=scorer, items=catalog,
        cosine=np.zeros((2, 2)), interactions=interactions, n_scene_items=3, n_evidence=2,
    )
    assert recs[0].prior and recs[0].evidence == [] and recs[0].buyers == 3
    assert "popularity in office (3 shoppers bought it)" in evidence_sentence(recs[0])
    assert not recs[1].prior and recs[1].evidence[0].item_id == "a"  # x cites what put it there


def test_every_cited_item_is_one_whose_removal_lowers_the_score(
    tiny_settings: Settings, encoder: Encoder
) -> None:
    single_cited = joint_cited = 0
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        for user in rec.items.users():
            history = rec.history(user)
            for scene in rec.items.scenes():
                recs = rec.recommend(user, scene, k=5)
                if not recs or recs[0].source == "popular":
                    continue
                scorer = rec.list_scorer(scene)
                for r in recs:
                    group = [e.item_id for e in r.evidence if e.joint]
                    if group:  # cited together: together they lower it, and no one of them alone does
                        joint_cited += 1
                        full, cut, *alone = scorer.scores(
                            [history, without(history, *group)] + [without(history, h) for h in group],
                            [r.item_id],
                        )[:, 0]
                        assert full - cut > scorer.min_delta, (user, scene, r.item_id, group)
                        assert all(full - a <= scorer.min_delta for a in alone), (user, scene, r.item_id)
                        continue
                    for e in [e for e in r.evidence if e.kind != "nearest"]:  # nearest: no item raised it
                        assert e.share is not None and 0 < e.share <= 1
                        full, cut = scorer.scores([history, without(history, e.item_id)], [r.item_id])[:, 0]
                        assert cut < full, (user, scene, r.item_id, e.item_id)
                        single_cited += 1
        assert single_cited > 0 and joint_cited > 0  # the demo has both kinds


def test_scores_are_in_unit_range_and_fall_with_the_rank(tiny_settings: Settings, encoder: Encoder) -> None:
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        for user in rec.items.users():
            for scene in rec.items.scenes():
                recs = rec.recommend(user, scene, k=8)
                scores = [r.score for r in recs]
                assert all(0.0 <= s <= 1.0 for s in scores)
                assert all(a > b for a, b in itertools.pairwise(scores)), scores
                assert all(r.raw_score is not None and r.method for r in recs)
    assert percentile(1, 1000) == 1.0 and percentile(1000, 1000) == 0.001


def test_why_breakdown_has_a_bar_per_contributor(tiny_settings: Settings, encoder: Encoder) -> None:
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        user = rec.items.users()[0]
        scene = rec.items.scenes()[-1]
        top = rec.recommend(user, scene, k=3)[0]
        found = breakdown(rec, rec.history(user), scene, top.item_id)
        assert found.rank == 1 and found.method.startswith("mean-query") and found.contributors
        assert abs(sum(e.share for e in found.contributors) - 1.0) < 1e-3
        lines = breakdown_lines(found)
        assert sum("█" in line or "▏" in line for line in lines) >= 1
        assert found.contributors[0].title[:20] in "\n".join(lines)


def _card() -> tuple[Recommendation, UserHistory]:
    history = UserHistory(
        user_id="u1",
        entries=[
            HistoryEntry(item_id="h1", scene="arts", title="acrylic paint set 24 colours", position=0),
            HistoryEntry(item_id="h2", scene="arts", title="knitting needles bamboo", position=1),
        ],
    )
    rec = Recommendation(
        item_id="o1",
        title="gel pens 12 colours",
        scene="office",
        score=1.0,
        raw_score=0.5,
        evidence=[
            Evidence(
                item_id="h1",
                title="acrylic paint set 24 colours",
                scene="arts",
                similarity=0.5,
                kind="co_purchase",
                share=0.8,
                count=7,
                words=["colours"],
            ),
        ],
    )
    return rec, history


def test_the_rephrasing_check_rejects_invented_items_numbers_and_attributes() -> None:
    rec, _history = _card()
    others = ["knitting needles bamboo"]
    assert (
        invented("7 shoppers who bought the paint also bought these colourful pens.", rec, others) is not None
    )
    assert (
        invented("7 shoppers who bought the acrylic paint also bought these gel pens.", rec, others) is None
    )
    assert "number" in invented("412 shoppers who bought the paint also bought these pens.", rec, others)
    assert "item" in invented("Goes with your knitting needles bamboo and these pens.", rec, others)
    assert "item" in invented("Like «watercolor brush set», these pens fit.", rec, others)
    assert "attribute" in invented("Waterproof gel pens like your acrylic paint.", rec, others)


def test_an_llm_that_invents_is_rejected_counted_and_the_template_kept() -> None:
    rec, history = _card()
    items = {"o1": Item(item_id="o1", scene="office", title=rec.title, text="smooth gel ink")}
    request = RerankRequest(subject="u1", history=history, scene="office", candidates=[rec], k=1, items=items)
    settings = LLMSettings(backend="fake", use_profile=False)
    # a fake backend that invents: a count the evidence does not have, then an item the user never had
    inventing = FakeBackend().enqueue(
        '{"because":"h1","reason":"412 shoppers who bought the paint got these gel pens."}'
    )
    result = Reranker(inventing, settings).rerank(request)
    assert result.counters.invented_facts == 1 and result.counters.template_explanations == 1
    assert result.recommendations[0].explanation == evidence_sentence(rec, "office")
    assert "7 shoppers who bought «acrylic paint set 24 colours»" in result.recommendations[0].explanation
    honest = FakeBackend().enqueue(
        '{"because":"h1","reason":"7 shoppers who bought the paint also bought these gel pens."}'
    )
    kept = Reranker(honest, settings).rerank(request)
    assert kept.counters.invented_facts == 0 and kept.counters.llm_explanations == 1
    assert kept.recommendations[0].explanation.endswith(
        "7 shoppers who bought the paint also bought these gel pens."
    )


def test_html_entities_are_decoded_once_when_the_catalog_is_read(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text(
        json.dumps(
            {
                "item_id": "o1",
                "scene": "office",
                "title": "Desk &amp; Serving tray 52 x 70&quot;",
                "text": "oak &amp; steel &lt;b&gt;",
            }
        )
        + "\n"
    )
    (tmp_path / "interactions.csv").write_text("user_id,item_id,scene,position\nu1,o1,office,0\n")
    catalog = read_scene_catalog(tmp_path)
    (item,) = catalog.items
    assert item.title == 'Desk & Serving tray 52 x 70"' and item.text == "oak & steel <b>"


def _brute_ranks(row: np.ndarray, columns: list[int]) -> list[int]:
    """Rank by the definition: items scoring higher, then equal items at a lower position, plus one."""
    return [
        int((row > row[c]).sum() + (row[:c] == row[c]).sum()) + 1 if np.isfinite(row[c]) else len(row) + 1
        for c in columns
    ]


def test_batched_ranks_equal_ranks_by_definition_within_the_depth() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 40, size=(7, 300)).astype(np.float64)  # many ties
    scores[2, :5] = -np.inf
    scores[3] = 0.0  # a BM25 row without a hit
    columns = [0, 3, 17, 150, 299]
    depth = 25
    got = _ranks_within(scores, np.array(columns), depth)
    for r, row in enumerate(scores):
        want = [x if x <= depth else depth + 1 for x in _brute_ranks(row, columns)]
        assert got[r].tolist() == want, r
    lexical = _ranks_within(scores, np.array(columns), depth, floor=0.0)  # a 0 is no hit at any rank
    assert (lexical[scores[:, columns] <= 0] == depth + 1).all()


def test_bm25_scores_of_many_queries_equal_one_query_at_a_time() -> None:
    docs = ["red gel pens fine", "blue gel pens", "acrylic paint red", "paint brushes fine red", "pens"]
    index = BM25Index.build([f"d{i}" for i in range(len(docs))], docs)
    queries = ["red pens", "fine paint paint", "", "nothing matches", "gel"]
    many = index.scores_many(queries)
    for q, row in zip(queries, many):
        np.testing.assert_allclose(row, index.scores(q), rtol=1e-12, atol=0)


def _never(keys: list) -> list:
    raise AssertionError(f"computed {keys}, which were held")


def test_a_memo_fetch_answers_keys_its_own_puts_evict() -> None:
    memo = LRU(3)
    memo.put([("empty", 0), ("a", 1), ("b", 2)])  # the empty history's row is the oldest
    computed: list = []

    def compute(keys: list) -> list:
        computed.extend(keys)
        return [10 * len(k) for k in keys]

    # one request: the old held row and three new ones; holding the new ones evicts held ones
    assert memo.fetch(["empty", "cc", "ddd", "eeee"], compute) == [0, 20, 30, 40]
    assert computed == ["cc", "ddd", "eeee"] and len(memo) == 3
    assert memo.fetch(["ddd", "eeee"], _never) == [30, 40]


def test_the_store_memo_forgets_everything_when_the_store_changes() -> None:
    memo = StoreMemo().check(("1", "1", "0"))
    memo.scene_names = ["arts"]
    memo.vectors.put([("a", 1), ("b", 2)])
    assert memo.vectors.missing(["a", "c", "c"]) == ["c"] and memo.vectors.fetch(["b", "a"], _never) == [2, 1]
    small = LRU(2)
    small.put([("x", 1), ("y", 2)])
    small.fetch(["x"], _never)  # y is now the least recently used
    small.put([("z", 3)])
    assert "y" not in small and "x" in small and len(small) == 2
    assert memo.check(("1", "1", "0")).scene_names == ["arts"]  # same store: kept
    assert memo.check(("2", "2", "0")).scene_names is None and len(memo.vectors) == 0  # new data: gone


def test_a_rephrasing_in_the_templates_own_words_is_kept_and_a_rejection_says_why() -> None:
    rec, history = _card()
    second = Evidence(item_id="h2", title="knitting needles bamboo", scene="arts", similarity=0.1, kind="model",
                      share=0.2)
    rec = rec.model_copy(update={"evidence": [*rec.evidence, second]})
    template = evidence_sentence(rec, "office")
    assert template.endswith("«knitting needles bamboo» (arts) points the same way.")
    items = {"o1": Item(item_id="o1", scene="office", title=rec.title, text="smooth gel ink")}
    request = RerankRequest(subject="u1", history=history, scene="office", candidates=[rec], k=1, items=items)
    settings = LLMSettings(backend="fake", use_profile=False)
    # "point" and "way" are no title's words, only the template's: the sentence invents nothing
    honest = FakeBackend().enqueue(
        '{"because":"h1","reason":"7 shoppers of your acrylic paint set bought these gel pens; '
        'the knitting needles point the same way."}'
    )
    kept = Reranker(honest, settings).rerank(request)
    assert kept.counters.llm_explanations == 1 and not kept.rejected
    assert kept.recommendations[0].explanation.endswith("the knitting needles point the same way.")
    waterproof = FakeBackend().enqueue(
        '{"because":"h1","reason":"Waterproof gel pens for your acrylic paint set."}'
    )
    refused = Reranker(waterproof, settings).rerank(request)
    assert refused.counters.invented_facts == 1
    assert "waterproof" in refused.rejected["o1"] and "Waterproof gel pens" in refused.rejected["o1"]


def test_a_reason_that_links_nothing_but_glue_words_is_off_topic() -> None:
    rec, history = _card()
    items = {"o1": Item(item_id="o1", scene="office", title=rec.title, text="office products pens")}
    request = RerankRequest(subject="u1", history=history, scene="office", candidates=[rec], k=1, items=items)
    vacuous = FakeBackend().enqueue('{"because":"h1","reason":"You liked the product in the office scene."}')
    result = Reranker(vacuous, LLMSettings(backend="fake", use_profile=False)).rerank(request)
    assert result.counters.off_topic_reasons == 1 and result.counters.llm_explanations == 0
    assert result.recommendations[0].explanation == evidence_sentence(rec, "office")


def test_item_vectors_survive_a_memo_too_small_for_the_request(tiny_settings: Settings, encoder: Encoder) -> None:
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        ids = sorted(rec.items.get_items(rec.history(rec.items.users()[0]).item_ids))[:1]
        ids += [i.item_id for i in rec.items.items_in_scene(rec.items.scenes()[0])][:4]
        expected = rec.item_vectors(ids)
        memo = rec._memo.check(rec._stamp).vectors
        memo.clear()
        memo.size = 3
        rec.item_vectors(ids[:3])  # held: 0, 1, 2 (0 the oldest)
        # 0 is held, 3 and 4 are new: putting them evicts 0, which this request also asks for
        again = rec.item_vectors([ids[0], ids[3], ids[4]])
        assert np.array_equal(again, expected[[0, 3, 4]])
        assert np.array_equal(rec.item_vectors(ids), expected)  # more than the memo holds at once
