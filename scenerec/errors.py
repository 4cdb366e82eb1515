"""The exceptions scenerec raises; the CLI and TUI translate them into one-line messages."""

from __future__ import annotations

from pathlib import Path


class ScenerecError(Exception):
    """Base of every error scenerec reports to a user."""


class CatalogError(ScenerecError):
    """A catalog file is malformed; names the file, the line (1-based) and the field."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = str(self.path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")


class StoreError(ScenerecError):
    """The data directory or one of its stores cannot be used."""


class ModelNotAvailableError(ScenerecError):
    """A model is not installed locally; scenerec never downloads models at run time."""


class UnknownUserError(ScenerecError):
    """The user id is not in the profile store."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        super().__init__(f"unknown user '{user_id}' (run `scenerec users` to list known users)")


class UnknownSceneError(ScenerecError):
    """The scene is not in the catalog."""

    def __init__(self, scene: str, known: list[str]) -> None:
        self.scene = scene
        self.known = known
        shown = ", ".join(known) if known else "none: ingest a catalog first"
        super().__init__(f"unknown scene '{scene}' (known scenes: {shown})")


class BackendError(ScenerecError):
    """An LLM backend failed or is not installed."""
