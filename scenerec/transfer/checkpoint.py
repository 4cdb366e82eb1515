"""Versioned transfer-model checkpoints: an atomic write, and a load that explains what is wrong.

A checkpoint holds the weights and what they depend on: the format version, the embedding model and
dimension the item vectors came from, the scenes, the item vocabulary of the per-item tables, the
config, and the training metrics. The frozen item vectors are not stored: they are the data
directory's, which is why the embedding model and dimension must match.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from ..errors import ScenerecError
from ..paths import DataPaths
from ..settings import TransferSettings
from .memory import CooccurrenceMemory, TextNeighbours, TransitionMemory
from .model import TransferModel

FORMAT = "scenerec-transfer"
FORMAT_VERSION = 2
FILE_NAME = "transfer.pt"


class CheckpointError(ScenerecError):
    """A transfer checkpoint cannot be used: unreadable, another format version, or trained on
    other item vectors. Callers that can do without it fall back to the mean profile."""


def checkpoint_path(data_dir: Path | str) -> Path:
    """Where the transfer checkpoint of a data directory lives."""
    return DataPaths(Path(data_dir)).checkpoints_dir / FILE_NAME


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scenerec")
    except PackageNotFoundError:
        return "unknown"


def save_checkpoint(
    path: Path,
    model: TransferModel,
    *,
    embedding_model: str,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically (a temporary file in the same folder, then a rename)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scenerec_version": _package_version(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "embedding_model": embedding_model,
        "dim": model.dim,
        "scenes": list(model.scenes),
        "vocabulary": list(model.vocabulary),
        "config": model.settings.model_dump(mode="json"),
        "metrics": metrics or {},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "cooccurrence": model.cooc.state(),
        "text_neighbours": model.text.state() if model.text is not None else None,
        "transitions": model.transitions.state(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            torch.save(payload, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The raw checkpoint dict (tensors and plain values only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no transfer checkpoint at {path}: run `scenerec train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"transfer checkpoint {path} is unreadable (truncated or corrupt: {exc}); run `scenerec train` again"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a scenerec transfer checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"transfer checkpoint {path} has format version {version}; this scenerec reads version "
            f"{FORMAT_VERSION}: run `scenerec train` again"
        )
    return payload


def load_checkpoint(
    path: Path,
    *,
    embedding_model: str | None = None,
    dim: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[TransferModel, dict[str, Any]]:
    """The model of a checkpoint and its metadata (everything but the weights).

    Raises CheckpointError when the file is unreadable, of another format version, or was trained on
    vectors of another embedding model or dimension than the ones given.
    """
    payload = read_checkpoint(path)
    if embedding_model is not None and payload.get("embedding_model") != embedding_model:
        raise CheckpointError(
            f"transfer checkpoint {path} was trained on '{payload.get('embedding_model')}' vectors, but this "
            f"data directory holds '{embedding_model}' vectors: run `scenerec train` again"
        )
    if dim is not None and payload.get("dim") != dim:
        raise CheckpointError(
            f"transfer checkpoint {path} expects {payload.get('dim')}-dimensional item vectors, but this data "
            f"directory holds {dim}-dimensional ones: run `scenerec train` again"
        )
    try:
        settings = TransferSettings.model_validate(payload["config"])
        model = TransferModel(
            settings, int(payload["dim"]), list(payload["scenes"]), list(payload["vocabulary"])
        )
        model.load_state_dict(payload["state_dict"], strict=True)
        model.cooc = CooccurrenceMemory.from_state(payload["cooccurrence"])
        text = payload.get("text_neighbours")
        model.text = TextNeighbours.from_state(text) if text is not None else None
        transitions = payload.get("transitions")  # absent before the transition memory: none
        if transitions is not None:
            model.transitions = TransitionMemory.from_state(transitions)
        if model.cooc.size != len(model.vocabulary) + 1 or model.transitions.size != len(model.vocabulary) + 1:
            raise ValueError("the co-occurrence or transition memory does not match the vocabulary")
    except (KeyError, TypeError, ValueError, RuntimeError, ValidationError) as exc:
        raise CheckpointError(f"transfer checkpoint {path} does not match this model: {exc}") from exc
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "cooccurrence", "text_neighbours", "transitions")}
    return model.to(device).eval(), meta
