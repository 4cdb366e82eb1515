"""Every path scenerec reads or writes, in one place."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "scenerec"


def default_data_dir() -> Path:
    """Per-user data directory used when no --data-dir is given."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_config_file() -> Path:
    """Per-user TOML config file, read when it exists."""
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def demo_catalog_dir() -> Path:
    """The demo catalog shipped inside the package."""
    return Path(__file__).parent / "catalog" / "demo"


class DataPaths:
    """The layout of one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    @property
    def catalog_db(self) -> Path:
        """SQLite: items, interactions, manifest. The source of truth chroma is rebuilt from."""
        return self.root / "catalog.sqlite"

    @property
    def embedding_cache_db(self) -> Path:
        """SQLite: vectors keyed by (model, content hash)."""
        return self.root / "embeddings.sqlite"

    @property
    def chroma_dir(self) -> Path:
        return self.root / "chroma"

    @property
    def lexical_dir(self) -> Path:
        return self.root / "bm25"

    @property
    def sessions_db(self) -> Path:
        return self.root / "sessions.sqlite"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def ensure(self) -> None:
        """Create the directory, failing with a clear message when it cannot be written."""
        from .errors import StoreError

        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {self.root}: {exc.strerror}") from exc
        if not self.root.is_dir():
            raise StoreError(f"data directory {self.root} is not a directory")
