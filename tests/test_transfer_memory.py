"""The transfer model's co-occurrence memory and its two code paths, on a small synthetic catalog (no
encoder): counts with the training user taken out, and training logits equal to inference scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scenerec.settings import TransferSettings
from scenerec.transfer.data import START, ItemTable
from scenerec.transfer.memory import CooccurrenceMemory, TransitionMemory
from scenerec.transfer.scorer import TransferScorer
from scenerec.transfer.train import _Loss, train_transfer

TINY = TransferSettings(
    hidden=16,
    layers=1,
    heads=2,
    max_history=8,
    negatives=0,
    batch_users=8,
    text_neighbours=5,
    max_epochs=2,
    seed=0,
    device="cpu",
)


def test_cooccurrence_memory_takes_the_training_user_out() -> None:
    # vocabulary rows 1..4; users A {1,2,3}, B {1,2}, C {2,4}: c12=2, c13=1, c23=1, c24=1; n = 2,3,1,1
    memory = CooccurrenceMemory.build([[1, 2, 3], [1, 2], [2, 4]], size=5)
    full = memory.columns(np.array([1, 2, 3, 4])).toarray()
    assert full[1] == pytest.approx([0, 2 / np.sqrt(2 * 3), 1 / np.sqrt(2 * 1), 0])
    assert full[4] == pytest.approx([0, 1 / np.sqrt(1 * 3), 0, 0])
    # training on A: A's own co-purchases are out, so item 1 is left with B alone (n_1 = 1, n_2 = 2)
    block = memory.training_block(np.array([[1]]), np.array([2, 3, 4]), [np.array([1, 2, 3])])
    assert block[0, 0] == pytest.approx([1 / np.sqrt(1 * 2), 0, 0])
    # training on C: item 2's link to 4 was C's alone; its link to 1 (A and B) stays, n_2 = 2
    block = memory.training_block(np.array([[2]]), np.array([1, 3, 4]), [np.array([2, 4])])
    assert block[0, 0] == pytest.approx([2 / np.sqrt(2 * 2), 1 / np.sqrt(2 * 1), 0])


def test_transition_memory_keeps_the_order_and_weighs_by_gap() -> None:
    # users A: 1 2 3, B: 1 2, C: 3 1. Within window 2: 1->2 (A, B; gap 1), 2->3 (A, 1), 1->3 (A, gap 2:
    # 1/2), 3->1 (C, 1); n_1 = 3, n_2 = 2, n_3 = 2
    memory = TransitionMemory.build([[1, 2, 3], [1, 2], [3, 1]], size=4, window=2)
    m = memory.columns(np.array([1, 2, 3])).toarray()  # rows: earlier item; columns: later items 1, 2, 3
    assert m[1] == pytest.approx([0, 2 / np.sqrt(3 * 2), 0.5 / np.sqrt(3 * 2)])
    assert m[2] == pytest.approx([0, 0, 1 / np.sqrt(2 * 2)])  # 2 was never followed by 1
    assert m[3] == pytest.approx([1 / np.sqrt(2 * 3), 0, 0])
    assert TransitionMemory.build([[1, 2, 3]], size=4, window=1).columns(np.array([3]))[1, 0] == 0
    again = TransitionMemory.from_state(memory.state())
    assert np.allclose(again.columns(np.array([1, 2, 3])).toarray(), m)


def test_a_mix_with_transitions_ranks_what_followed_the_last_item() -> None:
    """The shipped mix's transition weight reaches `recommend`'s index: with transitions alone, the
    item that followed the user's newest item in training histories comes first; the model's own
    query rows (no mix) carry no transition weight."""
    from scenerec.transfer.train import rebuild_memories

    table, histories = _synthetic()
    model = train_transfer(table, histories[:50], [], TINY).model.eval()
    model.attach(table)
    follows = [["a-05", "a-17"]] * 5 + [["a-17", "a-05"]]  # mostly a-05 then a-17
    rebuild_memories(model, table, histories[:50] + follows, 3)
    alone = {"model": 0.0, "cooccurrence": 0.0, "transitions": 1.0, "popularity": 1e-6}
    shipped = {"decay": 0.9, "choice": {"a": {"mixed": alone, "cold": alone}}}
    scorer = TransferScorer(model, table, shipped=shipped)
    columns = scorer.item_ids("a")
    top = columns[int(np.argmax(scorer.scores([["b-01", "a-05"]], "a")[0]))]
    assert top == "a-17"
    plain = TransferScorer(model, table).queries([["b-01", "a-05"]], "a")
    assert not plain[:, scorer.layout.block("transitions")].any()


def _synthetic(seed: int = 0) -> tuple[ItemTable, list[list[str]]]:
    """Two scenes of 30 items with random unit vectors; 60 users whose histories follow 3 tastes."""
    rng = np.random.default_rng(seed)
    ids = {s: [f"{s}-{i:02d}" for i in range(30)] for s in ("a", "b")}
    vectors = {s: rng.normal(size=(30, 24)).astype(np.float32) for s in ids}
    for v in vectors.values():
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    histories = []
    for u in range(60):
        taste = u % 3
        items = [f"{s}-{taste * 10 + int(rng.integers(10)):02d}" for s in rng.choice(["a", "b"], size=8)]
        histories.append(list(dict.fromkeys(items)))
    return ItemTable.build(ids, vectors), histories


def test_training_logits_are_the_inference_scores() -> None:
    """What the loss trains is what recommend ranks by: the torch path of training and the sparse
    numpy index of inference give the same scores for a user outside the training set."""
    table, histories = _synthetic()
    model = train_transfer(table, histories[:50], [], TINY).model.eval()
    scorer = TransferScorer(model, table)
    history = histories[55]  # not a training user: nothing to take out
    tokens = torch.as_tensor([[START, *table.tokens(history)]])
    nobody = [np.zeros(0, np.int64)]
    loss = _Loss(model, table, nobody, 0, np.random.default_rng(0))
    for scene in table.scenes:
        with torch.no_grad():
            logits = loss.logits(
                model.encode(tokens),
                tokens,
                model.vocab_row.numpy()[tokens.numpy()],
                nobody,
                np.array([0]),
                np.array([tokens.shape[1] - 1]),
                table.scene_id(scene),
                table.scene_tokens[scene],
            )
        assert np.allclose(logits.numpy()[0], scorer.scores([history], scene)[0], atol=1e-4)


def test_cold_dropout_spares_users_with_one_scene():
    """With every user dropped to the cold setting, a single-scene user still gets their mixed
    examples (there is nothing to transfer from), and a two-scene user only cold ones."""
    from scenerec.transfer.data import epoch_examples

    scene_of = np.array([2, 2, 0, 0, 1, 1])  # tokens 2, 3 in scene 0; 4, 5 in scene 1
    single, both = [2, 3, 2], [2, 4, 3, 5]
    examples = epoch_examples([single, both], scene_of, 8, 1.0, np.random.default_rng(0))
    mine = [e for e in examples if e.owner == 0]
    assert mine and sum(len(e.targets) for e in mine) == len(single)
    theirs = [e for e in examples if e.owner == 1]
    assert theirs and all(len(set(e.target_scenes)) == 1 for e in theirs)
    dropped = theirs[0].target_scenes[0]
    assert all(scene_of[t] != dropped for e in theirs for t in e.tokens[1:])


def test_long_histories_are_cut_to_a_percentile_of_the_lengths():
    from scenerec.transfer.data import history_cap

    lengths = [5] * 95 + [400] * 5
    assert history_cap(lengths, 90, 8) == 8  # the 90th percentile is 5: the floor holds
    assert history_cap(lengths, 99, 8) == 400
    assert history_cap([], 95, 8) == 8
