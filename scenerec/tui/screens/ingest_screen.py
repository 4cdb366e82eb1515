"""The first-run screen: ingest the shipped demo catalog into an empty data directory, with progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, Static

from ...errors import ScenerecError
from ...settings import Settings
from ...stores.embeddings import Encoder, make_encoder
from ...stores.ingest import IngestReport, ingest_catalog
from ...text_safety import printable

Progress = Callable[[str, int, int | None], None]  # (step, done, total)
ENCODE_BATCH = 64


class ProgressEncoder(Encoder):
    """An encoder that reports how many texts it has encoded, in small batches."""

    def __init__(self, inner: Encoder, report: Callable[[int], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.multilingual = inner.multilingual
        self.report = report
        self.done = 0

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        texts = list(texts)
        parts = []
        for start in range(0, len(texts), ENCODE_BATCH):
            parts.append(self.inner.encode(texts[start : start + ENCODE_BATCH]))
            self.done += len(parts[-1])
            self.report(self.done)
        if not parts:
            return self.inner.encode([])
        return np.concatenate(parts)


def count_items(catalog_dir: Path) -> int | None:
    items = Path(catalog_dir) / "items.jsonl"
    if not items.is_file():
        return None
    with open(items, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def ingest_with_progress(
    catalog_dir: Path, settings: Settings, progress: Progress, encoder: Encoder | None = None
) -> IngestReport:
    """`ingest_catalog` with steps and an item count reported (and no progress bars on the terminal)."""
    total = count_items(catalog_dir)
    progress("loading the embedding model", 0, total)
    encoder = encoder or make_encoder(settings.embedding)
    progress("encoding the catalog's items", 0, total)
    counting = ProgressEncoder(encoder, lambda done: progress("encoding the catalog's items", done, total))
    quiet = settings.model_copy(
        update={"embedding": settings.embedding.model_copy(update={"show_progress": False})}
    )
    report = ingest_catalog(catalog_dir, quiet, encoder=counting)
    progress("done", total or report.items, total or report.items)
    return report


class IngestScreen(Screen[IngestReport | None]):
    """Shown while the demo catalog is ingested; dismissed with the report (None when it failed)."""

    BINDINGS: ClassVar[list[BindingType]] = [("ctrl+q", "app.quit", "Quit")]

    def __init__(
        self,
        catalog_dir: Path,
        settings: Settings,
        *,
        encoder: Encoder | None = None,
        job: Callable[[Progress], IngestReport] | None = None,
    ) -> None:
        super().__init__(id="ingest-screen")
        self.catalog_dir = catalog_dir
        self.settings = settings
        self.encoder = encoder
        self.job = job or (
            lambda progress: ingest_with_progress(catalog_dir, settings, progress, self.encoder)
        )

    def compose(self) -> ComposeResult:
        with Vertical(id="ingest-box"):
            yield Static(
                Text.assemble(
                    ("First run\n", "bold"),
                    "Ingesting the demo catalog into ",
                    (printable(str(self.settings.data_dir), 80), "cyan"),
                    "\nso there is something to recommend. This happens once.",
                ),
                id="ingest-title",
            )
            yield ProgressBar(id="ingest-progress", show_eta=False)
            yield Static("starting…", id="ingest-step")
        yield Footer()

    def on_mount(self) -> None:
        self.run_job()

    def show_progress(self, step: str, done: int, total: int | None) -> None:
        self.query_one("#ingest-progress", ProgressBar).update(total=total, progress=done)
        counts = f" — {done:,} of {total:,} items" if total else ""
        self.query_one("#ingest-step", Static).update(Text(f"{step}{counts}"))

    @work(thread=True, exit_on_error=False, name="ingest")
    def run_job(self) -> None:
        def progress(step: str, done: int, total: int | None) -> None:
            self.app.call_from_thread(self.show_progress, step, done, total)

        try:
            report = self.job(progress)
        except ScenerecError as exc:
            self.app.call_from_thread(self.failed, str(exc))
            return
        self.app.call_from_thread(self.dismiss, report)

    def failed(self, message: str) -> None:
        self.query_one("#ingest-step", Static).update(
            Text(f"ingest failed: {printable(message, 300)}", style="red")
        )
        self.app.notify(printable(message, 300), title="ingest failed", severity="error", markup=False)
