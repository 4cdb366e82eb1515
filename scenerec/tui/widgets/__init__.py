"""Widgets named for what they show."""

from .chat_pane import ChatPane
from .profile_panel import ProfilePanel
from .recommendation_cards import RecommendationCard, RecommendationCards
from .scene_tabs import SceneTabs

__all__ = ["ChatPane", "ProfilePanel", "RecommendationCard", "RecommendationCards", "SceneTabs"]
