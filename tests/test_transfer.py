"""The transfer model on the demo catalog: it learns, it saves and loads exactly, bad checkpoints fall
back to the mean profile, the cold path never sees the target scene, and `recommend` uses it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from scenerec.cli import cli
from scenerec.evaluation.tuning import LEXICAL_WEIGHTS, train_and_save
from scenerec.models import UserHistory
from scenerec.recommend.recommender import Recommender
from scenerec.settings import Settings, TransferSettings
from scenerec.transfer.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from scenerec.transfer.data import START, cold_examples, mixed_examples
from scenerec.transfer.loading import (
    item_table,
    load_scorer,
    training_data,
    vector_model,
)
from scenerec.transfer.scorer import TransferScorer
from scenerec.transfer.train import TrainingRun, evaluate, train_transfer

pytestmark = pytest.mark.slow

SMALL = TransferSettings(
    hidden=32,
    layers=1,
    heads=2,
    max_history=20,
    negatives=64,
    batch_users=16,
    text_neighbours=10,
    max_epochs=1,
    patience=5,
    seed=0,
    device="cpu",
)


@pytest.fixture
def data_copy(demo_settings: Settings, tmp_path: Path) -> Settings:
    """A private copy of the demo data directory (the session one must not be mutated)."""
    target = tmp_path / "data"
    shutil.copytree(demo_settings.data_dir, target)
    return demo_settings.model_copy(update={"data_dir": target})


@pytest.fixture
def rec(data_copy: Settings, encoder) -> Recommender:
    with Recommender.open(settings=data_copy, encoder=encoder) as opened:
        yield opened


@pytest.fixture(scope="module")
def trained(demo_settings: Settings, encoder):
    """A model trained a few steps on the demo catalog, with its item table and valid cases."""
    torch.set_num_threads(2)
    with Recommender.open(settings=demo_settings, encoder=encoder) as r:
        table = item_table(r)
        histories, valid = training_data(r)
    result = train_transfer(table, histories, valid, SMALL)
    return result, table, histories, valid


def test_training_lowers_the_loss(demo_settings, encoder):
    with Recommender.open(settings=demo_settings, encoder=encoder) as r:
        table = item_table(r)
        histories, _ = training_data(r)
    once_an_epoch = {"max_epochs": 4, "valid_every": 10**6}
    result = train_transfer(table, histories, [], SMALL.model_copy(update=once_an_epoch))
    losses = [e.loss for e in result.epochs]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] * 0.98, losses  # 200 demo users, 4 epochs: a small but real drop


def test_a_budget_that_stops_a_still_improving_model_says_so(trained):
    _, table, histories, valid = trained
    # a budget gone after the first step: one validation after it, against the one before training
    result = train_transfer(table, histories, valid, SMALL.model_copy(update={"max_minutes": 1e-9}))
    assert result.stopped == "time budget" and result.steps == 1 and len(result.epochs) == 2
    before, after = (e.valid["ndcg10"] for e in result.epochs)
    assert result.still_improving == (after > before)
    stopped_early = train_transfer(table, histories, valid, SMALL)
    assert stopped_early.stopped != "time budget" and not stopped_early.still_improving


def test_training_is_deterministic(trained, demo_settings, encoder):
    result, table, histories, valid = trained
    again = train_transfer(table, histories, valid, SMALL)
    first = TransferScorer(result.model, table).scores([histories[0]], table.scenes[0])
    second = TransferScorer(again.model, table).scores([histories[0]], table.scenes[0])
    assert np.array_equal(first, second)
    assert [e.valid for e in again.epochs] == [e.valid for e in result.epochs]


def test_save_and_load_reproduce_the_scores_exactly(trained, tmp_path):
    result, table, _, valid = trained
    path = save_checkpoint(tmp_path / "t.pt", result.model, embedding_model="all-MiniLM-L6-v2")
    model, meta = load_checkpoint(path, embedding_model="all-MiniLM-L6-v2", dim=table.dim)
    assert meta["format_version"] == FORMAT_VERSION and meta["scenes"] == table.scenes
    assert meta["dim"] == table.dim and meta["config"]["hidden"] == SMALL.hidden
    before, after = TransferScorer(result.model, table), TransferScorer(model, table)
    some = [c.history for c in valid[:10]]
    for scene in table.scenes:
        assert np.array_equal(before.scores(some, scene), after.scores(some, scene))
        assert np.array_equal(before.scores(some, scene, cold=True), after.scores(some, scene, cold=True))


def test_cold_path_never_reads_the_target_scene(trained):
    result, table, _, valid = trained
    scorer = TransferScorer(result.model, table)
    office = table.scenes[-1]
    history = next(c.history for c in valid if any(i.startswith(office) for i in c.history))
    other_only = [i for i in history if table.scene_of[table.index[i]] != table.scene_id(office)]
    swapped = other_only + table.item_ids[-3:]  # different target-scene items (office ids sort last)
    cold = [scorer.queries([h], office, cold=True)[0] for h in (history, other_only, swapped)]
    assert np.array_equal(cold[0], cold[1]) and np.array_equal(cold[0], cold[2])
    assert not np.array_equal(cold[0], scorer.queries([history], office)[0])  # mixed does read it
    # training examples of the cold setting hold no item of the target scene in their inputs
    tokens = table.tokens(history)
    s = table.scene_id(office)
    for example in cold_examples(tokens, table.scene_of, s, 5):
        inputs = [t for t in example.tokens if t != START]
        assert all(table.scene_of[t] != s for t in inputs)
        assert all(table.scene_of[t] == s for t in example.targets)
    mixed = mixed_examples(tokens, table.scene_of, 5)
    assert sorted(t for e in mixed for t in e.targets) == sorted(tokens)


def test_recommend_uses_the_model_when_a_checkpoint_exists(rec):
    user = next(u for u in rec.items.users() if u.startswith("tr"))
    scene = "office"
    assert rec.transfer is None
    mean_profile = rec.recommend(user, scene, k=10)
    report = train_and_save(rec, SMALL)
    assert Path(report.checkpoint) == checkpoint_path(rec.paths.root) and report.best_epoch >= 0
    assert rec.transfer is not None
    # the BM25 weight of the fusion was chosen on the valid split and travels with the checkpoint
    assert report.lexical_weight in LEXICAL_WEIGHTS and len(report.lexical_weights_tried) == len(LEXICAL_WEIGHTS)
    assert rec.transfer.lexical_weight == report.lexical_weight
    learned = rec.recommend(user, scene, k=10)
    assert [(r.item_id, r.score) for r in learned] != [(r.item_id, r.score) for r in mean_profile]
    assert len({r.item_id for r in learned}) == 10
    assert not {r.item_id for r in learned} & set(rec.history(user).item_ids)
    # batch scoring goes through the same hook and agrees with recommend
    users = [u for u in rec.items.users() if u.startswith("tr")][:5]
    batch = rec.score_batch(users, scene, 5)
    for user_id, ids in zip(batch.user_ids, batch.item_ids):
        assert ids == [r.item_id for r in rec.recommend(user_id, scene, 5)]


def _write_bad(path: Path, how: str, good: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        payload = torch.load(path.with_suffix(".good"), weights_only=True)
        if how == "other-model":
            payload["embedding_model"] = "some-other-encoder"
        elif how == "other-dimension":
            payload["dim"] = 768
        elif how == "other-version":
            payload["format_version"] = FORMAT_VERSION + 1
        torch.save(payload, path)


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "unreadable"),
        ("garbage", "unreadable"),
        ("other-model", "some-other-encoder"),
        ("other-dimension", "768"),
        ("other-version", "format version"),
    ],
)
def test_a_bad_checkpoint_is_a_clear_error_and_recommend_falls_back(rec, trained, how, message, caplog):
    result = trained[0]
    user = next(u for u in rec.items.users() if u.startswith("tr"))
    mean_profile = rec.recommend(user, "arts", k=10)
    path = checkpoint_path(rec.paths.root)
    save_checkpoint(path.with_suffix(".good"), result.model, embedding_model="all-MiniLM-L6-v2")
    _write_bad(path, how, path.with_suffix(".good").read_bytes())
    with pytest.raises(CheckpointError, match=message):
        load_scorer(rec)
    with caplog.at_level(logging.WARNING):
        fallback = rec.recommend(user, "arts", k=10)
    assert rec.transfer is None
    assert [(r.item_id, r.score) for r in fallback] == [(r.item_id, r.score) for r in mean_profile]
    assert any("mean profile" in r.getMessage() and message in r.getMessage() for r in caplog.records)


def test_the_evaluation_method_loads_the_checkpoint(rec, trained):
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData

    save_checkpoint(checkpoint_path(rec.paths.root), trained[0].model, embedding_model=vector_model(rec))
    report = evaluate(EvalData.from_recommender(rec, "valid"), ["transfer", "popularity"], split="valid", protocols=("full",), n_bootstrap=10)
    assert "transfer" in report.methods and not report.skipped
    for result in report.results:
        for scene in result.scenes.values():
            assert all(0 <= m.mean <= 1 for m in scene.metrics.values())


def test_transfer_queries_survive_a_memo_that_evicts_the_requests_own_rows(rec, trained):
    # the bench over beauty-sports-toys hit this at case ~130: the empty history's row (shared by every
    # user's attribution batch) was the oldest held, and holding a request's new rows evicted it
    save_checkpoint(checkpoint_path(rec.paths.root), trained[0].model, embedding_model=vector_model(rec))
    assert rec.transfer is not None
    scene = "office"
    users = [u for u in rec.items.users() if u.startswith("tr")][:6]
    empty = UserHistory(user_id="nobody", entries=[])
    histories = [rec.history(u) for u in users]
    expected = rec.user_vectors([empty, *histories], scene)
    memo = rec._memo.check(rec._stamp).queries
    memo.clear()
    memo.size = 4
    rec.user_vectors([empty, *histories[:3]], scene)  # held: empty (the oldest), 0, 1, 2
    again = rec.user_vectors([empty, *histories[3:6]], scene)  # three new rows evict three held ones
    for got, want in zip(again, [expected[0], *expected[4:7]]):
        np.testing.assert_allclose(got, want, atol=1e-6)  # another batch: float32 rounding only


def test_the_evaluation_method_is_unavailable_without_a_checkpoint(rec):
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData

    report = evaluate(EvalData.from_recommender(rec, "valid"), ["transfer", "popularity"], split="valid", protocols=("full",), n_bootstrap=10)
    assert "transfer" in report.skipped and "scenerec train" in report.skipped["transfer"]


def test_train_command(data_copy):
    """`train` saves a checkpoint with its choices; `train --reship` chooses again on valid from a
    checkpoint whose choices predate the transition memory, and keeps the weights."""
    import torch

    from scenerec.transfer.checkpoint import read_checkpoint

    env = {
        "SCENEREC_TRANSFER__HIDDEN": "32",
        "SCENEREC_TRANSFER__NEGATIVES": "64",
        "SCENEREC_TRANSFER__TEXT_NEIGHBOURS": "10",
        "SCENEREC_TRANSFER__DEVICE": "cpu",
    }
    data_dir = str(data_copy.data_dir)
    out = CliRunner().invoke(cli, ["train", "--data-dir", data_dir, "--epochs", "1", "--no-progress", "--json"], env=env)
    assert out.exit_code == 0, out.output
    path = checkpoint_path(data_copy.data_dir)
    assert '"checkpoint"' in out.output and path.is_file()
    payload = read_checkpoint(path)
    assert payload["transitions"]["counts"].numel() > 0  # the memory `recommend` reads is saved
    # as an older checkpoint: no transition memory, choices among model, co-occurrence, popularity
    old = {k: v for k, v in payload.items() if k != "transitions"}
    for by_setting in old["metrics"]["shipped"]["choice"].values():
        for mix in by_setting.values():
            mix.pop("transitions", None)
    torch.save(old, path)
    out = CliRunner().invoke(cli, ["train", "--reship", "--data-dir", data_dir, "--json"], env=env)
    assert out.exit_code == 0, out.output
    again = read_checkpoint(path)
    assert again["transitions"]["counts"].numel() > 0
    assert all("transitions" in mix for s in again["metrics"]["shipped"]["choice"].values() for mix in s.values())
    assert all(torch.equal(again["state_dict"][k], v) for k, v in payload["state_dict"].items())
    assert again["metrics"]["epochs"] == payload["metrics"]["epochs"]  # the training record is kept


def test_fused_transfer_is_the_model_plus_bm25(rec, trained):
    """The `fused-transfer` method measures what `recommend` ships with a checkpoint: at BM25 weight 0
    its top 10 are the model's own; with BM25 weighted in, lists change but stay valid."""
    from scenerec.evaluation.methods import EvalData
    from scenerec.evaluation.transfer_methods import FusedTransferMethod, TransferMethod

    save_checkpoint(checkpoint_path(rec.paths.root), trained[0].model, embedding_model=vector_model(rec))
    histories = [c.history for c in rec.items.cases("valid")[:20]]
    top = {}
    for weight in (0.0, 1.0):
        settings = rec.settings.model_copy(
            update={"retrieval": rec.settings.retrieval.model_copy(update={"transfer_lexical_weight": weight})}
        )
        data = EvalData.from_recommender(rec, split="valid")
        data.settings, data.retrieval = settings, settings.retrieval
        fused = FusedTransferMethod()
        fused.fit(data)
        top[weight] = np.argsort(-fused.score(histories, "office"), axis=1, kind="stable")[:, :10]
    plain = TransferMethod()
    plain.fit(data)
    scores = plain.score(histories, "office")
    columns = data.scene_column["office"]
    for row, history in enumerate(histories):
        scores[row, [columns[i] for i in history if i in columns]] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert np.array_equal(top[0.0], expected)
    assert not np.array_equal(top[1.0], expected)


