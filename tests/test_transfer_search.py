"""The configuration search (successive halving on the valid split) on the demo catalog: every
configuration gets the first slice, the better half by valid NDCG@10 goes on, the winner is what the
checkpoint holds and what `scenerec train` reports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from scenerec.cli import cli
from scenerec.evaluation.tuning import train_and_save
from scenerec.recommend.recommender import Recommender
from scenerec.settings import Settings, TransferSettings
from scenerec.transfer.checkpoint import checkpoint_path, read_checkpoint
from scenerec.transfer.loading import item_table, training_data
from scenerec.transfer.search import SEARCH_SPACE, configurations, search_transfer

pytestmark = pytest.mark.slow

SMALL = TransferSettings(
    hidden=32,
    layers=1,
    heads=2,
    max_history=20,
    negatives=64,
    batch_users=16,
    text_neighbours=10,
    max_epochs=30,
    valid_every=5,
    patience=50,
    seed=0,
    device="cpu",
)


@pytest.fixture(scope="module")
def demo_data(demo_settings: Settings, encoder):
    torch.set_num_threads(2)
    with Recommender.open(settings=demo_settings, encoder=encoder) as r:
        return item_table(r), *training_data(r)


@pytest.fixture(scope="module")
def searched(demo_data):
    table, histories, valid = demo_data
    return search_transfer(table, histories, valid, SMALL, max_steps=120)


def test_every_configuration_starts_and_the_better_half_goes_on(searched):
    trials = {t.name: t for t in searched.trials}
    assert list(trials) == list(SEARCH_SPACE)  # the defaults ask for all four, in table order
    assert sorted(t.rungs for t in trials.values()) == [1, 1, 2, 3]
    assert trials[searched.chosen].rungs == 3 and trials[searched.chosen].stopped == "max_steps"
    assert all(t.stopped == "halved" for t in trials.values() if t.rungs < 3)
    # a configuration halved after rung r was no better than any that went on past it
    # (a survivor's best only rises after that)
    for out in trials.values():
        for kept in trials.values():
            if kept.rungs > out.rungs:
                assert kept.best_valid >= out.best_valid, (kept, out)
    # the winner trained longest, and was the budget's largest share
    assert trials[searched.chosen].steps == max(t.steps for t in trials.values())
    assert sum(t.steps for t in trials.values()) <= 120 + len(trials)


def test_the_winner_is_its_own_configuration(searched):
    model = searched.result.model
    assert model.settings == searched.settings
    assert searched.settings == configurations(SMALL)[searched.chosen]
    assert searched.result.best_valid["ndcg10"] == pytest.approx(
        next(t.best_valid for t in searched.trials if t.name == searched.chosen)
    )


def test_the_search_is_deterministic_for_a_step_budget(demo_data, searched):
    table, histories, valid = demo_data
    again = search_transfer(table, histories, valid, SMALL, max_steps=120)
    assert again.chosen == searched.chosen
    assert [(t.name, t.best_valid, t.steps) for t in again.trials] == [
        (t.name, t.best_valid, t.steps) for t in searched.trials
    ]


def test_under_a_time_budget_configurations_are_ranked_after_the_same_epochs(demo_data):
    """Where epochs are short against the budget, the rungs end on epochs, not on the clock: every
    configuration is ranked after the same passes over the data, so the choice is the same on a slow
    or busy machine as on a fast one."""
    table, histories, valid = demo_data
    timed = SMALL.model_copy(update={"max_minutes": 30.0, "max_epochs": 6, "search_epochs": 1.0})
    first = search_transfer(table, histories, valid, timed)
    trials = {t.name: t for t in first.trials}
    for t in trials.values():
        assert t.steps_per_epoch > 0
        if t.rungs == 1:  # halved after rung 0: one epoch, to the step
            assert t.steps == t.steps_per_epoch, t
        elif t.rungs == 2:  # and after rung 1: three epochs in all (one, then two more)
            assert t.steps == 3 * t.steps_per_epoch, t
    winner = trials[first.chosen]
    assert winner.rungs == 3 and winner.stopped == "max_epochs"
    assert first.seconds < 0.5 * timed.max_minutes * 60  # the caps, not the clock, ended the rungs
    again = search_transfer(table, histories, valid, timed)
    assert [(t.name, t.best_valid, t.steps) for t in again.trials] == [
        (t.name, t.best_valid, t.steps) for t in first.trials
    ]


def test_configurations_are_relative_to_the_settings_and_never_repeated():
    configs = configurations(SMALL)
    assert configs["narrow"].hidden == 16 and configs["short-history"].max_history == 8
    assert not configs["text-only"].item_offsets and configs["default"] == SMALL
    without_identity = SMALL.model_copy(update={"item_offsets": False})
    assert "text-only" not in configurations(without_identity)  # the same as the defaults there
    with pytest.raises(ValueError, match="unknown configuration.*'wide'"):
        configurations(SMALL.model_copy(update={"search": ["default", "wide"]}))


def test_without_valid_cases_there_is_nothing_to_choose_on(demo_data):
    table, histories, _ = demo_data
    alone = search_transfer(table, histories, [], SMALL, max_steps=10)
    assert alone.chosen == "default" and [t.name for t in alone.trials] == ["default"]


def test_train_saves_the_chosen_configuration_and_says_which(demo_settings, tmp_path: Path):
    target = tmp_path / "data"
    shutil.copytree(demo_settings.data_dir, target)
    settings = demo_settings.model_copy(update={"data_dir": target})
    with Recommender.open(settings=settings) as rec:
        report = train_and_save(rec, SMALL, max_steps=40)
    saved = read_checkpoint(checkpoint_path(target))
    assert report.configuration in SEARCH_SPACE and len(report.search) == 4
    assert saved["metrics"]["configuration"] == report.configuration
    assert saved["config"] == configurations(SMALL)[report.configuration].model_dump(mode="json")
    out = CliRunner().invoke(
        cli,
        ["train", "--data-dir", str(target), "--epochs", "1", "--no-progress", "--no-search"],
        env={
            "SCENEREC_TRANSFER__HIDDEN": "32",
            "SCENEREC_TRANSFER__NEGATIVES": "64",
            "SCENEREC_TRANSFER__TEXT_NEIGHBOURS": "10",
            "SCENEREC_TRANSFER__DEVICE": "cpu",
        },
    )
    assert out.exit_code == 0, out.output
    assert "configuration chosen" not in out.output  # one configuration: nothing was chosen
    assert read_checkpoint(checkpoint_path(target))["metrics"]["configuration"] == "default"
