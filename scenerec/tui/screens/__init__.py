"""Screens besides the main one: the first-run ingest and an item's details."""

from .ingest_screen import IngestScreen, ingest_with_progress
from .item_details import ItemDetailsScreen

__all__ = ["IngestScreen", "ItemDetailsScreen", "ingest_with_progress"]