def test_what_ships_is_never_below_the_baselines_on_valid(rec, trained):
    """The mix chosen on valid, scored by the harness exactly as `recommend` ranks (BM25 weight 0), is
    at least co-occurrence and popularity over each setting's valid cases, and in every cell it is
    the pooled choice or a scene's own better one; `recommend` and the report name and use it."""
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData
    from scenerec.evaluation.transfer_methods import ShippedMethod
    from scenerec.evaluation.tuning import memory_histories
    from scenerec.transfer.shipping import choose_shipping
    from scenerec.transfer.train import rebuild_memories

    result, table, _, valid = trained
    model = result.model
    window = rec.settings.retrieval.transition_window
    rebuild_memories(model, table, memory_histories(rec, "valid"), window)  # what the baselines read on valid
    shipped = choose_shipping(TransferScorer(model, table), valid, rec.settings.retrieval.recency_decay)
    assert set(shipped["choice"]) == set(table.scenes)
    data = EvalData.from_recommender(rec, "valid")
    baselines = ("cooccurrence", "transitions", "popularity")
    methods = [*baselines, ShippedMethod(model=model, shipped=shipped, lexical_weight=0.0)]
    report = evaluate(data, methods, split="valid", protocols=("full",), n_bootstrap=0)
    assert report.shipped == "shipped"
    for setting in report.settings:
        ours = report.result("shipped", setting, "full").scenes
        best = max(
            report.result(b, setting, "full").scenes["overall"].metrics["ndcg@10"].mean
            for b in baselines
        )
        assert ours["overall"].metrics["ndcg@10"].mean >= best - 1e-9, (setting, shipped["choice"])
        for scene in table.scenes:
            cell = shipped["choice"][scene][setting]
            assert cell["by"] == "scene" or cell["method"] == shipped["pooled"][setting]["method"]

    # a checkpoint that ships popularity everywhere: `recommend`'s candidates are the popular items
    everywhere = {"model": 0.0, "cooccurrence": 0.0, "popularity": 1.0, "method": "popularity"}
    record = {"decay": 0.9, "choice": {s: {"mixed": everywhere, "cold": everywhere} for s in table.scenes}}
    save_checkpoint(
        checkpoint_path(rec.paths.root), model, embedding_model=vector_model(rec),
        metrics={"shipped": record, "transfer_lexical_weight": 0.0},
    )
    histories = [h for h in (c.history for c in rec.items.cases("valid")) if h][:2]
    scorer = load_scorer(rec)
    assert scorer.shipped == record
    popular = np.argsort(-scorer.index("office").popularity, kind="stable")
    scores = scorer.scores(histories, "office")
    assert all(np.argmax(row) == popular[0] for row in scores)


