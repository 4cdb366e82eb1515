"""The profile panel: the user's history per scene, this session's likes and dislikes, the transferred
text profile when an LLM wrote one."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from ...agent.conversation import ProfileView
from ...text_safety import printable

TITLE_CHARS = 40  # one line in a panel of about 46 columns


def profile_text(view: ProfileView, text_profile: str | None, per_scene: int) -> Text:
    text = Text()
    text.append("Profile of ", style="bold")
    text.append(printable(view.user_id, 40), style="bold cyan")
    text.append(f"\nrecommending in {view.scene}\n", style="dim")
    if text_profile:
        text.append("\nTransferred profile\n", style="bold")
        text.append(printable(text_profile, 300) + "\n", style="italic")
    for scene in sorted(view.history):
        entries = view.history[scene]
        text.append(f"\n{scene} ({len(entries)})\n", style="bold")
        shown = entries[-per_scene:]
        if len(entries) > len(shown):
            text.append(f"  … {len(entries) - len(shown)} older\n", style="dim")
        for entry in shown:
            text.append(f"  • {printable(entry.title, TITLE_CHARS)}\n")
    if view.liked:
        text.append(f"\nLiked this session ({len(view.liked)})\n", style="bold magenta")
        for entry in view.liked:
            text.append(f"  ♥ {printable(entry.title, TITLE_CHARS)} ", style="magenta")
            text.append(f"({entry.scene})\n", style="dim")
    if view.disliked:
        text.append(f"\nHidden this session ({len(view.disliked)})\n", style="bold")
        for title in view.disliked:
            text.append(f"  ✕ {printable(title, TITLE_CHARS)}\n", style="dim")
    if view.anchor:
        text.append("\nMore like ", style="bold")
        text.append(f"«{printable(view.anchor, 60)}»\n")
    if view.constraints:
        text.append("\nWishes\n", style="bold")
        for wish in view.constraints:
            text.append(f"  “{printable(wish, 60)}”\n")
    return text


class ProfilePanel(VerticalScroll):
    """Who the recommendations are for, and what they are built from."""

    def __init__(self, per_scene: int = 8, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.per_scene = per_scene
        self.view: ProfileView | None = None
        self.text_profile: str | None = None

    def compose(self):
        yield Static("Loading…", id="profile-body")

    def show(self, view: ProfileView, text_profile: str | None = None) -> None:
        self.view = view
        if text_profile is not None:
            self.text_profile = text_profile
        self.query_one("#profile-body", Static).update(profile_text(view, self.text_profile, self.per_scene))
