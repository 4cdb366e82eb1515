"""scenerec: carries what it knows about a person from one scene into another."""

from .models import Case, Evidence, HistoryEntry, Interaction, Item, Recommendation, SceneInfo, UserHistory
from .settings import Settings, load_settings

__all__ = [
    "Case",
    "Evidence",
    "HistoryEntry",
    "Interaction",
    "Item",
    "Recommendation",
    "SceneInfo",
    "Settings",
    "UserHistory",
    "load_settings",
]
