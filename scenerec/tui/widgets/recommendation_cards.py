"""The recommendation pane: one card per recommended item, and the keys that act on the highlighted one."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import ClassVar, Literal

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Label, ListItem, ListView, Static

from ...models import Recommendation
from ...recommend.scores import top_share
from ...text_safety import printable

CardAction = Literal["like", "dislike", "more_like", "why", "details"]


def card_text(rank: int, rec: Recommendation, liked: bool) -> Text:
    """A card as plain Text (never markup): title, scene and score, explanation, evidence."""
    text = Text()
    text.append(f"{rank}. ", style="bold")
    text.append(printable(rec.title, 120), style="bold")
    if liked:
        text.append("  ♥ liked", style="bold magenta")
    text.append(f"\n{rec.scene} · score {rec.score:.4f} ({top_share(rec.score)} for you)", style="dim")
    if rec.source == "popular":
        text.append(" · popular", style="dim")
    if rec.explanation:
        text.append("\n" + printable(rec.explanation, 300), style="italic")
    if rec.evidence and not (rec.explanation and rec.evidence[0].title[:24] in rec.explanation):
        # a sentence that does not name the evidence: name it (the templates already do)
        because = "; ".join(f"«{printable(e.title, 50)}» in {e.scene}" for e in rec.evidence)
        text.append(f"\nbecause you liked {because}", style="dim")
    return text


class RecommendationCard(ListItem):
    """One recommended item."""

    def __init__(self, rank: int, rec: Recommendation, liked: bool = False) -> None:
        super().__init__(classes="card")
        self.rank = rank
        self.recommendation = rec
        self.liked = liked

    def compose(self):
        yield Static(card_text(self.rank, self.recommendation, self.liked), classes="card-body")

    def set_liked(self, liked: bool) -> None:
        self.liked = liked
        self.query_one(".card-body", Static).update(card_text(self.rank, self.recommendation, liked))


class RecommendationCards(ListView):
    """The current list. Keys: up/down or j/k move, l like, d dislike, m more like this, w why, Enter details."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("l", "card('like')", "Like"),
        Binding("d", "card('dislike')", "Dislike"),
        Binding("m", "card('more_like')", "More like this"),
        Binding("w", "card('why')", "Why"),
        Binding("enter", "card('details')", "Details"),
    ]

    class Chosen(Message):
        """A key was pressed on a card."""

        def __init__(self, action: CardAction, recommendation: Recommendation) -> None:
            super().__init__()
            self.action = action
            self.recommendation = recommendation

    def show(self, recommendations: Sequence[Recommendation], liked: Collection[str] = ()) -> None:
        """Replace the cards (the cursor stays on the same rank where it can)."""
        index = self.index or 0
        self.clear()
        if not recommendations:
            self.append(
                ListItem(
                    Label("No recommendations here. Ask for something else, or another scene."),
                    classes="empty",
                    disabled=True,
                )
            )
            return
        self.extend(
            RecommendationCard(r, rec, rec.item_id in liked) for r, rec in enumerate(recommendations, 1)
        )
        self.index = min(index, len(recommendations) - 1)

    def mark_liked(self, liked: Collection[str]) -> None:
        for card in self.query(RecommendationCard):
            if card.liked != (card.recommendation.item_id in liked):
                card.set_liked(card.recommendation.item_id in liked)

    @property
    def current(self) -> Recommendation | None:
        item = self.highlighted_child
        return item.recommendation if isinstance(item, RecommendationCard) else None

    def action_card(self, action: CardAction) -> None:
        if self.current is not None:
            self.post_message(self.Chosen(action, self.current))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        # Enter is bound above; a click selects too, which opens the details
        event.stop()
        if isinstance(event.item, RecommendationCard):
            self.post_message(self.Chosen("details", event.item.recommendation))
