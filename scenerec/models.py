"""Pydantic models: the contracts between catalog, stores, agent and the user-facing layers."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCENE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def validate_scene_name(scene: str) -> str:
    """Scene names become collection and file names, so they are kept to a safe alphabet."""
    if not SCENE_NAME.match(scene):
        raise ValueError(
            f"scene name {scene!r} must be 1-63 characters of lowercase letters, digits, '-' or '_'"
        )
    return scene


class Item(BaseModel):
    """One catalog item of one scene."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str = Field(min_length=1, max_length=256)
    scene: str
    title: str = Field(min_length=1)
    text: str = ""

    @field_validator("scene")
    @classmethod
    def _scene(cls, value: str) -> str:
        return validate_scene_name(value)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title is empty")
        return value

    @property
    def document(self) -> str:
        """The text that is embedded and indexed: title, then the descriptive text."""
        return f"{self.title}. {self.text}" if self.text else self.title

    @property
    def content_hash(self) -> str:
        """Hash of the embedded text: the embedding cache key (with the model name)."""
        return hashlib.sha256(self.document.encode("utf-8")).hexdigest()


class Interaction(BaseModel):
    """A user touched an item; `position` orders a user's history (0 = oldest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1)
    scene: str
    position: int = Field(ge=0)


class Case(BaseModel):
    """A held-out evaluation case: predict `target_item` in `target_scene` from `history`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str = Field(min_length=1)
    split: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    target_scene: str
    target_item: str = Field(min_length=1)
    history: list[str]


class HistoryEntry(BaseModel):
    """One item of a user's history, resolved to its scene and title."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    scene: str
    title: str
    position: int


class UserHistory(BaseModel):
    """A user's ordered history across all scenes."""

    user_id: str
    entries: list[HistoryEntry]

    def in_scene(self, scene: str) -> list[HistoryEntry]:
        """The entries of one scene, oldest first."""
        return [e for e in self.entries if e.scene == scene]

    def outside_scene(self, scene: str) -> list[HistoryEntry]:
        """The entries of every other scene: what cross-scene transfer works from."""
        return [e for e in self.entries if e.scene != scene]

    @property
    def item_ids(self) -> list[str]:
        return [e.item_id for e in self.entries]

    def scene_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry.scene] = counts.get(entry.scene, 0) + 1
        return counts


EvidenceKind = Literal["co_purchase", "shared_attributes", "text_nearness", "model", "nearest"]


class Evidence(BaseModel):
    """A history item that pulled a recommendation in: how close it is (cosine), and, where attribution
    ran, its share of the ranking score (leave-one-out) and the typed reason (see recommend/evidence.py)."""

    item_id: str
    title: str
    scene: str
    similarity: float
    kind: EvidenceKind = "nearest"
    share: float | None = None  # this item's part of the positive leave-one-out contributions, in [0, 1]
    delta: float | None = None  # ranking score minus the score without this history item
    count: int | None = None  # co_purchase: training users who bought both
    after: int | None = None  # co_purchase: of those, how many bought the recommended item later
    words: list[str] = Field(default_factory=list)  # shared attribute / text words
    joint: bool = False  # cited as one of a group that moved the item only together (no one alone did)


class Recommendation(BaseModel):
    """One recommended item, with the history items that explain it."""

    item_id: str
    title: str
    scene: str
    score: float  # readable: the item's percentile within the scene for this user, in [0, 1]
    source: Literal["personalized", "popular", "transfer"] = "personalized"
    evidence: list[Evidence] = Field(default_factory=list)
    explanation: str | None = None
    raw_score: float | None = None  # the ranking's own score (fused RRF, model score, popularity count)
    method: str | None = None  # what ranked it: "transfer", "mean-query+bm25", "popularity", …
    peers: tuple[int, int] | None = None  # (users like this one who bought it, users like this one)
    # no history item, alone or with a few others, moves it, and it ranks as high with no history at all:
    # the scene's prior (its learned popularity) put it here, and `buyers` says how popular it is
    prior: bool = False
    buyers: int | None = None  # training users who bought it (set with `prior`)


class SceneInfo(BaseModel):
    """What `scenerec scenes` lists."""

    scene: str
    items: int
    users: int
    interactions: int
