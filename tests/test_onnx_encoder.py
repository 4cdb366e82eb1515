"""The onnx / onnx-int8 / openvino backends of the packaged MiniLM: exported once into the model cache,
vectors close to torch's, a separate model in the embedding cache, and int8 vectors that do not depend on
which texts share a batch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the scale extra (openvino) is not installed")

from scenerec.errors import ModelNotAvailableError
from scenerec.settings import EmbeddingSettings
from scenerec.stores.embeddings import MINILM, USE_MULTILINGUAL, cache_name, make_encoder
from scenerec.stores.sync import LazyEncoder

TEXTS = [
    "clover wonder clips red 50 pack. arts crafts sewing notions",
    "omnigrid 60mm rotary cutter",
    "sulky universal slimline storage box for thread spools and bobbins, clear plastic with a hinged lid",
    "pilot g2 retractable gel pens, fine point, black ink, 12 count",
    "a",
    "wireless bluetooth headphones with noise cancelling and a 30 hour battery life for travel and office",
]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def exported(model_cache):
    """All three backends, built from one export."""
    return {b: make_encoder(EmbeddingSettings(backend=b, cache_dir=model_cache, batch_size=4))
            for b in ("onnx", "onnx-int8", "openvino")}


def test_fp32_backends_match_torch_and_int8_stays_close(exported, encoder):
    reference = encoder.encode(TEXTS)
    for backend, floor in (("onnx", 0.99999), ("openvino", 0.99999), ("onnx-int8", 0.97)):
        vectors = exported[backend].encode(TEXTS)
        assert vectors.shape == reference.shape and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        cosines = (vectors * reference).sum(axis=1)
        assert cosines.min() >= floor, (backend, cosines)
    assert exported["onnx"].encode([]).shape == (0, 384)


def test_each_backend_is_its_own_model_in_the_cache(exported, encoder):
    names = {encoder.name, *(e.name for e in exported.values())}
    assert names == {MINILM, f"{MINILM}@onnx", f"{MINILM}@onnx-int8", f"{MINILM}@openvino"}
    for backend, made in exported.items():  # the name is known without loading the model
        assert LazyEncoder(EmbeddingSettings(backend=backend)).name == made.name
    with pytest.raises(ModelNotAvailableError, match="sentence-transformers models only"):
        cache_name(EmbeddingSettings(model=USE_MULTILINGUAL, backend="onnx"))


def test_export_happens_once(exported, model_cache):
    folders = list(model_cache.iterdir())
    assert len(folders) == 1  # one export serves all three backends, no temp folders left
    files = {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()}
    assert {"model.onnx", "model_int8.onnx", "openvino.xml", "done"} <= set(files)
    again = make_encoder(EmbeddingSettings(backend="onnx", cache_dir=model_cache))
    assert again.export_dir == folders[0]
    assert {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()} == files  # nothing rewritten


def test_int8_vectors_do_not_depend_on_batch_neighbours(exported):
    int8 = exported["onnx-int8"]
    together = int8.encode(TEXTS)
    alone = np.stack([int8.encode([t])[0] for t in TEXTS])
    mixed = int8.encode(TEXTS[3:] + TEXTS[:3])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(np.concatenate([mixed[3:], mixed[:3]]), together)
