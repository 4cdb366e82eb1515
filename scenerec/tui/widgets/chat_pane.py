"""The chat pane: the conversation so far, the input line, and a spinner while the agent works."""

from __future__ import annotations

from rich.text import Text
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, LoadingIndicator, RichLog

from ...text_safety import printable

SHOWN_MESSAGE_CHARS = 600  # a 20,000-character message is stored whole and shown cut


class ChatPane(Vertical):
    """Messages in and out. Text is added as rich Text objects: never parsed as markup."""

    class Sent(Message):
        """The person submitted a message."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def compose(self):
        yield RichLog(id="chat-log", wrap=True, markup=False, highlight=False, min_width=20)
        with Horizontal(id="chat-input-row"):
            yield Input(
                placeholder="Ask: recommend something · cheaper · why #2 · show me office", id="chat-input"
            )
            yield LoadingIndicator(id="chat-spinner")

    def on_mount(self) -> None:
        self.busy(False)

    @property
    def input(self) -> Input:
        return self.query_one("#chat-input", Input)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        event.input.clear()
        if text.strip():
            self.post_message(self.Sent(text))

    def busy(self, busy: bool) -> None:
        self.query_one("#chat-spinner", LoadingIndicator).display = busy

    def _write(self, text: Text) -> None:
        self.query_one("#chat-log", RichLog).write(text)

    def add_user(self, message: str) -> None:
        text = Text("you  ", style="bold cyan")
        text.append(printable(message, SHOWN_MESSAGE_CHARS))
        self._write(text)

    def add_agent(self, message: str, note: str = "") -> None:
        text = Text("agent ", style="bold green")
        text.append(printable_lines(message))
        if note:
            text.append(f"  ({note})", style="dim")
        self._write(text)

    def add_status(self, message: str) -> None:
        self._write(Text(printable(message, 300), style="dim italic"))

    def add_error(self, message: str) -> None:
        text = Text("error ", style="bold red")
        text.append(printable(message, 500))
        self._write(text)


def printable_lines(message: str) -> str:
    """`printable` per line: the agent's own line breaks stay, everything else is made safe."""
    return "\n      ".join(printable(line, 500) for line in message.splitlines() or [""])
