"""Command-palette provider: pick another user (Ctrl+P, then type "user" or an id)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from ..text_safety import printable

if TYPE_CHECKING:
    from .app import ScenerecApp

DISCOVER = 20  # users listed before anything is typed


class UserCommands(Provider):
    """One command per known user: "Pick user tr12", with their history size per scene as help."""

    @property
    def _app(self) -> ScenerecApp:
        return self.app  # type: ignore[return-value]

    async def discover(self) -> Hits:
        for user_id, summary in self._app.user_choices[:DISCOVER]:
            yield DiscoveryHit(
                f"Pick user {printable(user_id, 40)}", partial(self._app.pick_user, user_id), help=summary
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for user_id, summary in self._app.user_choices:
            command = f"Pick user {printable(user_id, 40)}"
            score = matcher.match(command)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(command), partial(self._app.pick_user, user_id), help=summary
                )
