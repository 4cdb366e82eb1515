"""Scene tabs along the top: one tab per scene; choosing one asks for that scene's list."""

from __future__ import annotations

from collections.abc import Sequence

from textual.message import Message
from textual.widgets import Tab, Tabs


def tab_id(scene: str) -> str:
    return f"scene-{scene}"  # scene names are [a-z0-9_-], valid in ids


class SceneTabs(Tabs):
    """The catalog's scenes; the active tab is the scene being recommended for."""

    class SceneChosen(Message):
        """The person picked a scene by its tab (not sent when the app moves the tab itself)."""

        def __init__(self, scene: str) -> None:
            super().__init__()
            self.scene = scene

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.scene: str | None = None  # the scene the app is showing
        self._loading = False

    async def set_scenes(self, scenes: Sequence[str], active: str) -> None:
        self._loading = True  # adding tabs activates the first one: not a choice
        try:
            await self.clear()
            for scene in scenes:
                await self.add_tab(Tab(scene, id=tab_id(scene)))
            self.follow(active)
        finally:
            self._loading = False

    def follow(self, scene: str) -> None:
        """Show `scene` as active without asking for it."""
        self.scene = scene
        if self.active != tab_id(scene):
            self.active = tab_id(scene)

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        # activations are messages handled later: one that is no longer the active tab is stale (adding
        # tabs activates the first), and one for the scene already shown is the app following a reply
        if (
            self._loading
            or event.tab is None
            or event.tab.id != self.active
            or event.tab.id == tab_id(self.scene or "")
        ):
            return
        self.post_message(self.SceneChosen(event.tab.id.removeprefix("scene-")))
