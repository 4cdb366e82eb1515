"""Details of one recommended item (Enter on a card)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...models import Item, Recommendation
from ...recommend.scores import top_share
from ...text_safety import printable


def details_text(rec: Recommendation, item: Item | None, liked: bool) -> Text:
    text = Text()
    text.append(printable(rec.title, 300) + "\n", style="bold")
    text.append(f"{rec.scene} · id {printable(rec.item_id, 80)} · score {rec.score:.4f} ({top_share(rec.score)})"
                + (f" · raw {rec.raw_score:.6g} by {rec.method}" if rec.raw_score is not None else ""), style="dim")
    if liked:
        text.append("  ♥ liked", style="magenta")
    if item is not None and item.text:
        text.append("\n\n" + printable(item.text, 2000))
    if rec.explanation:
        text.append("\n\nWhy: ", style="bold")
        text.append(printable(rec.explanation, 500))
    if rec.prior:
        bought = f" ({rec.buyers} shoppers bought it)" if rec.buyers else ""
        text.append(f"\n\nOn its popularity in {rec.scene}{bought}: no history item moves it.", style="bold")
    if rec.evidence:
        text.append("\n\nClosest in your history\n", style="bold")
        for e in rec.evidence:
            text.append(f"  • «{printable(e.title, 80)}» in {e.scene} (similarity {e.similarity:.2f})\n")
    text.append("\n\nEsc to go back · l like · d dislike", style="dim")
    return text


class ItemDetailsScreen(ModalScreen[str | None]):
    """Dismissed with "like", "dislike" or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        ("escape", "dismiss_with(None)", "Back"),
        ("q", "dismiss_with(None)", "Back"),
        ("l", "dismiss_with('like')", "Like"),
        ("d", "dismiss_with('dislike')", "Dislike"),
    ]

    def __init__(self, rec: Recommendation, item: Item | None, liked: bool) -> None:
        super().__init__(id="details-screen")
        self.rec = rec
        self.item = item
        self.liked = liked

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="details-box"):
            yield Static(details_text(self.rec, self.item, self.liked), id="details-body")

    def action_dismiss_with(self, result: str | None) -> None:
        self.dismiss(result)