def test_a_scene_leaves_the_pooled_choice_only_on_a_clear_valid_win():
    """A scene whose own best beats the pooled choice by a few lucky hits keeps the pooled choice;
    one that wins on most of its cases ships its own best."""
    from scenerec.transfer.shipping import candidates, choose_from_gains

    rng = np.random.default_rng(0)
    names = list(candidates())

    def cell(n: int, hits: dict[str, float]) -> dict[str, np.ndarray]:
        base = (rng.random(n) < 0.05).astype(float) * 0.5
        return {name: np.where(rng.random(n) < hits.get(name, 0.0), 1.0, base) for name in names}

    noisy = cell(300, {"model": 0.0})
    noisy["popularity"] = noisy["model"].copy()
    noisy["popularity"][:3] = 1.0  # three lucky hits more than the model
    clear = cell(300, {})
    clear["cooccurrence"] = np.maximum(clear["model"], (rng.random(300) < 0.4).astype(float))
    strong = {name: np.full(300, 0.0) for name in names}
    strong["model"] = (rng.random(300) < 0.6).astype(float)
    chosen = choose_from_gains({"cold": {"a": noisy, "b": clear, "c": strong}})
    assert chosen["pooled"]["cold"]["method"] == "model"
    assert chosen["choice"]["a"]["cold"]["method"] == "model"  # popularity's edge is noise
    assert chosen["choice"]["a"]["cold"]["by"] == "pooled"
    assert chosen["choice"]["b"]["cold"]["method"] == "cooccurrence"
    assert chosen["choice"]["b"]["cold"]["by"] == "scene"


def test_training_keeps_the_better_of_the_weights_and_their_running_average(trained):
    _, table, histories, valid = trained
    settings = SMALL.model_copy(update={"max_epochs": 2})
    run = TrainingRun(table, histories, valid, settings)
    run.advance()
    # the average is a real average: after the steps it is not the last weights
    assert any(not torch.equal(a, p) for a, p in zip(run.average, run.params))
    result = run.finish()
    checks = [e.valid for e in result.epochs[1:]]
    assert checks and all(v["ndcg10"] == max(v["raw_ndcg10"], v["averaged_ndcg10"]) for v in checks)
    # what is kept scores on valid exactly what it was kept for
    assert evaluate(TransferScorer(result.model, table), valid)["ndcg10"] == pytest.approx(
        result.best_valid["ndcg10"], abs=1e-9
    )
    plain = train_transfer(table, histories, valid, settings.model_copy(update={"average_epochs": 0}))
    assert all("averaged_ndcg10" not in e.valid for e in plain.epochs)
