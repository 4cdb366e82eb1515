"""Command-palette provider: pick another user (Ctrl+P, then type "user" or an id)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol

from textual.command import DiscoveryHit, Hit, Hits, Provider

from ..text_safety import printable

DISCOVER = 20  # users listed before anything is typed


class PicksUsers(Protocol):
    """What the provider needs of the app: the users to offer and how to switch to one."""

    user_choices: Sequence[tuple[str, str]]

    def pick_user(self, user_id: str) -> None: ...


class UserCommands(Provider):
    """One command per known user: "Pick user tr12", with their history size per scene as help."""

    @property
    def _app(self) -> PicksUsers:
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
