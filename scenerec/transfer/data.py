"""Training data for the transfer model: an item table over frozen vectors, and next-item examples.

Token ids: 0 is padding, 1 is the start-of-history token, items are 2..n+1 (`ItemTable.index`).
An example is one input sequence (start token, then history items) with targets attached to output
positions: the output at position t has seen the start token and the first t items, so it is the
user state used to predict what comes next. A *mixed* example keeps the whole history; a *cold*
example for scene s keeps only the items outside s, and its targets are the items of s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

PAD = 0
START = 1
FIRST_ITEM = 2


@dataclass
class ItemTable:
    """Every item of every scene with its frozen vector, addressed by token id."""

    item_ids: list[str]  # token id FIRST_ITEM + i is item_ids[i]
    scenes: list[str]
    vectors: np.ndarray  # (n_tokens, d) float32; rows PAD and START are zero
    scene_of: np.ndarray  # (n_tokens,) int64; PAD and START get len(scenes), the "no scene" id
    scene_tokens: dict[str, np.ndarray] = field(default_factory=dict)  # token ids per scene, by item id
    index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls, scene_item_ids: Mapping[str, Sequence[str]], scene_vectors: Mapping[str, np.ndarray]
    ) -> ItemTable:
        """From per-scene item ids and their vectors (the rows in the same order)."""
        scenes = sorted(scene_item_ids)
        ids: list[str] = []
        blocks: list[np.ndarray] = []
        scene_col: list[np.ndarray] = []
        for s, scene in enumerate(scenes):
            scene_ids = list(scene_item_ids[scene])
            vectors = np.asarray(scene_vectors[scene], dtype=np.float32)
            if len(scene_ids) != len(vectors):
                raise ValueError(f"scene {scene}: {len(scene_ids)} ids but {len(vectors)} vectors")
            ids += scene_ids
            blocks.append(vectors.reshape(len(scene_ids), -1))
            scene_col.append(np.full(len(scene_ids), s, dtype=np.int64))
        dim = blocks[0].shape[1] if blocks else 0
        vectors = np.concatenate([np.zeros((FIRST_ITEM, dim), np.float32), *blocks])
        scene_of = np.concatenate([np.full(FIRST_ITEM, len(scenes), np.int64), *scene_col])
        table = cls(item_ids=ids, scenes=scenes, vectors=vectors, scene_of=scene_of)
        table.index = {item_id: FIRST_ITEM + i for i, item_id in enumerate(ids)}
        start = FIRST_ITEM
        for scene in scenes:
            n = len(scene_item_ids[scene])
            table.scene_tokens[scene] = np.arange(start, start + n, dtype=np.int64)
            start += n
        return table

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def tokens(self, item_ids: Sequence[str]) -> list[int]:
        """Token ids of known items, in order; unknown ids are dropped."""
        index = self.index
        return [index[i] for i in item_ids if i in index]

    def scene_id(self, scene: str) -> int:
        return self.scenes.index(scene)


@dataclass
class Example:
    """One input sequence and the targets read off its outputs."""

    tokens: list[int]  # START first
    positions: list[int]  # output position of each target
    targets: list[int]  # target token ids
    target_scenes: list[int]
    owner: int = -1  # index of the training user whose history this is (-1: none)


def mixed_examples(history: Sequence[int], scene_of: np.ndarray, max_history: int) -> list[Example]:
    """Next-item examples over the whole history, cut into windows of at most `max_history` items."""
    examples = []
    n = len(history)
    for end in range(n, 0, -max_history):
        start = max(0, end - max_history)
        window = list(history[start:end])
        positions, targets = [], []
        for t in range(len(window) + 1):  # output t has seen window[:t]
            j = start + t  # the item that follows
            if j >= n or (t == 0 and start > 0):  # nothing follows, or a truncated prefix
                continue
            positions.append(t)
            targets.append(history[j])
        if targets:
            examples.append(
                Example([START, *window], positions, targets, [int(scene_of[x]) for x in targets])
            )
    return examples


def cold_examples(
    history: Sequence[int], scene_of: np.ndarray, scene: int, max_history: int
) -> list[Example]:
    """Examples for scene `scene` that see only the history outside it: the cold-start setting."""
    outside: list[int] = []
    waiting: dict[int, list[int]] = {}  # number of outside items seen -> targets of `scene` after them
    for token in history:
        if scene_of[token] == scene:
            waiting.setdefault(len(outside), []).append(token)
        else:
            outside.append(token)
    if not waiting:
        return []
    examples = []
    n = len(outside)
    for end in list(range(n, 0, -max_history)) or [0]:
        start = max(0, end - max_history)
        window = outside[start:end]
        positions, targets = [], []
        for t in range(len(window) + 1):
            if t == 0 and start > 0:  # a truncated prefix: the previous window's last output has it
                continue
            for target in waiting.get(start + t, []):
                positions.append(t)
                targets.append(target)
        if targets:
            examples.append(Example([START, *window], positions, targets, [scene] * len(targets)))
    return examples


@dataclass
class Batch:
    """Padded tensors for one training step (numpy; the trainer moves them to the device)."""

    tokens: np.ndarray  # (B, L) int64
    flat_positions: np.ndarray  # (T,) index into the (B*L) outputs
    targets: np.ndarray  # (T,) token ids
    target_scenes: np.ndarray  # (T,)
    owners: np.ndarray  # (B,) the training user of each row


def collate(examples: Sequence[Example]) -> Batch:
    width = max(len(e.tokens) for e in examples)
    tokens = np.zeros((len(examples), width), dtype=np.int64)
    flat, targets, scenes = [], [], []
    for row, e in enumerate(examples):
        tokens[row, : len(e.tokens)] = e.tokens
        flat += [row * width + p for p in e.positions]
        targets += e.targets
        scenes += e.target_scenes
    return Batch(
        tokens,
        np.asarray(flat, np.int64),
        np.asarray(targets, np.int64),
        np.asarray(scenes, np.int64),
        np.asarray([e.owner for e in examples], np.int64),
    )


def epoch_examples(
    histories: Sequence[Sequence[int]],
    scene_of: np.ndarray,
    max_history: int,
    cold_probability: float,
    rng: np.random.Generator,
) -> list[Example]:
    """One epoch's examples: each user's history whole, or (with `cold_probability`) with one of its
    scenes removed so that only transfer from the other scenes can predict that scene's items (only
    users with two or more scenes are dropped so)."""
    examples: list[Example] = []
    for owner, history in enumerate(histories):
        if not history:
            continue
        scenes = sorted({int(scene_of[t]) for t in history})
        # a user with one scene has nothing to transfer from: dropping it would only lose examples
        if len(scenes) > 1 and rng.random() < cold_probability:
            scene = int(rng.choice(scenes))
            made = cold_examples(history, scene_of, scene, max_history)
        else:
            made = mixed_examples(history, scene_of, max_history)
        for example in made:
            example.owner = owner
        examples += made
    return examples


def history_cap(lengths: Sequence[int], percentile: float, floor: int) -> int:
    """Most recent items of a training history that training reads: the `percentile` of the lengths,
    at least `floor` (a few very long histories would otherwise dominate the epoch's time)."""
    if not len(lengths):
        return floor
    return max(floor, int(np.ceil(np.percentile(np.asarray(lengths), percentile))))


def eval_tokens(
    table: ItemTable, history: Sequence[str], scene: str, cold: bool, max_history: int
) -> list[int]:
    """The model's input for a history: most recent `max_history` items (outside `scene` when cold)."""
    tokens = table.tokens(history)
    if cold:
        s = table.scene_id(scene) if scene in table.scenes else -1
        tokens = [t for t in tokens if table.scene_of[t] != s]
    return [START, *tokens[-max_history:]] if max_history else [START]
