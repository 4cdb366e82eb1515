"""Faster CPU encoders for sentence-transformers models: onnxruntime and OpenVINO, no optimum needed.

The model (by default the packaged all-MiniLM-L6-v2) is exported once with torch's ONNX exporter into
the model cache (`embedding.cache_dir`), next to an int8 copy (onnxruntime dynamic quantisation) and an
OpenVINO IR; later runs only load the files. Nothing is downloaded. Tokenising, mean pooling and
normalising are done here exactly as sentence-transformers does them, so fp32 vectors match torch's.

Dynamic int8 computes activation scales per batch, so a text's vector would depend on which texts share
its batch; the int8 backend therefore runs every text on its own (a batch of one, no padding), which
keeps a content-hash cache deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from ..errors import ModelNotAvailableError
from ..settings import EmbeddingSettings
from .embeddings import Encoder, _go_offline, _normalised, resolve_sentence_transformer

EXPORT_FORMAT = 2  # bump when the export below changes, so old exports are not reused
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_model_cache() -> Path:
    """Where exported models live when `embedding.cache_dir` is not set (shared with the LLM stage)."""
    return Path(platformdirs.user_cache_dir("scenerec", appauthor=False)) / "models"


def _fingerprint(folder: Path) -> str:
    """Changes when the source model's files change (a new package version), not when it moves."""
    h = hashlib.sha256(f"format={EXPORT_FORMAT}".encode())
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(f"{path.relative_to(folder)}:{path.stat().st_size}".encode())
    h.update((folder / "config.json").read_bytes())
    return h.hexdigest()[:16]


def _check_mean_pooling(folder: Path) -> int:
    """The max sequence length; fails for models this encoder cannot reproduce (not mean pooling)."""
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text()) if pooling.is_file() else {}
    if not config.get("pooling_mode_mean_tokens"):
        raise ModelNotAvailableError(
            f"{folder}: the onnx/openvino backends support mean-pooling models only (see 1_Pooling/config.json)"
        )
    sbert = folder / "sentence_bert_config.json"
    return int(json.loads(sbert.read_text()).get("max_seq_length", 256)) if sbert.is_file() else 256


def export_model(folder: Path, cache_dir: Path) -> Path:
    """The export folder for `folder` (model.onnx, model_int8.onnx, openvino.xml), made once, atomically."""
    target = Path(cache_dir) / f"{folder.parent.name}-{folder.name}-onnx-{_fingerprint(folder)}"
    if (target / "done").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _go_offline()
    import torch
    from transformers import AutoModel

    work = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        bert = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

        class _Positional(torch.nn.Module):  # the TorchScript exporter passes inputs by position
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert.requires_grad_(False)

            def forward(self, ids: Any, mask: Any, types: Any) -> Any:
                return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

        sample = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in _INPUTS)
        axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
        with torch.no_grad():
            torch.onnx.export(
                _Positional(), sample, str(work / "model.onnx"), input_names=list(_INPUTS),
                output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False,
            )
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # per-channel weights, matrix products only (as optimum's avx512_vnni config): int8 embeddings hurt
        quantize_dynamic(str(work / "model.onnx"), str(work / "model_int8.onnx"), weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul"])
        import openvino as ov

        ov.save_model(ov.convert_model(str(work / "model.onnx")), str(work / "openvino.xml"),
                      compress_to_fp16=False)
        (work / "done").write_text(str(folder))
        try:
            work.rename(target)
        except OSError:  # another process finished the same export first: use theirs
            if not (target / "done").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


class _ExportedEncoder(Encoder):
    """Tokenise with `tokenizers`, run a backend on (ids, mask, types), mean-pool, normalise."""

    suffix = ""
    one_text_per_run = False

    def __init__(self, settings: EmbeddingSettings) -> None:
        base_name, self.folder = resolve_sentence_transformer(settings.model)
        self.name = f"{base_name}@{self.suffix}"
        self.batch_size = settings.batch_size
        self.threads = settings.threads or os.cpu_count() or 1
        max_length = _check_mean_pooling(self.folder)
        try:
            import onnxruntime  # noqa: F401  (the export needs it for every backend)
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelNotAvailableError(
                f"embedding.backend={self.suffix!r} needs the scale extra: pip install 'scenerec[scale]'"
            ) from exc
        self.export_dir = export_model(self.folder, settings.cache_dir or default_model_cache())
        self._tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        # the packaged tokenizer.json pads to a fixed 128 tokens; pad per batch instead, as ST does
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        config = json.loads((self.folder / "config.json").read_text())
        self.dimension = int(config["hidden_size"])
        self._load()

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(texts), width), dtype=np.int64) for name in _INPUTS}
        for row, e in enumerate(encodings):
            n = len(e.ids)
            feeds["input_ids"][row, :n] = e.ids
            feeds["attention_mask"][row, :n] = e.attention_mask
            feeds["token_type_ids"][row, :n] = e.type_ids
        hidden = self._run(feeds)
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return _normalised(pooled)

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        step = 1 if self.one_text_per_run else self.batch_size
        starts = range(0, len(texts), step)
        if show_progress and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encoding with {self.name}", unit="batch")
        for start in starts:
            rows = order[start : start + step]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out


class OnnxEncoder(_ExportedEncoder):
    """onnxruntime on the exported fp32 graph: the same vectors as torch (cosine 1.0), faster on CPU."""

    suffix = "onnx"
    file_name = "model.onnx"

    def _load(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # the first provider listed may be Azure's; scenerec runs on the CPU here
        self._session: Any = ort.InferenceSession(
            str(self.export_dir / self.file_name), options, providers=["CPUExecutionProvider"]
        )

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(["last_hidden_state"], feeds)[0]


class OnnxInt8Encoder(OnnxEncoder):
    """onnxruntime on the dynamically quantised int8 graph; one text per run so vectors are reproducible."""

    suffix = "onnx-int8"
    file_name = "model_int8.onnx"
    one_text_per_run = True


class OpenVinoEncoder(_ExportedEncoder):
    """OpenVINO runtime on the exported fp32 IR (fastest exact backend measured on CPU)."""

    suffix = "openvino"

    def _load(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelNotAvailableError("embedding.backend='openvino' needs: pip install 'scenerec[scale]'") from exc
        core = ov.Core()
        self._compiled: Any = core.compile_model(
            str(self.export_dir / "openvino.xml"), "CPU", {"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": "f32"}
        )

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self._compiled(feeds)
        return np.asarray(result[self._compiled.output(0)])
