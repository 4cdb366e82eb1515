"""The evaluation harness: same cases and exclusions for every method, honest settings and protocols,
reports that parse, determinism. Synthetic data for the rules; the demo store end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from scenerec.errors import ScenerecError
from scenerec.evaluation.harness import EvalReport, evaluate, prepare_cases
from scenerec.evaluation.methods import (
    BASELINES,
    METHODS,
    BM25Method,
    CooccurrenceMethod,
    DenseMethod,
    EvalData,
    FusedMethod,
    MethodUnavailableError,
    PopularityMethod,
    RankingMethod,
    TransitionsMethod,
    UnknownMethodError,
    _vector_lookup,
    make_method,
    normalise,
)
from scenerec.evaluation.report import write_report
from scenerec.models import Case
from scenerec.stores.lexical import BM25Index

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def reversed_bm25(ids: list[str], titles: list[str]) -> BM25Index:
    """A real BM25 index whose id order differs from the harness's columns, on purpose."""
    return BM25Index.build(list(reversed(ids)), list(reversed(titles)))


def synthetic_data(n_items: int = 1500, n_users: int = 300, n_cases: int = 120, seed: int = 0) -> EvalData:
    """Two scenes; users like one of 5 topics in both scenes; titles and vectors carry the topic."""
    rng = np.random.default_rng(seed)
    scenes = ["arts", "office"]
    ids = {s: sorted(f"{s}-{i:05d}" for i in range(n_items)) for s in scenes}
    topic = {i: int(i[-5:]) % 5 for s in scenes for i in ids[s]}
    centres = normalise(rng.normal(size=(5, 16)))
    vectors = {
        s: normalise(np.stack([centres[topic[i]] + 0.3 * rng.normal(size=16) for i in ids[s]]))
        for s in scenes
    }
    item_scene = {i: s for s in scenes for i in ids[s]}
    by_topic = {(s, t): [i for i in ids[s] if topic[i] == t] for s in scenes for t in range(5)}

    def history(t: int, size: int) -> list[str]:
        return [str(rng.choice(by_topic[(str(rng.choice(scenes)), t)])) for _ in range(size)]

    train = {f"tr{u:04d}": history(u % 5, int(rng.integers(3, 12))) for u in range(n_users)}
    cases = []
    for c in range(n_cases):
        t, scene = (c // 2) % 5, scenes[(c // 2 + c) % 2]
        user = f"te{c // 2:04d}"
        h = history(t, 8) if c % 2 == 0 else cases[-1].history
        repeat = c % 23 == 0 and item_scene[h[-1]] == scene
        target = h[-1] if repeat else str(rng.choice(by_topic[(scene, t)]))
        cases.append(Case(case_id=f"{user}-{c % 2}", split="test", user_id=user, target_scene=scene,
                          target_item=target, history=h))
    titles = {i: f"thing topic{topic[i]} {item_scene[i]}" for i in item_scene}
    return EvalData(
        scenes=scenes, scene_item_ids=ids, scene_vectors=vectors, vector_of=_vector_lookup(ids, vectors),
        item_scene=item_scene, item_title=titles, train_histories=train, split="test", cases=cases,
        lexical_index={s: reversed_bm25(ids[s], [titles[i] for i in ids[s]]) for s in scenes}.get,
    )


@pytest.fixture(scope="module")
def data() -> EvalData:
    return synthetic_data()


class Recording(RankingMethod):
    """Scores at random and remembers every (histories, scene) it was asked about."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[str]], str]] = []

    def fit(self, data: EvalData) -> None:
        self.data = data

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        self.calls.append(([list(h) for h in histories], scene))
        rng = np.random.default_rng(len(self.calls))
        return rng.random((len(histories), len(self.data.scene_item_ids[scene])))


class Constant(RankingMethod):
    name = "constant"

    def fit(self, data: EvalData) -> None:
        self.data = data

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        return np.zeros((len(histories), len(self.data.scene_item_ids[scene])))


class Oracle(RankingMethod):
    """Knows the targets: must score 1 on every case that can be hit."""

    name = "oracle"

    def fit(self, data: EvalData) -> None:
        self.data = data
        self.targets = {tuple(c.history): c.target_item for c in data.cases}

    def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
        cols = self.data.scene_column[scene]
        out = np.zeros((len(histories), len(cols)))
        for r, h in enumerate(histories):
            for case in self.data.cases:  # both cases of a user share the history: mark both targets
                if case.history == list(h) and case.target_scene == scene:
                    out[r, cols[case.target_item]] = 1.0
        return out


def all_numbers_in_unit_interval(report: EvalReport) -> bool:
    values = [
        x
        for r in report.results
        for s in r.scenes.values()
        for m in s.metrics.values()
        for x in (m.mean, m.low, m.high)
    ] + [s.coverage for r in report.results for s in r.scenes.values()]
    return all(0.0 <= v <= 1.0 for v in values)


# --- the rules, on synthetic data (fast) ---


def test_cold_setting_never_shows_target_scene_history(data):
    method = Recording()
    evaluate(data, [method], settings=("cold",), n_bootstrap=10)
    assert method.calls
    seen = 0
    for histories, scene in method.calls:
        for history in histories:
            assert all(data.item_scene[i] != scene for i in history)
            seen += len(history)
    assert seen > 0  # and the other scene's history does get through


def test_mixed_setting_shows_the_whole_history(data):
    method = Recording()
    evaluate(data, [method], settings=("mixed",), n_bootstrap=10)
    shown = sorted(tuple(h) for histories, _ in method.calls for h in histories)
    assert shown == sorted(tuple(c.history) for c in data.cases)


def test_sampled_protocol_ranks_the_target_among_1000_candidates(data):
    prepared = prepare_cases(data, data.cases, seed=0, negatives=999)
    for pc in prepared:
        assert len(pc.sample) == 1000 == len(set(pc.sample.tolist()))
        assert pc.sample[0] == pc.target_col
        assert not set(pc.sample[1:].tolist()) & set(pc.excluded.tolist())
    report = evaluate(data, [Constant()], protocols=("sampled",), n_bootstrap=10)
    result = report.result("constant", "mixed", "sampled").scenes["overall"]
    repeats = report.scenes["arts"].repeat_targets + report.scenes["office"].repeat_targets
    assert repeats > 0
    # constant scores: HR@10 is 10 / 1000 on every hittable case, 0 on repeats
    assert result.metrics["hr@10"].mean == pytest.approx(0.01 * (1 - repeats / report.n_cases), abs=1e-6)
    assert result.mean_candidates == pytest.approx(1000 - repeats / report.n_cases)


def test_sample_is_seeded_and_shared(data):
    a = prepare_cases(data, data.cases, seed=0, negatives=999)
    b = prepare_cases(data, list(reversed(data.cases)), seed=0, negatives=999)[::-1]
    c = prepare_cases(data, data.cases, seed=1, negatives=999)
    assert all(np.array_equal(x.sample, y.sample) for x, y in zip(a, b))  # per case, not per position
    assert not all(np.array_equal(x.sample, y.sample) for x, y in zip(a, c))


def test_history_is_excluded_and_repeat_targets_are_counted_misses(data):
    report = evaluate(data, [Oracle()], settings=("mixed",), n_bootstrap=10)
    for r in report.results:
        overall = r.scenes["overall"]
        repeats = overall.repeat_targets
        assert repeats == sum(c.target_item in c.history for c in data.cases) > 0
        # every case the oracle can hit is at rank 1 (or tied with its sibling's target); repeats score 0
        assert overall.metrics["hr@10"].mean == pytest.approx(1 - repeats / overall.n_cases)
        assert overall.invalid.in_history == 0 and overall.invalid.total_invalid == 0
    assert any("repeat purchases" in n for n in report.notes)


def test_same_seed_same_numbers_other_seed_other_samples(data):
    methods = [PopularityMethod(), DenseMethod()]
    first = evaluate(data, methods, n_bootstrap=200, seed=0)
    again = evaluate(data, [PopularityMethod(), DenseMethod()], n_bootstrap=200, seed=0)
    other = evaluate(data, [PopularityMethod(), DenseMethod()], n_bootstrap=200, seed=1)
    assert first.numbers() == again.numbers()
    assert first.numbers() != other.numbers()
    # full ranking does not depend on the seed; only the bootstrap interval does
    a = first.result("dense", "mixed", "full").scenes["arts"].metrics["ndcg@10"]
    b = other.result("dense", "mixed", "full").scenes["arts"].metrics["ndcg@10"]
    assert a.mean == b.mean


def test_baselines_run_and_beat_random_where_they_should(data):
    methods = [PopularityMethod(), CooccurrenceMethod(), BM25Method(), DenseMethod(), FusedMethod()]
    methods.append(Constant())
    report = evaluate(data, methods, n_bootstrap=50)
    assert all_numbers_in_unit_interval(report)
    random_ndcg = report.result("constant", "cold", "full").scenes["overall"].metrics["ndcg@10"].mean
    for name in ("cooccurrence", "bm25", "dense", "fused"):  # topics carry across scenes in this data
        assert report.result(name, "cold", "full").scenes["overall"].metrics["ndcg@10"].mean > random_ndcg
    for r in report.results:
        assert r.scenes["overall"].invalid.total_invalid == 0
        assert r.scenes["overall"].mean_candidates > 0


def test_bm25_maps_the_index_order_to_columns(data):
    bm25 = BM25Method()
    bm25.fit(data)
    scores = bm25.score([["arts-00003"]], "office")  # title "thing topic3 arts"
    cols = data.scene_column["office"]
    assert scores[0, cols["office-00003"]] > scores[0, cols["office-00004"]]


def test_cooccurrence_follows_training_pairs():
    data = synthetic_data(n_items=50, n_users=0, n_cases=2)
    data.train_histories = {"u1": ["arts-00001", "office-00007"], "u2": ["arts-00001", "office-00007"],
                            "u3": ["arts-00002", "office-00009"]}
    method = CooccurrenceMethod()
    method.fit(data)
    scores = method.score([["arts-00001"], ["arts-00002"], []], "office")
    cols = data.scene_column["office"]
    assert np.argmax(scores[0]) == cols["office-00007"]
    assert scores[0, cols["office-00007"]] == pytest.approx(1.0)
    assert np.argmax(scores[1]) == cols["office-00009"]
    assert scores[2].max() < 1e-8  # nothing to go on: only the popularity tie-break


def test_transitions_follow_the_order_of_training_histories():
    """Where co-occurrence sees one pair both ways, transitions rank what came after."""
    data = synthetic_data(n_items=50, n_users=0, n_cases=2)
    data.train_histories = {"u1": ["office-00003", "office-00007"], "u2": ["office-00003", "office-00007"],
                            "u3": ["office-00009", "office-00003"], "u4": ["arts-00002", "office-00009"]}
    cols = data.scene_column["office"]
    cooccurrence, transitions = CooccurrenceMethod(), TransitionsMethod()
    cooccurrence.fit(data)
    transitions.fit(data)
    after_7 = transitions.score([["office-00007"]], "office")[0]
    assert after_7.max() < 1e-8  # nothing ever followed office-00007
    assert cooccurrence.score([["office-00007"]], "office")[0, cols["office-00003"]] > 0.5
    after_3 = transitions.score([["office-00003"]], "office")[0]
    assert np.argmax(after_3) == cols["office-00007"]
    assert after_3[cols["office-00009"]] < 1e-8  # office-00009 came before office-00003, not after
    after_arts = transitions.score([["arts-00002"]], "office")[0]  # across scenes too
    assert np.argmax(after_arts) == cols["office-00009"]


def test_fused_mirrors_rrf_of_dense_and_bm25(data):
    fused = FusedMethod()
    fused.fit(data)
    history = [data.cases[0].history]
    scene = data.cases[0].target_scene
    scores = fused.score(history, scene)[0]
    s = data.retrieval
    assert scores.max() <= (1 + s.lexical_weight) / (s.rrf_k + 1) + 1e-12
    assert (scores > 0).sum() <= s.dense_candidates + s.lexical_candidates
    cols = data.scene_column[scene]
    assert all(scores[cols[i]] == 0 for i in history[0] if i in cols)  # owned items never fused in


def test_registry_is_explicit_and_lazy():
    assert set(BASELINES) <= set(METHODS) and "transfer" in METHODS
    assert isinstance(make_method("dense"), DenseMethod)
    with pytest.raises(UnknownMethodError, match="known: popularity"):
        make_method("nope")


def test_unavailable_method_is_skipped_with_a_note(data, monkeypatch):
    monkeypatch.setitem(METHODS, "ghost", ("scenerec.no_such_module", "Ghost"))
    with pytest.raises(MethodUnavailableError):
        make_method("ghost")
    report = evaluate(data, ["popularity", "ghost"], n_bootstrap=10)
    assert report.methods == ["popularity"]
    assert "ghost" in report.skipped and "not available" in report.skipped["ghost"]


def test_max_cases_takes_a_seeded_subset(data):
    a = evaluate(data, ["popularity"], n_bootstrap=10, max_cases=30, protocols=("full",))
    b = evaluate(data, ["popularity"], n_bootstrap=10, max_cases=30, protocols=("full",))
    assert a.n_cases == 30 and a.numbers() == b.numbers()


def test_report_files_parse_and_the_plot_is_a_png(data, tmp_path):
    report = evaluate(data, [PopularityMethod(), DenseMethod()], n_bootstrap=50)
    paths = write_report(report, tmp_path / "out")
    parsed = EvalReport.model_validate_json(paths["json"].read_text())
    assert parsed.numbers() == report.numbers()
    md = paths["markdown"].read_text()
    for setting in ("mixed", "cold"):
        for protocol in ("full", "sampled"):
            assert f"setting `{setting}`, protocol `{protocol}`" in md
    assert "| dense |" in md and "arts NDCG@10" in md and "office MRR" in md
    png = paths["png"].read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    import matplotlib.image

    assert matplotlib.image.imread(paths["png"]).ndim == 3


def test_compare_pairs_two_methods_on_the_same_cases(data):
    report = evaluate(data, [PopularityMethod(), DenseMethod(), CooccurrenceMethod()], n_bootstrap=200)
    for scene in ("arts", "office", "overall"):
        cooc = report.result("cooccurrence", "cold", "full").scenes[scene].metrics["ndcg@10"].mean
        dense = report.result("dense", "cold", "full").scenes[scene].metrics["ndcg@10"].mean
        comparison = report.compare("cooccurrence", "dense", "cold", "full", scene)
        assert comparison.ratio == pytest.approx(cooc / dense, rel=1e-3)  # the report's means are rounded
        assert comparison.low < comparison.ratio < comparison.high
        assert comparison.n_cases == report.result("dense", "cold", "full").scenes[scene].n_cases
    itself = report.compare("cooccurrence", "cooccurrence", "mixed", "sampled", "overall", "mrr")
    assert (itself.low, itself.ratio, itself.high) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ScenerecError, match="unknown metric"):
        report.compare("dense", "popularity", "cold", "full", "arts", "ndcg@3")
    read_back = EvalReport.model_validate_json(report.model_dump_json())
    with pytest.raises(ScenerecError, match="per-case values"):
        read_back.compare("dense", "popularity", "cold", "full", "arts")


def test_report_pairs_every_other_method_with_the_best_baseline(data, tmp_path):
    report = evaluate(data, [PopularityMethod(), DenseMethod(), Constant()], n_bootstrap=50, protocols=("full",))
    cells = {(c.setting, c.scene): c for c in report.comparisons}
    assert set(cells) == {(s, scene) for s in ("mixed", "cold") for scene in ("arts", "office", "overall")}
    for (setting, scene), c in cells.items():
        assert c.method == "constant" and c.protocol == "full"
        means = {m: report.result(m, setting, "full").scenes[scene].metrics["ndcg@10"].mean
                 for m in ("popularity", "dense")}
        assert c.baseline == max(means, key=means.get)
    md = write_report(report, tmp_path)["markdown"].read_text()
    assert "## Against the best baseline (NDCG@10)" in md
    assert "| cold | full | overall | constant | dense |" in md
    written = report.model_dump_json()
    assert EvalReport.model_validate_json(written).model_dump_json() == written


# --- end to end on the demo store (slow: real encoder, chroma, BM25) ---


@pytest.mark.slow
def test_demo_end_to_end(demo_settings, encoder, tmp_path):
    from scenerec.recommend.recommender import Recommender

    with Recommender.open(settings=demo_settings, encoder=encoder) as rec:
        split = "test" if rec.items.cases("test") else rec.items.cases()[0].split
        data = EvalData.from_recommender(rec, split)
        first = evaluate(data, [*BASELINES, "transfer"], split=split, n_bootstrap=100)
        again = evaluate(EvalData.from_recommender(rec, split), list(BASELINES), split=split, n_bootstrap=100)
    assert first.methods == list(BASELINES)
    assert "transfer" in first.skipped or "transfer" in first.methods
    assert all_numbers_in_unit_interval(first)
    baselines_only = {k: v for k, v in first.numbers().items() if not k.startswith("transfer/")}
    assert baselines_only == again.numbers()
    assert len(first.results) == len(first.methods) * 4
    for r in first.results:
        assert r.scenes["overall"].invalid.total_invalid == 0
    users_in_split = {c.user_id for c in data.cases}
    assert not users_in_split & set(data.train_histories)
    paths = write_report(first, tmp_path / "demo-eval")
    assert json.loads(paths["json"].read_text())["split"] == split
    assert paths["png"].read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_cli_eval_writes_the_report(demo_settings, tmp_path):
    out = tmp_path / "cli-eval"
    with_cases = json.loads(
        subprocess.run(
            [sys.executable, "-c",
             "import json,sys; from scenerec.stores.item_store import ItemStore; "
             f"s=ItemStore(__import__('pathlib').Path({str(demo_settings.data_dir / 'catalog.sqlite')!r})); "
             "print(json.dumps(sorted({c.split for c in s.cases()})))"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
    )
    split = "test" if "test" in with_cases else with_cases[0]
    proc = subprocess.run(
        [sys.executable, "-m", "scenerec", "eval", "--data-dir", str(demo_settings.data_dir),
         "--split", split,
         "--methods", "popularity,dense,transfer", "--protocol", "full", "--setting", "cold",
         "--bootstrap", "20", "--out", str(out), "--json", "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = EvalReport.model_validate_json(proc.stdout)
    assert report.settings == ["cold"] and report.protocols == ["full"]
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.png"}
    bad = subprocess.run(
        [sys.executable, "-m", "scenerec", "eval", "--data-dir", str(demo_settings.data_dir),
         "--methods", "nope"],
        capture_output=True, text=True, timeout=600,
    )
    assert bad.returncode == 1 and "unknown evaluation method 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_fused_measures_what_recommend_returns(demo_settings, encoder):
    """The `fused` method's top 10 is `Recommender.recommend_for_history(k=10)` on the same history."""
    from scenerec.evaluation.metrics import top_k_columns
    from scenerec.recommend.recommender import Recommender

    with Recommender.open(settings=demo_settings, encoder=encoder) as rec:
        data = EvalData.from_recommender(rec, "test")
        fused = FusedMethod()
        fused.fit(data)
        for case in data.cases[:12]:
            scores = fused.score([case.history], case.target_scene)
            columns = data.scene_column[case.target_scene]
            scores[0, [columns[i] for i in case.history if i in columns]] = -np.inf
            ids = data.scene_item_ids[case.target_scene]
            ours = [ids[c] for c in top_k_columns(scores, 10)[0]]
            history = rec.items.history_from_ids(case.user_id, case.history)
            shipped = [r.item_id for r in rec.recommend_for_history(history, case.target_scene, 10)]
            assert ours == shipped, case.case_id
